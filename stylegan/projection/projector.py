"""Project real images into W: NVIDIA's projector (stylegan2-ada-pytorch `projector.py`), many images at a time.

Per image, as NVIDIA's: one w (start: the mean w of 10,000 latents) and the generator's constant noise maps (start:
Gaussian) are optimised with Adam to bring the generated image's LPIPS features (their VGG16) to the target's. The
learning rate ramps up over the first 5% of the steps and down over the last 25% (cosine); w gets Gaussian noise
of 0.05 x the ws' spread, fading out by 75% of the steps; a regulariser (weight 1e5) keeps each noise map free of
correlations between neighbours at every scale, and the maps are renormalised after each step.

A batch of images is B independent problems: each has its own w and noise maps, and its own random numbers (drawn
from a generator seeded by `seed` and the image's name), and Adam works elementwise, so an image's result does not
depend on the batch it is in, nor on the array task that projects it.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stylegan.generate import compile_synthesis
from stylegan.metrics.vgg import LPIPSFeatures, to_vgg_input


@dataclass(frozen=True)
class ProjectOptions:
    """NVIDIA's projector defaults."""
    num_steps: int = 1000
    w_avg_samples: int = 10000
    initial_learning_rate: float = 0.1
    initial_noise_factor: float = 0.05
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    seed: int = 303


@torch.no_grad()
def w_stats(G: nn.Module, samples: int, device: torch.device) -> tuple[torch.Tensor, float]:
    """The mean w [1, w_dim] of `samples` latents (RandomState(123), as NVIDIA's) and the ws' spread: the root of
    their mean squared distance from it."""
    z = torch.from_numpy(np.random.RandomState(123).randn(samples, G.z_dim).astype(np.float32)).to(device)
    c = torch.zeros(samples, G.c_dim, device=device)
    w = torch.cat([G.mapping(zb, cb if G.c_dim else None)[:, 0] for zb, cb in zip(z.split(1000), c.split(1000),
                                                                                  strict=True)]).float()
    w_avg = w.mean(dim=0, keepdim=True)
    return w_avg, float(((w - w_avg).square().sum() / samples).sqrt())


def learning_rate(t: float, opts: ProjectOptions) -> float:
    """NVIDIA's schedule at progress t in [0, 1): linear ramp up, cosine ramp down."""
    ramp = min(1.0, (1.0 - t) / opts.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return opts.initial_learning_rate * ramp * min(1.0, t / opts.lr_rampup_length)


def noise_regularizer(noises: list[torch.Tensor]) -> torch.Tensor:
    """Per image [B]: over noise maps [B, 1, H, W], the squared mean products of each map with itself shifted by one
    pixel, at every scale down to 8x8 by 2x average pooling (a map that starts smaller is taken as it is). Maps of
    one size are stacked, pooled ones with them, so each scale costs a few kernels rather than a few per map: the
    launches, not the arithmetic, bound a small batch on a GPU."""
    by_size: dict[int, list[torch.Tensor]] = defaultdict(list)
    for noise in noises:
        by_size[noise.shape[2]].append(noise)
    loss = noises[0].new_zeros(noises[0].shape[0])
    while by_size:
        size = max(by_size)
        x = torch.cat(by_size.pop(size), dim=1)
        products = (x * x.roll(1, dims=3)).mean(dim=[2, 3]).square() + (x * x.roll(1, dims=2)).mean(dim=[2, 3]).square()
        loss = loss + products.sum(dim=1)
        if size > 8:
            by_size[size // 2].append(F.avg_pool2d(x, 2))
    return loss


def noise_layers(G: nn.Module) -> list[nn.Module]:
    """The synthesis layers with a constant noise map (`noise_const`), which the projector optimises."""
    return [m for m in G.synthesis.modules() if isinstance(getattr(m, "noise_const", None), torch.Tensor)]


def image_generator(seed: int, name: str) -> torch.Generator:
    """The random numbers of one image's projection: a function of the seed and the image's name only."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def project(G: nn.Module, targets: torch.Tensor, names: list[str], vgg: LPIPSFeatures, opts: ProjectOptions,
            on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
            stats: tuple[torch.Tensor, float] | None = None, compile: bool = False) -> torch.Tensor:
    """ws [B, num_ws, w_dim] for uint8 targets [B, 3, H, W] at G's resolution, one name each (it seeds the image's
    random numbers). `on_step(step, w [B, w_dim], dist [B])` is called after every step (progress, videos);
    `stats`: w_stats(G, ...) computed once for many calls; `compile`: torch.compile G's synthesis network (forward
    and backward), once per batch size: later calls with the same batch size reuse its graphs."""
    device = targets.device
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    if compile:
        compile_synthesis(G)
    w_avg, w_std = stats or w_stats(G, opts.w_avg_samples, device)
    n = len(targets)
    gens = [image_generator(opts.seed, name) for name in names]

    def per_image(shape: tuple[int, ...]) -> torch.Tensor:
        draws = torch.cat([torch.randn((1, *shape), generator=g) for g in gens])
        # from pinned memory, so that the copy does not make the host wait for the GPU to finish the step before
        return draws.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else draws

    # each layer's constant noise becomes one Gaussian map per image ([B, 1, H, W] broadcasts where [H, W] did)
    layers = noise_layers(G)
    for layer in layers:
        layer.noise_const = per_image((1, *layer.noise_const.shape)).requires_grad_(True)
    noises = [layer.noise_const for layer in layers]
    w_opt = w_avg.detach().clone()[:, None].repeat(n, 1, 1).requires_grad_(True)  # [B, 1, w_dim]
    optimizer = torch.optim.Adam([w_opt, *noises], betas=(0.9, 0.999), lr=opts.initial_learning_rate)
    with torch.no_grad():
        target_features = vgg(to_vgg_input(targets.float()))

    for step in range(opts.num_steps):
        t = step / opts.num_steps
        noise_scale = w_std * opts.initial_noise_factor * max(0.0, 1.0 - t / opts.noise_ramp_length) ** 2
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(t, opts)
        ws = (w_opt + per_image((1, G.w_dim)) * noise_scale).repeat(1, G.num_ws, 1)
        synth = (G.synthesis(ws, noise_mode="const").float() + 1) * (255 / 2)
        dist = (target_features - vgg(to_vgg_input(synth))).square().sum(dim=1)
        reg = noise_regularizer(noises) if noises else torch.zeros_like(dist)
        optimizer.zero_grad(set_to_none=True)
        (dist + reg * opts.regularize_noise_weight).sum().backward()
        optimizer.step()
        with torch.no_grad():
            for noise in noises:
                noise -= noise.mean(dim=[1, 2, 3], keepdim=True)
                noise *= noise.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        if on_step is not None:
            on_step(step, w_opt.detach()[:, 0], dist.detach())
    return w_opt.detach().repeat(1, G.num_ws, 1)
