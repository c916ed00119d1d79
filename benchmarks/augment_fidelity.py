"""How the augmentation's geometric resampling compares: with NVIDIA's pipeline, and with exact rotation.

    python -m benchmarks.augment_fidelity --official PATH [--res 64]   # against NVIDIA's AugmentPipe
    python -m benchmarks.augment_fidelity [--res 64] [--angle 30]      # detail kept, against the exact rotation
With `--official` (a stylegan3 or stylegan2-ada-pytorch checkout), NVIDIA's `training/augment.py` runs as an outside
program on the same smooth random images, each geometric transform alone at p = 1 with its `debug_percentile`
parameters, and all seven composed ('bg'); ours resamples with the matrix those parameters give (official_matrix).
Printed per transform and
percentile: the largest and the mean absolute difference (images in [-1, 1]). `--write-fixture` keeps NVIDIA's
outputs for the CPU tests (tests/fixtures/README.md).

Without it, a cosine grating per spatial frequency (cycles per pixel) is rotated by `--angle` degrees with the
pipeline's resampling (stylegan.train.augment.apply_geometric: padded 2x sym6 up, bilinear, 2x down) and with plain
bilinear sampling at 1x (reflection padding; the pipeline before 2026-11-26). Printed per frequency: the amplitude
kept (projection on the exact rotated grating; 1 = all of it) and the RMS error relative to the grating's RMS, over
the central half of the image (no border effects). CPU is enough: the arithmetic is the same on a GPU.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stylegan.train.augment import (
    ANISO_STD,
    ROTATE_MAX,
    SCALE_STD,
    XFRAC_STD,
    XINT_MAX,
    apply_geometric,
    rotate2d,
    scale2d,
    translate2d,
)

# The geometric transforms and the debug percentiles compared: each percentile gives one parameter value (xflip
# 0.75: a flip; rotate90 0.3/0.6/0.9: one, two, three quarter turns; the others both signs and sizes).
PERCENTILES = {"xflip": [0.75], "rotate90": [0.3, 0.6, 0.9], "xint": [0.2, 0.9], "scale": [0.1, 0.8],
               "rotate": [0.2, 0.65], "aniso": [0.15, 0.9], "xfrac": [0.25, 0.95], "bg": [0.3, 0.85]}
BG = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")  # 'bg': all of them, composed in this order

# Runs in NVIDIA's checkout (their code on the path, never imported by this project): their pipeline with one
# transform at p = 1 and fixed parameters, on the images in argv[1], outputs into argv[2].
_OFFICIAL_SCRIPT = """
import sys, numpy as np, torch
from training.augment import AugmentPipe
src = np.load(sys.argv[1]); x = torch.from_numpy(src['images']); out = {}
for name in src['names']:
    names = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac'] if name == 'bg' else [str(name)]
    pipe = AugmentPipe(**{k: 1 for k in names}).requires_grad_(False)
    pipe.p.copy_(torch.ones([]))
    for q in src['percentiles_' + str(name)]:
        out[f'{name}_{q:g}'] = pipe(x.clone(), debug_percentile=float(q)).numpy()
np.savez(sys.argv[2], **out)
"""


def official_matrix(name: str, q: float, n: int, width: int, height: int) -> torch.Tensor:
    """The inverse transform NVIDIA's pipeline applies for transform `name` at debug percentile `q`, as our
    normalised [n, 3, 3] matrix (their matrices are in pixels about the centre; ours in [-1, 1] units)."""
    if name == "bg":
        return functools.reduce(torch.matmul, [official_matrix(k, q, n, width, height) for k in BG])
    one = torch.ones(n, dtype=torch.float64)
    erf = torch.erfinv(torch.tensor(q * 2 - 1, dtype=torch.float64))
    if name == "xflip":
        px = scale2d(one * (1 - 2 * math.floor(q * 2)), one)
    elif name == "rotate90":
        px = rotate2d(one * (math.pi / 2 * math.floor(q * 4)))
    elif name == "xint":
        t = (q * 2 - 1) * XINT_MAX
        px = translate2d(one * -round(t * width), one * -round(t * height))
    elif name == "scale":
        px = scale2d(one / 2 ** (erf * SCALE_STD), one / 2 ** (erf * SCALE_STD))
    elif name == "rotate":  # the rotation before aniso; the debug percentile leaves the one after it at zero
        px = rotate2d(one * (q * 2 - 1) * math.pi * ROTATE_MAX)
    elif name == "aniso":
        s = 2 ** (erf * ANISO_STD)
        px = scale2d(one / s, one * s)
    elif name == "xfrac":
        t = erf * XFRAC_STD
        px = translate2d(one * -t * width, one * -t * height)
    else:
        raise ValueError(name)
    to_norm = torch.diag(torch.tensor([2 / width, 2 / height, 1], dtype=torch.float64))
    from_norm = torch.diag(torch.tensor([width / 2, height / 2, 1], dtype=torch.float64))
    return to_norm @ px.double() @ from_norm


def smooth_images(n: int, res: int, seed: int = 0) -> torch.Tensor:
    """Random images with detail at every scale up to a few pixels, in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, res // 4, res // 4, generator=gen, dtype=torch.float64) * 2 - 1
    return F.interpolate(coarse, size=res, mode="bicubic", align_corners=False).clamp(-1, 1).float()


