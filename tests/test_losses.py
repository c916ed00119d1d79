"""The loss phases as NVIDIA's StyleGAN2Loss computes them, term by term."""

from __future__ import annotations

import math

import torch

from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.train.losses import LossConfig, StyleGAN2Loss, run_G
from tests.conftest import tiny_discriminator_kwargs, tiny_generator_kwargs


def test_path_length_penalty_differentiates_through_this_batchs_share_of_the_mean():
    """NVIDIA's penalty is |lengths - lerp(pl_mean, mean(lengths), decay)|^2 with the lerp not detached: the
    gradient also flows through the batch mean. Detaching it moved Greg's gradient by about 1% in the parity
    review; here the two differ by far more than float error, so a detach cannot pass."""
    torch.manual_seed(0)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    cfg = LossConfig(pl_decay=0.3, style_mixing=0.0)
    z, c = torch.randn(8, 16), torch.zeros(8, 0)
    params = list(G.parameters())

    def grad(loss: torch.Tensor) -> list[torch.Tensor]:
        out = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out, strict=True)]

    loss_fn = StyleGAN2Loss(G, D, None, cfg)
    loss_fn.pl_mean.fill_(0.5)
    torch.manual_seed(1)
    loss, _ = loss_fn("Greg", None, None, z, c)
    ours = grad(loss)

    def reference(detach: bool) -> list[torch.Tensor]:
        torch.manual_seed(1)
        img, ws = run_G(G, z[:4], c[:4], 0.0)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        batch_mean = lengths.mean().detach() if detach else lengths.mean()
        mean = 0.5 + (batch_mean - 0.5) * cfg.pl_decay
        return grad((lengths - mean).square().mean() * cfg.pl_weight)

    def gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

    scale = max(float(g.abs().max()) for g in ours)
    assert gap(ours, reference(detach=False)) < 1e-5 * scale
    assert gap(reference(detach=False), reference(detach=True)) > 1e-3 * scale
    assert float(loss_fn.pl_mean) != 0.5 and not loss_fn.pl_mean.requires_grad
