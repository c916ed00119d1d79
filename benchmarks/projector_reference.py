"""Our projector against NVIDIA's `projector.py`: the same network, targets and VGG16 file; loss curves and speed.

    python -m benchmarks.projector_reference --official .ref/stylegan2-ada-pytorch [--device cpu] [--steps 1000]
        [--resolution 64|256] [--vgg vgg16.pt] [--images N --batch B] [--sweep 1,8,32] [--compile] [--no-curve]
        [--workdir DIR]
A network with random weights moved off their initial values is saved as our checkpoint and exported with `python
-m jobs.convert --dest export.pkl`: at 64x64 a small float32 one, at 256x256 the ffhq256 preset's (channel base
16384, 2 mapping layers, fp16 in the top 4 resolutions, clamp 256). Targets are images of another network of the same
architecture. NVIDIA's `projector.project` runs on the export in outside programs
(benchmarks/projector_official_side.py, their checkout on the path), one image per process as their projector.py
does, and ours (`stylegan.projection.projector.project`) on the checkpoint, each from its own random numbers, so the
curves agree within the noise of the w perturbation, not step for step. Without --vgg both use a TorchScript stand-in
of NVIDIA's vgg16.pt with random weights (the same call signature, LPIPS-style rows): at 256x256 with VGG16's own
layers, so that it costs what the real file costs.

Printed: the distance at chosen steps, the pixel error of each final w's image (rendered by our network), seconds per
run. With --images N: our `jobs.project` over N target PNGs at --batch B, timed from outside as a whole job, beside
NVIDIA's images per hour (their processes above, timed from outside; on CUDA a first one-step process builds their
plugins and is not counted). --sweep times 10 steps of our projector at each batch size, after 3. --compile then
times the sweep and the job again, compiled; --no-curve leaves out our two-image curve when only speed is measured.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.export_reference import ROOT, make_checkpoint, official_env, run
from stylegan.formats.checkpoint import load_generator
from stylegan.imagefiles import save_png, to_uint8
from stylegan.metrics.vgg import VGG16, LPIPSFeatures
from stylegan.projection.projector import ProjectOptions, project

OFFICIAL_SIDE = Path(__file__).with_name("projector_official_side.py")
VGG_LAYOUTS = {  # convolution widths per block (2x2 max pooling between blocks, one LPIPS row after each)
    "small": [[32], [64], [64], [128]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
}
NETWORKS = {  # resolution: G's and D's arguments, the stand-in VGG's layout
    64: (dict(z_dim=128, c_dim=0, w_dim=128, img_resolution=64, channel_base=4096, channel_max=128, num_fp16_res=0,
              conv_clamp=None, mapping_kwargs=dict(num_layers=2)),
         dict(c_dim=0, img_resolution=64, channel_base=4096, channel_max=128, num_fp16_res=0, conv_clamp=None),
         "small"),
    256: (dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, channel_base=16384, channel_max=512,
               mapping_kwargs=dict(num_layers=2)),
          dict(c_dim=0, img_resolution=256, channel_base=16384, channel_max=512),
          "vgg16"),
}
REPORT_STEPS = [1, 10, 50, 100, 250, 500, 750, 1000]


class StandInVGG(nn.Module):
    """NVIDIA's vgg16.pt call signature with random weights: with return_lpips, each block's features normalised
    over channels at every pixel and scaled so that squared row distances average over pixels, as LPIPS does;
    otherwise pooled features of the last block (precision/recall)."""

    def __init__(self, layout: list[list[int]]):
        super().__init__()
        blocks, width = [], 3
        for i, widths in enumerate(layout):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i else []
            for out in widths:
                layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU()]
                width = out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        rows: list[torch.Tensor] = []
        for block in self.blocks:
            x = block(x)
            f = x / (x.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
            rows.append(f.flatten(1) / (f.shape[2] * f.shape[3]) ** 0.5)
        if return_lpips:
            return torch.cat(rows, dim=1)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def save_stand_in_vgg(path: Path, layout: str) -> None:
    torch.manual_seed(0)
    # frozen, as NVIDIA's file is: their projector computes the target's features with gradients enabled
    torch.jit.save(torch.jit.script(StandInVGG(VGG_LAYOUTS[layout]).requires_grad_(False)), str(path))


@torch.no_grad()
def target_images(ckpt: Path, device: str, count: int) -> np.ndarray:
    """uint8 [count, 3, H, W]: seeds 1.. of another network of the same architecture, with its constant noise."""
    G = load_generator(ckpt, device)
    z = torch.from_numpy(np.concatenate([np.random.RandomState(seed).randn(1, G.z_dim) for seed in
                                         range(1, count + 1)]).astype(np.float32)).to(device)
    return np.concatenate([to_uint8(G(zb, None, noise_mode="const")).permute(0, 3, 1, 2).cpu().numpy()
                           for zb in z.split(16)])


@torch.no_grad()
def pixel_error(G: nn.Module, w: torch.Tensor, target: np.ndarray) -> float:
    """Mean squared error, in 8-bit levels, of G(w) with the network's constant noise against the target."""
    image = to_uint8(G.synthesis(w, noise_mode="const"))[0].permute(2, 0, 1).float().cpu()
    return float((image - torch.from_numpy(target).float()).square().mean())


