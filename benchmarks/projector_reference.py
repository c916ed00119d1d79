"""Our projector against NVIDIA's `projector.py` on one image: the same network, target and VGG16 file.

    python -m benchmarks.projector_reference --official .ref/stylegan2-ada-pytorch [--device cpu] [--steps 1000]
        [--vgg vgg16.pt] [--workdir DIR]
A 64x64 float32 network with random weights moved off their initial values is saved as our checkpoint and exported
with `python -m jobs.convert --dest export.pkl`; the target is an image of the same architecture with other
weights. NVIDIA's `projector.project` runs on the export in an outside program (benchmarks/projector_official_side.py,
their checkout on the path) and ours (`stylegan.projection.projector.project`) on the checkpoint, each from its own
random numbers, so the curves agree within the noise of the w perturbation, not step for step. Without --vgg both use
a TorchScript stand-in of NVIDIA's vgg16.pt with random weights (the same call signature, LPIPS-style rows). Printed:
the distance at chosen steps, the pixel error of each final w's image (rendered by our network) and seconds taken.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.export_reference import ROOT, make_checkpoint, official_env, run
from stylegan.formats.checkpoint import load_generator
from stylegan.imagefiles import to_uint8
from stylegan.metrics.vgg import VGG16, LPIPSFeatures
from stylegan.projection.projector import ProjectOptions, project

OFFICIAL_SIDE = Path(__file__).with_name("projector_official_side.py")
G_KWARGS = dict(z_dim=128, c_dim=0, w_dim=128, img_resolution=64, channel_base=4096, channel_max=128,
                num_fp16_res=0, conv_clamp=None, mapping_kwargs=dict(num_layers=2))
D_KWARGS = dict(c_dim=0, img_resolution=64, channel_base=4096, channel_max=128, num_fp16_res=0, conv_clamp=None)
REPORT_STEPS = [1, 10, 50, 100, 250, 500, 750, 1000]


class StandInVGG(nn.Module):
    """NVIDIA's vgg16.pt call signature with random weights: with return_lpips, each layer's features normalised
    over channels at every pixel and scaled so that squared row distances average over pixels, as LPIPS does."""

    def __init__(self):
        super().__init__()
        widths = [3, 32, 64, 64, 128]
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1)
                                    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))])

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        rows: list[torch.Tensor] = []
        for conv in self.convs:
            x = F.relu(conv(x))
            f = x / (x.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
            rows.append(f.flatten(1) / (f.shape[2] * f.shape[3]) ** 0.5)
        return torch.cat(rows, dim=1)


@torch.no_grad()
def target_image(ckpt: Path, device: str) -> np.ndarray:
    """uint8 [3, H, W]: seed 1's image of another network of the same architecture, with its constant noise."""
    G = load_generator(ckpt, device)
    z = torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim).astype(np.float32)).to(device)
    return to_uint8(G(z, None, noise_mode="const"))[0].permute(2, 0, 1).cpu().numpy()


@torch.no_grad()
def pixel_error(G: nn.Module, w: torch.Tensor, target: np.ndarray) -> float:
    """Mean squared error, in 8-bit levels, of G(w) with the network's constant noise against the target."""
    image = to_uint8(G.synthesis(w, noise_mode="const"))[0].permute(2, 0, 1).float().cpu()
    return float((image - torch.from_numpy(target).float()).square().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--shims", type=Path, help="folder with pkg_resources.py (default: .ref/shims)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--vgg", type=Path, help="NVIDIA's vgg16.pt (default: a stand-in with random weights)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="projector-ref-"))
    work.mkdir(parents=True, exist_ok=True)
    vgg = args.vgg or work / "vgg16.pt"
    if args.vgg is None:
        torch.manual_seed(0)
        # frozen, as NVIDIA's file is: their projector computes the target's features with gradients enabled
        torch.jit.save(torch.jit.script(StandInVGG().requires_grad_(False)), str(vgg))
    # NVIDIA's projector opens its VGG16 URL through dnnlib's cache: put the file there under the cache's name
    downloads = work / "dnnlib" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vgg, downloads / f"{hashlib.md5(VGG16.url.encode()).hexdigest()}_vgg16.pt")
    ckpt = make_checkpoint(work / "ours.pt", G_KWARGS, D_KWARGS)
    run([sys.executable, "-m", "jobs.convert", "--source", str(ckpt), "--dest", str(work / "export.pkl")], cwd=ROOT)
    target = target_image(make_checkpoint(work / "other.pt", G_KWARGS, D_KWARGS, seed=1), args.device)
    np.save(work / "target.npy", target)

    env = official_env(args.official.resolve(), (args.shims or ROOT / ".ref" / "shims").resolve())
    theirs = []
    for seed in (303, 304):  # two runs each side: the spread of one image's curve
        run([sys.executable, str(OFFICIAL_SIDE), "--network", str(work / "export.pkl"), "--target",
             str(work / "target.npy"), "--steps", str(args.steps), "--dest", str(work / f"theirs{seed}.npz"),
             "--device", args.device, "--seed", str(seed)], env={**env, "DNNLIB_CACHE_DIR": str(work / "dnnlib")},
            cwd=args.official)
        theirs.append(dict(np.load(work / f"theirs{seed}.npz")))

    G = load_generator(ckpt, args.device)
    dists: list[np.ndarray] = []
    start = time.perf_counter()
    # the target twice in one batch, under two names: two independent projections, as two of NVIDIA's runs
    ws = project(G, torch.from_numpy(target)[None].repeat(2, 1, 1, 1).to(args.device), ["target", "target-2"],
                 LPIPSFeatures(vgg, torch.device(args.device)), ProjectOptions(num_steps=args.steps),
                 on_step=lambda step, w, d: dists.append(d.cpu().numpy()))
    seconds = time.perf_counter() - start
    which = f"file {args.vgg}" if args.vgg else "stand-in (random weights)"
    print(f"{args.device}, {args.steps} steps, 64x64 float32 network, VGG16 {which}")
    print("| step | NVIDIA's projector.py, seeds 303 / 304 | ours, two images of one batch |\n| --- | --- | --- |")
    joined = lambda values, fmt: " / ".join(format(v, fmt) for v in values)  # noqa: E731
    for step in (s for s in REPORT_STEPS if s <= args.steps):
        print(f"| {step} | {joined([t['dist'][step - 1] for t in theirs], '.2f')} | "
              f"{joined(dists[step - 1], '.2f')} |")
    errors = [pixel_error(G, torch.from_numpy(t["w"]).to(args.device), target) for t in theirs]
    print(f"| pixel MSE of G(final w), 8-bit levels squared | {joined(errors, '.0f')} | "
          f"{joined([pixel_error(G, w[None], target) for w in ws], '.0f')} |")
    print(f"| seconds | {joined([float(t['seconds']) for t in theirs], '.1f')} (one image each) | "
          f"{seconds:.1f} (both images) |")


if __name__ == "__main__":
    main()
