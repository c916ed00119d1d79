"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 on reals, path-length regularisation, style mixing.

Each `*_loss` function returns a scalar to backpropagate for one minibatch round; the training step multiplies
lazily applied regularisers by their interval (the official `gain`). Numbers match stylegan2-ada-pytorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylegan.augment import AugmentPipe
from stylegan.networks import Discriminator, Generator


@dataclass
class LossConfig:
    r1_gamma: float = 1.0
    pl_weight: float = 2.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9


def run_G(G: Generator, z: torch.Tensor, c: torch.Tensor, style_mixing: float,
          update_emas: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate with style mixing: with probability `style_mixing` the layers from a random cutoff on take the ws
    of a second latent (one cutoff per batch, as the official code)."""
    ws = G.mapping(z, c, update_emas=update_emas)
    if style_mixing > 0:
        cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
        cutoff = torch.where(torch.rand([], device=ws.device) < style_mixing, cutoff,
                             torch.full_like(cutoff, ws.shape[1]))
        layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
        ws2 = G.mapping(torch.randn_like(z), c)
        ws = torch.where(layer >= cutoff, ws2, ws)
    return G.synthesis(ws), ws


def run_D(D: Discriminator, img: torch.Tensor, c: torch.Tensor, augment: AugmentPipe | None) -> torch.Tensor:
    if augment is not None:
        img = augment(img)
    return D(img, c)


def g_main_loss(G, D, augment, z, c, cfg: LossConfig) -> torch.Tensor:
    img, _ = run_G(G, z, c, cfg.style_mixing)
    return F.softplus(-run_D(D, img, c, augment)).mean()


def g_pl_loss(G, z, c, pl_mean: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """Path length: |J_w^T y| for random image-space y should stay near its running mean. Updates pl_mean."""
    n = max(z.shape[0] // cfg.pl_batch_shrink, 1)
    img, ws = run_G(G, z[:n], c[:n], cfg.style_mixing)
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad(outputs=[(img * noise).sum()], inputs=[ws], create_graph=True)
    lengths = grads.square().sum(2).mean(1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay)
    pl_mean.copy_(new_mean)
    return (lengths - new_mean).square().mean() * cfg.pl_weight


def d_fake_loss(G, D, augment, z, c, cfg: LossConfig) -> torch.Tensor:
    with torch.no_grad():
        img, _ = run_G(G, z, c, cfg.style_mixing, update_emas=True)
    return F.softplus(run_D(D, img, c, augment)).mean()


def d_real_loss(D, augment, real: torch.Tensor, c: torch.Tensor, cfg: LossConfig, main: bool, r1: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss on reals (main and/or R1 = gamma/2 * |grad_x D(x)|^2) and the logits' signs, for ADA."""
    real = real.detach().requires_grad_(r1)
    logits = run_D(D, real, c, augment)
    loss = F.softplus(-logits).mean() if main else logits.new_zeros([])
    if r1:
        (grads,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real], create_graph=True)
        loss = loss + grads.square().sum([1, 2, 3]).mean() * (cfg.r1_gamma / 2)
    return loss, logits.detach().sign()
