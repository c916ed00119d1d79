"""NVIDIA's side of benchmarks/export_reference.py: run as an outside program with NVIDIA's stylegan2-ada-pytorch or
stylegan3 checkout first on the path, never imported by the project.

    python benchmarks/export_official_side.py --network EXPORT.pkl --inputs IN.npz --dest OUT.npz [--device cuda]
        [--no-tf32] [--reference-ops]
Loads the pickle with NVIDIA's `legacy.load_network_pkl` (the loader of gen_images.py, projector.py, train.py
--resume) and records, for the latents, labels and images of IN.npz, G_ema's images at psi 0.7 with stored noise,
its ws, D's logits, and the constructor arguments NVIDIA's loader gave each network. On the CPU every layer runs in
float32 (stylegan3 does so by itself; stylegan2-ada-pytorch would run its fp16 layers in float16 on the CPU). On a
GPU, `--no-tf32` turns off the TF32 convolutions PyTorch allows by default, and `--reference-ops` runs NVIDIA's
networks with their own PyTorch reference implementations of bias_act and upfirdn2d in place of their CUDA kernels
(how far NVIDIA's two implementations of one network differ).
"""

import argparse
import json

import dnnlib  # NVIDIA's, from their checkout
import legacy  # NVIDIA's, from their checkout
import numpy as np
import torch
from torch_utils.ops import bias_act, upfirdn2d  # NVIDIA's, from their checkout


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-tf32", action="store_true")
    parser.add_argument("--reference-ops", action="store_true")
    args = parser.parse_args()
    if args.reference_ops:  # their ops fall back to the reference code when the plugin reports it did not load
        bias_act._init = upfirdn2d._init = lambda: False
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with dnnlib.util.open_url(args.network) as f:
        data = legacy.load_network_pkl(f)
    device = torch.device(args.device)
    G, D = data["G_ema"].eval().to(device), data["D"].eval().to(device)
    inputs = {k: torch.from_numpy(v).to(device) for k, v in np.load(args.inputs).items()}
    c = inputs["c"] if G.c_dim else None
    ws = G.mapping(inputs["z"], c, truncation_psi=0.7)
    fp32 = dict(force_fp32=True) if device.type == "cpu" else {}
    img = G.synthesis(ws, noise_mode="const", **fp32)
    logits = D(inputs["d_input"], c, **fp32)
    kwargs = {name: json.dumps(data[name].init_kwargs, default=str) for name in ("G", "D", "G_ema")}
    np.savez(args.dest, ws=ws.cpu().numpy(), img=img.float().cpu().numpy(), d_logits=logits.float().cpu().numpy(),
             **{f"{k}_kwargs": np.frombuffer(v.encode(), np.uint8) for k, v in kwargs.items()})


if __name__ == "__main__":
    main()
