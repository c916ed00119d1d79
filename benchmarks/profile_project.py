"""Where the projector's step spends the GPU: ms per step at one batch size for the step as shipped and for
variants (cuDNN's benchmark mode, the two networks' memory layout, VGG16's precision), the generator's and VGG16's
shares, and torch.profiler's top kernels of the shipped step.

    python -m benchmarks.profile_project [--resolution 256] [--batch 64] [--rows 25]
The network and the VGG16 stand-in are benchmarks.projector_reference's (at 256x256: the ffhq256 preset's shape and
VGG16's 13 convolutions, random weights). G channels_last: its weights converted, so its convolutions' outputs
follow. Each variant's rows are checked against the shipped ones, so a variant that computes something else shows it.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.export_reference import make_checkpoint
from benchmarks.profile_train import gpu_busy
from benchmarks.projector_reference import NETWORKS, ms_per_step, save_stand_in_vgg, target_images
from stylegan.formats.checkpoint import load_generator
from stylegan.metrics.vgg import LPIPSFeatures
from stylegan.projection.projector import ProjectOptions, noise_layers, project


class VGGVariant:
    """LPIPSFeatures' call with the module's layout or precision changed."""

    def __init__(self, lpips: LPIPSFeatures, channels_last: bool = False, bf16: bool = False):
        self.module, self.channels_last, self.bf16 = lpips.module, channels_last, bf16
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            return self.module(images, resize_images=False, return_lpips=True).float()


def event_ms(fn: Callable[[], None], repeats: int = 10) -> float:
    """Median ms of fn() by CUDA events, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def components(G: torch.nn.Module, vgg: Callable, batch: int) -> tuple[float, float]:
    """ms of G's synthesis forward and backward (to w and per-image noise maps, as the projector's) and of VGG16's
    forward and backward to its input."""
    device = torch.device("cuda")
    ws = torch.randn(batch, G.num_ws, G.w_dim, device=device, requires_grad=True)
    G = G.eval().requires_grad_(False)
    for m in noise_layers(G):
        m.noise_const = torch.randn(batch, 1, *m.noise_const.shape[-2:], device=device, requires_grad=True)
    images = (torch.rand(batch, 3, G.img_resolution, G.img_resolution, device=device) * 255).requires_grad_(True)
    with torch.no_grad():
        target = vgg(images.detach().flip(0))
    g_ms = event_ms(lambda: G.synthesis(ws, noise_mode="const").float().square().mean().backward())
    v_ms = event_ms(lambda: (vgg(images) - target).square().sum().backward())
    return g_ms, v_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, choices=sorted(NETWORKS), default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    device = torch.device("cuda")
    work = Path(tempfile.mkdtemp(prefix="profile-project-"))
    G_kwargs, D_kwargs, layout = NETWORKS[args.resolution]
    save_stand_in_vgg(work / "vgg16.pt", layout)
    ckpt = make_checkpoint(work / "ours.pt", G_kwargs, D_kwargs)
    target = torch.from_numpy(target_images(make_checkpoint(work / "other.pt", G_kwargs, D_kwargs, seed=1), "cuda",
                                            1)[0])
    targets = target[None].repeat(args.batch, 1, 1, 1).to(device)
    lpips = LPIPSFeatures(work / "vgg16.pt", device)
    last = VGGVariant(lpips, channels_last=True)
    variants = {  # name: (cudnn.benchmark, G channels_last, VGG16)
        "as shipped": (None, False, lpips),
        "cudnn.benchmark": (True, False, lpips),
        "cudnn.benchmark, VGG16 channels_last": (True, False, last),
        "cudnn.benchmark, G channels_last": (True, True, lpips),
        "cudnn.benchmark, G and VGG16 channels_last": (True, True, last),
        "cudnn.benchmark, VGG16 bf16 autocast": (True, False, VGGVariant(lpips, bf16=True)),
        "cudnn.benchmark, VGG16 channels_last + bf16": (True, False, VGGVariant(lpips, channels_last=True, bf16=True)),
    }
    shipped = torch.backends.cudnn.benchmark

    def generator(channels_last: bool) -> torch.nn.Module:
        G = load_generator(ckpt, "cuda")
        return G.to(memory_format=torch.channels_last) if channels_last else G

    probe = targets.float()[:4]
    with torch.no_grad():
        reference = lpips(probe)
    print(f"| {args.resolution}x{args.resolution}, batch {args.batch} | ms per step | ms per image and step | "
          "G fwd+bwd ms | VGG16 fwd+bwd ms | VGG16 rows vs shipped, rel. error |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for name, (benchmark, g_channels_last, vgg) in variants.items():
        torch.backends.cudnn.benchmark = shipped if benchmark is None else benchmark
        ms = ms_per_step(generator(g_channels_last), targets, vgg, "cuda")
        g_ms, v_ms = components(generator(g_channels_last), vgg, args.batch)
        with torch.no_grad():
            error = float((vgg(probe) - reference).norm() / reference.norm())
        print(f"| {name} | {ms:.1f} | {ms / args.batch:.2f} | {g_ms:.1f} | {v_ms:.1f} | {error:.1e} |", flush=True)

    torch.backends.cudnn.benchmark = shipped
    G = generator(False)
    stats = (torch.zeros(1, G.w_dim, device=device), 1.0)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        project(G, targets, [str(i) for i in range(args.batch)], lpips, ProjectOptions(num_steps=4), None, stats)
        torch.cuda.synchronize()
    busy, _ = gpu_busy(prof.events())
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70))
    print(f"profiled: 4 steps (set-up included), GPU busy {busy / 1000:.1f} ms in all", flush=True)


if __name__ == "__main__":
    main()