def official_run(args: argparse.Namespace, env: dict, work: Path, seed: int, steps: int) -> dict:
    """One run of NVIDIA's projector in its own process on the first target; its wall time includes start-up."""
    start = time.perf_counter()
    run([sys.executable, str(OFFICIAL_SIDE), "--network", str(work / "export.pkl"), "--target",
         str(work / "target.npy"), "--steps", str(steps), "--dest", str(work / f"theirs{seed}.npz"),
         "--device", args.device, "--seed", str(seed)], env=env, cwd=args.official)
    return {**np.load(work / f"theirs{seed}.npz"), "wall": time.perf_counter() - start}


def ms_per_step(G: nn.Module, targets: torch.Tensor, vgg: Callable[[torch.Tensor], torch.Tensor],
                device: str, compile: bool = False) -> float:
    """Milliseconds per step of our projector on these targets: steps 4 to 13 of one call, timed from inside it,
    so that the call's set-up (copying G, the target's features) is not counted."""
    marks: list[float] = []

    def on_step(step: int, w: torch.Tensor, dist: torch.Tensor) -> None:
        if step in (2, 12):
            if device == "cuda":
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    stats = (torch.zeros(1, G.w_dim, device=device), 1.0)
    project(G, targets, [str(i) for i in range(len(targets))], vgg, ProjectOptions(num_steps=13), on_step, stats,
            compile)
    return (marks[1] - marks[0]) * 100


def sweep(G: nn.Module, target: np.ndarray, vgg: LPIPSFeatures, batches: list[int], device: str,
          compile: bool = False) -> None:
    """Milliseconds per image and step of our projector at each batch size."""
    print("| batch | ms per step | ms per image and step |\n| --- | --- | --- |")
    for batch in batches:
        ms = ms_per_step(G, torch.from_numpy(target)[None].repeat(batch, 1, 1, 1).to(device), vgg, device, compile)
        print(f"| {batch} | {ms:.1f} | {ms / batch:.2f} |", flush=True)