def run_official(official: Path, images: torch.Tensor) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, images=images.numpy(), names=np.array(list(PERCENTILES)),
                 **{f"percentiles_{k}": np.array(v) for k, v in PERCENTILES.items()})
        shim = official / "shim"  # a pkg_resources stand-in for recent setuptools (official-reference.md)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(official), str(shim)])}
        subprocess.run([sys.executable, "-c", _OFFICIAL_SCRIPT, str(src), str(dst)], cwd=official, env=env,
                       check=True)
        return dict(np.load(dst))


def compare_with_official(official: Path, res: int, fixture: Path | None) -> None:
    images = smooth_images(4, res)
    theirs = run_official(official, images)
    if fixture is not None:
        np.savez(fixture, images=images.numpy(), **theirs)
        print(f"wrote {fixture}")
    print(f"NVIDIA's AugmentPipe vs ours at {res}x{res}, one transform at p = 1: |difference| max / mean")
    for name, qs in PERCENTILES.items():
        for q in qs:
            ours = apply_geometric(images.double(), official_matrix(name, q, len(images), res, res)).float()
            diff = (ours - torch.from_numpy(theirs[f"{name}_{q:g}"])).abs()
            print(f"{name:>9} {q:<5g} {float(diff.max()):.2e} / {float(diff.mean()):.2e}")


def grating(res: int, freq: float, angle: float) -> torch.Tensor:
    centre = (torch.arange(res, dtype=torch.float64) + 0.5) - res / 2
    y, x = torch.meshgrid(centre, centre, indexing="ij")
    return torch.cos(2 * math.pi * freq * (x * math.cos(angle) + y * math.sin(angle)))[None, None].repeat(1, 3, 1, 1)


def bilinear_1x(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(g[:, :2, :].to(img.dtype), list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def fidelity(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    q = ref.shape[-1] // 4
    out, ref = out[..., q:-q, q:-q], ref[..., q:-q, q:-q]
    kept = float((out * ref).sum() / (ref * ref).sum())
    return kept, float((out - ref).square().mean().sqrt() / ref.square().mean().sqrt())


def detail_kept(res: int, angle: float, freqs: list[float]) -> None:
    theta = math.radians(angle)
    # The pipeline's matrices map output to input coordinates: an image rotated by theta samples at -theta.
    g = rotate2d(torch.tensor([-theta], dtype=torch.float64)).double()
    print(f"rotation by {angle:g} degrees at {res}x{res}: amplitude kept / relative RMS error")
    print(f"{'cycles/px':>10} {'2x sym6 (ours)':>20} {'bilinear 1x':>20}")
    for freq in freqs:
        src, ref = grating(res, freq, 0.0), grating(res, freq, theta)
        ours = fidelity(apply_geometric(src, g), ref)
        plain = fidelity(bilinear_1x(src, g), ref)
        print(f"{freq:>10.2f} {ours[0]:>10.3f} / {ours[1]:<7.3f} {plain[0]:>10.3f} / {plain[1]:<7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, help="NVIDIA's stylegan3 / stylegan2-ada-pytorch checkout")
    parser.add_argument("--write-fixture", type=Path, help="with --official: save NVIDIA's outputs here")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--angle", type=float, default=30.0)
    parser.add_argument("--freqs", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])
    args = parser.parse_args()
    if args.official:
        compare_with_official(args.official, args.res, args.write_fixture)
    else:
        detail_kept(args.res, args.angle, args.freqs)


if __name__ == "__main__":
    main()
