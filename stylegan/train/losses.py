"""StyleGAN2 losses, one entry point per training phase: Gmain (non-saturating logistic loss, style mixing), Greg
(path-length regularisation), Dmain (logistic loss on fakes and reals), Dreg (lazy R1 on reals) and Dboth (the two
D losses in one step, when R1 is not lazy). StyleGAN (2018)'s FFHQ losses are Gmain and Dboth.

Each phase yields the losses to backpropagate for one minibatch round, each with its statistics by name; the trainer
backpropagates each before it asks for the next, so that the D phases' fakes are differentiated, and their
activations freed, before the reals' forward pass (as NVIDIA's Dgen, then Dreal). It multiplies lazily applied
regularisers by their interval (the official `gain`). Numbers match stylegan2-ada-pytorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.train.augment import AugmentPipe

Stats = dict[str, torch.Tensor]
Terms = Iterator[tuple[torch.Tensor, Stats]]


@dataclass
class LossConfig:
    r1_gamma: float = 1.0
    pl_weight: float = 2.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9


def mixed_ws(G: Generator, z: torch.Tensor, c: torch.Tensor, style_mixing: float, update_emas: bool = False,
             mixing_layers: int | None = None) -> torch.Tensor:
    """The ws of `z` with style mixing: with probability `style_mixing` the layers from a random cutoff on take the
    ws of a second latent (one cutoff per batch, as the official code), the cutoff below `mixing_layers` (default:
    all; StyleGAN 2018 while growing: the layers in use)."""
    ws = G.mapping(z, c, update_emas=update_emas)
    if style_mixing > 0:
        cutoff = torch.randint(1, mixing_layers or ws.shape[1], [], device=ws.device)
        cutoff = torch.where(torch.rand([], device=ws.device) < style_mixing, cutoff,
                             torch.full_like(cutoff, ws.shape[1]))
        layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
        ws2 = G.mapping(torch.randn_like(z), c)
        ws = torch.where(layer >= cutoff, ws2, ws)
    return ws


def run_G(G: Generator, z: torch.Tensor, c: torch.Tensor, style_mixing: float, update_emas: bool = False,
          mixing_layers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate with style mixing (`mixed_ws`): the images and their ws."""
    ws = mixed_ws(G, z, c, style_mixing, update_emas, mixing_layers)
    return G.synthesis(ws), ws


