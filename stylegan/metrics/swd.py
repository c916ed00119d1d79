"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, Progressive GAN, appendix D).

Needs no network weights: it compares the distributions of local 7x7 patches at each pyramid level (from full
resolution down to 16x16) through random 1-D projections. Reported as the mean over levels, x 1e3 (lower is better).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7
PATCHES_PER_IMAGE = 128
DIRECTIONS = 512
REPEATS = 4
MIN_RES = 16
_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.outer(_GAUSS, _GAUSS).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(img: torch.Tensor) -> list[torch.Tensor]:
    """Band-pass levels, finest first; the last level is the low-pass image at 16x16 (or the input if smaller)."""
    levels = []
    while img.shape[-1] > MIN_RES:
        small = _blur(img)[:, :, ::2, ::2]
        up = torch.zeros_like(img)
        up[:, :, ::2, ::2] = small * 4
        levels.append(img - _blur(up))
        img = small
    levels.append(img)
    return levels


def patch_descriptors(images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """uint8 NCHW images -> per level [N * PATCHES_PER_IMAGE, 3 * 7 * 7] random patches (float32)."""
    img = images.to(torch.float32) / 127.5 - 1
    out = []
    for level in laplacian_pyramid(img):
        n, c, h, w = level.shape
        ys = torch.randint(0, h - PATCH + 1, (n, PATCHES_PER_IMAGE), generator=generator)
        xs = torch.randint(0, w - PATCH + 1, (n, PATCHES_PER_IMAGE), generator=generator)
        offsets = torch.arange(PATCH)
        rows = (ys[..., None] + offsets)[..., :, None].expand(-1, -1, PATCH, PATCH)
        cols = (xs[..., None] + offsets)[..., None, :].expand(-1, -1, PATCH, PATCH)
        batch = torch.arange(n)[:, None, None, None].expand_as(rows)
        patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # [n, P, 7, 7, c]
        out.append(patches.reshape(n * PATCHES_PER_IMAGE, -1).cpu())
    return out


def _normalize(desc: torch.Tensor) -> torch.Tensor:
    d = desc.reshape(len(desc), PATCH * PATCH, -1)
    d = (d - d.mean(dim=(0, 1), keepdim=True)) / d.std(dim=(0, 1), keepdim=True).clamp(min=1e-8)
    return d.reshape(len(desc), -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, seed: int = 0) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projected sets."""
    n = min(len(a), len(b))
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(REPEATS):
        dirs = torch.randn(a.shape[1], DIRECTIONS, generator=gen)
        dirs /= dirs.norm(dim=0, keepdim=True)
        # each direction's projections made contiguous first: sorting down the columns of the [n, directions]
        # product took twice as long on a CPU (the same sorted values)
        pa = torch.sort((a[:n].float() @ dirs).T.contiguous(), dim=1).values
        pb = torch.sort((b[:n].float() @ dirs).T.contiguous(), dim=1).values
        total += float((pa - pb).abs().double().mean())
    return total / REPEATS


def swd(real: list[torch.Tensor], fake: list[torch.Tensor]) -> float:
    """SWD x 1e3 averaged over pyramid levels; each level's descriptors normalised per channel, as the paper."""
    values = [sliced_wasserstein(_normalize(r), _normalize(f), seed=i) for i, (r, f) in enumerate(zip(real, fake,
                                                                                                   strict=True))]
    return float(np.mean(values) * 1e3)
