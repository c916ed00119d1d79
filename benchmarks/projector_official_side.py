"""NVIDIA's side of benchmarks/projector_reference.py: run as an outside program with NVIDIA's stylegan2-ada-pytorch
checkout first on the path, never imported by the project.

    DNNLIB_CACHE_DIR=CACHE python benchmarks/projector_official_side.py --network EXPORT.pkl --target T.npy \
        --steps 1000 --dest OUT.npz [--device cpu] [--seed 303]
Runs their `projector.project` (seeded as their run_projection, default 303) on one target and records the distance it
prints at every step, its final w and the seconds it took. Their projector fetches vgg16.pt from NVIDIA's URL through
dnnlib's download cache: the caller places the VGG16 file to use in CACHE/downloads under the cache's name for it.
"""

import argparse
import contextlib
import io
import re
import time

import dnnlib  # NVIDIA's, from their checkout
import legacy  # NVIDIA's, from their checkout
import numpy as np
import projector  # NVIDIA's, from their checkout
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=303)
    args = parser.parse_args()
    device = torch.device(args.device)
    with dnnlib.util.open_url(args.network) as f:
        G = legacy.load_network_pkl(f)["G_ema"].requires_grad_(False).to(device)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        steps = projector.project(G, torch.from_numpy(np.load(args.target)).to(device), num_steps=args.steps,
                                  device=device, verbose=True)
    seconds = time.perf_counter() - start
    dist = [float(d) for d in re.findall(r"dist (\S+)", printed.getvalue())]
    np.savez(args.dest, dist=np.array(dist), w=steps[-1:].cpu().numpy(), seconds=seconds)


if __name__ == "__main__":
    main()