def job_throughput(ckpt: Path, vgg: Path, targets: np.ndarray, work: Path, args: argparse.Namespace,
                   compile: bool) -> float:
    """Images per hour of our projection job over a folder of the targets, timed from outside as a whole job."""
    folder = work / "targets"
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(targets):
        save_png(image.transpose(1, 2, 0), folder / f"target{i:05d}.png")
    shutil.rmtree(work / "projected", ignore_errors=True)
    start = time.perf_counter()
    run([sys.executable, "-m", "jobs.project", "--network", str(ckpt), "--images", str(folder), "--outdir",
         str(work / "projected"), "--vgg", str(vgg), "--steps", str(args.steps), "--batch", str(args.batch),
         "--device", args.device, *["--compile"] * compile], cwd=ROOT)
    wall = time.perf_counter() - start
    print(f"our job: {len(targets)} images at batch {args.batch}{', compiled' * compile}, {args.steps} steps: "
          f"{wall:.1f} s", flush=True)
    return len(targets) / wall * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--shims", type=Path, help="folder with pkg_resources.py (default: .ref/shims)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--resolution", type=int, choices=sorted(NETWORKS), default=64)
    parser.add_argument("--vgg", type=Path, help="NVIDIA's vgg16.pt (default: a stand-in with random weights)")
    parser.add_argument("--images", type=int, default=0, help="time our job over this many images")
    parser.add_argument("--batch", type=int, default=32, help="our job's --batch")
    parser.add_argument("--sweep", default="", help="batch sizes to time our projector at, e.g. 1,8,32")
    parser.add_argument("--compile", action="store_true", help="after the eager sweep and job, both again with "
                        "torch.compile")
    parser.add_argument("--no-curve", dest="curve", action="store_false", help="skip our two-image curve (when "
                        "only speed is measured)")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="projector-ref-"))
    work.mkdir(parents=True, exist_ok=True)
    vgg = args.vgg or work / "vgg16.pt"
    if args.vgg is None:
        save_stand_in_vgg(vgg, NETWORKS[args.resolution][2])
    # NVIDIA's projector opens its VGG16 URL through dnnlib's cache: put the file there under the cache's name
    downloads = work / "dnnlib" / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vgg, downloads / f"{hashlib.md5(VGG16.url.encode()).hexdigest()}_vgg16.pt")
    G_kwargs, D_kwargs, _ = NETWORKS[args.resolution]
    ckpt = make_checkpoint(work / "ours.pt", G_kwargs, D_kwargs)
    run([sys.executable, "-m", "jobs.convert", "--source", str(ckpt), "--dest", str(work / "export.pkl")], cwd=ROOT)
    targets = target_images(make_checkpoint(work / "other.pt", G_kwargs, D_kwargs, seed=1), args.device,
                            max(args.images, 1))
    target = targets[0]
    np.save(work / "target.npy", target)

    env = {**official_env(args.official.resolve(), (args.shims or ROOT / ".ref" / "shims").resolve()),
           "DNNLIB_CACHE_DIR": str(work / "dnnlib")}
    if args.device == "cuda":
        official_run(args, env, work, 303, steps=1)  # builds NVIDIA's CUDA plugins once
    theirs = [official_run(args, env, work, seed, args.steps) for seed in (303, 304)]  # one image's curve spread

    G = load_generator(ckpt, args.device)
    lpips = LPIPSFeatures(vgg, torch.device(args.device))
    which = f"file {args.vgg}" if args.vgg else "stand-in (random weights)"
    print(f"{args.device}, {args.steps} steps, {args.resolution}x{args.resolution} network, VGG16 {which}")
    if args.curve:
        curves(G, target, lpips, theirs, args)
    walls = [t["wall"] for t in theirs]
    print(f"NVIDIA's seconds per process, start-up included: {' / '.join(f'{w:.1f}' for w in walls)}", flush=True)
    nvidia = 3600 / np.mean(walls)
    for compile in [False, True][:1 + args.compile]:
        if args.sweep:
            sweep(G, target, lpips, [int(b) for b in args.sweep.split(",")], args.device, compile)
        if args.images:
            ours = job_throughput(ckpt, vgg, targets, work, args, compile)
            print(f"images per hour: NVIDIA {nvidia:.0f} (one process per image), ours {ours:.0f} (one job"
                  f"{', compiled' * compile}): {ours / nvidia:.1f}x", flush=True)


def curves(G: nn.Module, target: np.ndarray, lpips: LPIPSFeatures, theirs: list[dict],
           args: argparse.Namespace) -> None:
    """Our two projections of the target in one batch beside NVIDIA's two runs: distances and final pixel error."""
    dists: list[np.ndarray] = []
    start = time.perf_counter()
    # the target twice in one batch, under two names: two independent projections, as two of NVIDIA's runs
    ws = project(G, torch.from_numpy(target)[None].repeat(2, 1, 1, 1).to(args.device), ["target", "target-2"], lpips,
                 ProjectOptions(num_steps=args.steps), on_step=lambda step, w, d: dists.append(d.cpu().numpy()))
    seconds = time.perf_counter() - start
    print("| step | NVIDIA's projector, seeds 303 / 304 | ours, two images of one batch |\n| --- | --- | --- |")
    joined = lambda values, fmt: " / ".join(format(v, fmt) for v in values)  # noqa: E731
    for step in (s for s in REPORT_STEPS if s <= args.steps):
        print(f"| {step} | {joined([t['dist'][step - 1] for t in theirs], '.2f')} | "
              f"{joined(dists[step - 1], '.2f')} |")
    errors = [pixel_error(G, torch.from_numpy(t["w"]).to(args.device), target) for t in theirs]
    print(f"| pixel MSE of G(final w), 8-bit levels squared | {joined(errors, '.0f')} | "
          f"{joined([pixel_error(G, w[None], target) for w in ws], '.0f')} |")
    print(f"| seconds projecting | {joined([float(t['seconds']) for t in theirs], '.1f')} (one image each) | "
          f"{seconds:.1f} (both images) |", flush=True)


if __name__ == "__main__":
    main()