def augmented(D: Discriminator, augment: AugmentPipe | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """D as every phase calls it: on augmented images. One function, so that it compiles as one graph."""
    if augment is None:
        return D
    return lambda img, c: D(augment(img), c)


class StyleGAN2Loss:
    """The phases' losses. `G_main`/`D_main` may be compiled versions of `G` and `augmented(D, augment)` (same
    parameters), and `G_reg` a compiled `path_lengths`; R1 differentiates twice and always calls the eager D."""

    def __init__(self, G: Generator, D: Discriminator, augment: AugmentPipe | None, cfg: LossConfig,
                 G_main: Generator | None = None, D_main: Callable | None = None):
        self.G, self.cfg = G, cfg
        self.G_main = G_main if G_main is not None else G
        self.D_aug = augmented(D, augment)
        self.D_main = D_main if D_main is not None else self.D_aug
        self.G_reg = self.path_lengths  # or its compiled version (compile_greg)
        self.pl_mean = torch.zeros([], device=G.mapping.fc0.weight.device)
        self.mixing_layers: int | None = None  # style mixing's cutoffs lie below this layer (progressive growing)

    def running(self, phase: str) -> list[torch.Tensor]:
        """The running averages `phase` lerps in place (the trainer restores them before each minibatch round and
        sets them to the mean over rounds and ranks afterwards)."""
        return {"Greg": [self.pl_mean], "Dmain": [self.G.mapping.w_avg], "Dboth": [self.G.mapping.w_avg]}.get(phase, [])

    def __call__(self, phase: str, real: torch.Tensor, real_c: torch.Tensor, z: torch.Tensor, c: torch.Tensor
                 ) -> Terms:
        """The phase's loss terms, one at a time: backpropagate each before asking for the next."""
        return getattr(self, phase)(real, real_c, z, c)

    def Gmain(self, real, real_c, z, c) -> Terms:
        img, _ = run_G(self.G_main, z, c, self.cfg.style_mixing, mixing_layers=self.mixing_layers)
        logits = self.D_main(img, c)
        loss = F.softplus(-logits).mean()
        yield loss, {"loss_G": loss, "score_fake": logits.detach().mean()}

    def Greg(self, real, real_c, z, c) -> Terms:
        """Path length: |J_w^T y| for random image-space y should stay near its running mean (pl_mean)."""
        n = max(z.shape[0] // self.cfg.pl_batch_shrink, 1)
        lengths = self.G_reg(z[:n], c[:n])
        # As NVIDIA's: the penalty's mean is not detached, so the gradient also flows through this batch's share
        # of it (pl_decay of the mean); only the stored running mean is.
        new_mean = self.pl_mean.lerp(lengths.mean(), self.cfg.pl_decay)
        self.pl_mean.copy_(new_mean.detach())
        loss = (lengths - new_mean).square().mean() * self.cfg.pl_weight
        yield loss, {"pl_penalty": loss}

    def path_lengths(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """|J_w^T y| of each sample, y random in image space (scaled by 1/sqrt(pixels)), differentiable again.
        Eagerly the inner gradient is autograd.grad(create_graph=True). In a compiled graph (`compile_greg`) it is
        torch.func.grad, which the graph holds as forward operations: AOTAutograd cannot differentiate a graph
        twice, and the phase's backward then differentiates this one once."""
        ws = mixed_ws(self.G, z, c, self.cfg.style_mixing, mixing_layers=self.mixing_layers)

        def projected(w: torch.Tensor) -> torch.Tensor:
            img = self.G.synthesis(w)
            return (img * (torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3]))).sum()

        if torch.compiler.is_compiling():
            grads = torch.func.grad(projected)(ws)
        else:
            (grads,) = torch.autograd.grad(outputs=[projected(ws)], inputs=[ws], create_graph=True)
        return grads.square().sum(2).mean(1).sqrt()

    def Dmain(self, real, real_c, z, c) -> Terms:
        return self.D_loss(real, real_c, z, c, main=True, r1=False)

    def Dreg(self, real, real_c, z, c) -> Terms:
        return self.D_loss(real, real_c, z, c, main=False, r1=True)

    def Dboth(self, real, real_c, z, c) -> Terms:
        """Dmain + R1 in one step (r1_interval 1), as StyleGAN (2018)'s D_logistic_simplegp: one pass on the reals."""
        return self.D_loss(real, real_c, z, c, main=True, r1=True)

    def D_loss(self, real, real_c, z, c, main: bool, r1: bool) -> Terms:
        """`main`: the logistic loss on fakes, then on reals; `r1`: gamma/2 * |grad_x D(augment(x))|^2 on the reals
        (the eager D: it is differentiated twice)."""
        if main:
            with torch.no_grad():
                img, _ = run_G(self.G_main, z, c, self.cfg.style_mixing, True, self.mixing_layers)
            fake_logits = self.D_main(img, c)
            fake_loss = F.softplus(fake_logits).mean()
            scores = fake_logits.detach()
            yield fake_loss, {"score_fake": scores.mean(), "sign_fake": scores.sign().mean()}
        loss, stats = torch.zeros([], device=real.device), {}
        real = real.detach().requires_grad_(r1)
        real_logits = (self.D_aug if r1 else self.D_main)(real, real_c)
        # every D phase scores the reals, and NVIDIA's ADA heuristic averages the signs of all of them (its
        # Loss/signs/real is reported by the lazy R1 phase too)
        scores = real_logits.detach()
        stats.update(score_real=scores.mean(), real_sign=scores.sign().mean())
        if main:
            loss = F.softplus(-real_logits).mean()
            stats["loss_D"] = fake_loss.detach() + loss
        if r1:
            (grads,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real], create_graph=True)
            penalty = grads.square().sum([1, 2, 3]).mean() * (self.cfg.r1_gamma / 2)
            loss = loss + penalty
            stats["r1_penalty"] = penalty
        yield loss, stats
