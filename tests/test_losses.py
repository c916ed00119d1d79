"""The loss phases as NVIDIA's StyleGAN2Loss computes them, term by term."""

from __future__ import annotations

import math

import torch
import torch._functorch.config

from stylegan.models import stylegan1
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.train.config import TrainConfig
from stylegan.train.fastpath import compiled_networks, compiled_phases
from stylegan.train.losses import LossConfig, StyleGAN2Loss, run_G
from stylegan.train.trainer import build_phases
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
    ((loss, _),) = loss_fn("Greg", None, None, z, c)
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


def test_the_compiled_path_length_phase_computes_the_eager_gradients():
    """compile_greg: the path-length phase as one compiled graph (no graph break), its inner gradient taken by
    torch.func.grad inside the graph so that AOTAutograd differentiates it once, gives the eager phase's penalty and
    gradients. aot_eager, which draws the eager random numbers (Inductor draws its own, on a GPU only here)."""
    torch.manual_seed(0)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    z, c = torch.randn(8, 16), torch.zeros(8, 0)
    params = list(G.parameters())
    cfg = TrainConfig(data="x", compile_greg=True, compile_backend="aot_eager")
    assert "Greg" in compiled_phases(cfg) and "Greg" not in compiled_phases(TrainConfig(data="x"))

    def phase(compiled: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        loss_fn = StyleGAN2Loss(G, D, None, LossConfig(style_mixing=0.9))
        if compiled:
            loss_fn.G_main, loss_fn.D_main, loss_fn.G_reg = compiled_networks(G, D, None, loss_fn.path_lengths, cfg)
            assert loss_fn.G_reg is not loss_fn.path_lengths
        torch.manual_seed(1)
        ((loss, _),) = loss_fn("Greg", None, None, z, c)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    (eager, eager_grads), (compiled, compiled_grads) = phase(compiled=False), phase(compiled=True)
    assert torch.allclose(compiled, eager, rtol=1e-5)
    for e, g in zip(eager_grads, compiled_grads, strict=True):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-5 * float(e.abs().max()))
    explained = torch._dynamo.explain(StyleGAN2Loss(G, D, None, LossConfig()).path_lengths)(z[:4], c[:4])
    assert explained.graph_count == 1 and explained.graph_break_count == 0


def test_r1_in_every_d_step_is_one_step_of_both_d_losses_as_stylegan_2018():
    """r1_interval 1 (StyleGAN 2018's D_logistic_simplegp): one D phase whose gradient is the logistic loss's plus
    R1's, stepped by an Adam without the lazy-regularisation correction (NVIDIA's lr, not half of it), and no G
    regularisation phase when pl_weight is 0."""
    torch.manual_seed(0)
    kw = dict(img_resolution=16, fmap_base=64, fmap_max=16)
    G = stylegan1.Generator(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), **kw)
    D = stylegan1.Discriminator(mbstd_group_size=2, **kw)
    loss_fn = StyleGAN2Loss(G, D, None, LossConfig(r1_gamma=10.0))
    real, z, c = torch.randn(4, 3, 16, 16), torch.randn(4, 16), torch.zeros(4, 0)
    params = list(D.parameters())

    def grad(phase: str) -> list[torch.Tensor]:
        torch.manual_seed(1)
        loss = sum(term for term, _ in loss_fn(phase, real, c, z, c))
        return torch.autograd.grad(loss, params, allow_unused=True)

    both, main, reg = grad("Dboth"), grad("Dmain"), grad("Dreg")
    for b, m, r in zip(both, main, reg, strict=True):
        expected = m + (r if r is not None else 0)
        assert torch.allclose(b, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert any(float(r.abs().max()) > 1e-3 * float(m.abs().max()) for m, r in zip(main, reg, strict=True)
               if r is not None)  # R1 really is part of it

    cfg = TrainConfig(data="x", r1_gamma=10.0, r1_interval=1, pl_weight=0.0, glr=0.001, dlr=0.001)
    phases = build_phases(cfg, G, D, frozen=[])
    assert [p.name for p in phases] == ["Gmain", "Dboth"]
    assert [p.opt.param_groups[0]["lr"] for p in phases] == [0.001, 0.001]
    lazy = build_phases(TrainConfig(data="x", r1_gamma=1.0, r1_interval=16), G, D, frozen=[])
    assert [p.name for p in lazy] == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert math.isclose(lazy[-1].opt.param_groups[0]["lr"], 0.0025 * 16 / 17)


def test_dmain_backpropagates_its_fakes_before_the_reals_forward_with_the_one_backward_gradients():
    """NVIDIA's Dgen, then Dreal: the trainer backpropagates the fakes' term before it asks for the reals' (a
    generator), so that the fakes' activations are freed before the reals' forward pass (Dmain's peak at 1024x1024
    held both: benchmarks/RESULTS.md). The gradients are those of one backward through the summed loss, bit for
    bit, and so are the statistics."""
    torch.manual_seed(0)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    loss_fn = StyleGAN2Loss(G, D, None, LossConfig())
    real, z, c = torch.randn(4, 3, 16, 16), torch.randn(4, 16), torch.zeros(4, 0)
    params = list(D.parameters())
    had_gradients = []
    D.register_forward_pre_hook(lambda *_: had_gradients.append(any(p.grad is not None for p in params)))

    def run(split: bool) -> tuple[list[torch.Tensor], list[float], dict[str, float]]:
        for p in params:
            p.grad = None
        torch.manual_seed(1)
        losses, stats = [], {}
        for loss, values in loss_fn("Dmain", real, c, z, c):
            if split:
                loss.backward()
            losses.append(loss)
            stats |= {k: float(v.detach()) for k, v in values.items()}
        if not split:
            sum(losses).backward()
        return [p.grad.clone() for p in params], [float(loss.detach()) for loss in losses], stats

    split_grads, split_losses, split_stats = run(split=True)
    assert had_gradients == [False, True]  # the reals' forward came after the fakes' backward
    joint_grads, joint_losses, joint_stats = run(split=False)
    assert had_gradients[2:] == [False, False]
    assert all(torch.equal(a, b) for a, b in zip(split_grads, joint_grads, strict=True))
    assert split_losses == joint_losses and split_stats == joint_stats
    assert set(split_stats) == {"score_fake", "sign_fake", "score_real", "real_sign", "loss_D"}
    assert math.isclose(split_stats["loss_D"], sum(split_losses), rel_tol=1e-6)  # loss_D reports both terms


def test_a_compile_memory_budget_below_one_saves_less_for_the_backward_with_the_same_gradients(monkeypatch):
    """compile_memory_budget reaches the partitioner of the compiled phases' graphs: the compiled G keeps fewer bytes
    for its backward and recomputes the rest, and its gradients are the kept graph's. aot_eager, whose partitioner is
    Inductor's."""
    monkeypatch.setattr(torch._functorch.config, "activation_memory_budget", 1.0)  # restored after the test
    torch.manual_seed(0)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    ws = torch.randn(4, G.num_ws, 16, requires_grad=True)

    def saved_bytes_and_gradient(budget: float) -> tuple[int, torch.Tensor]:
        torch._dynamo.reset()  # dynamo's guards do not look at the partitioner's settings
        cfg = TrainConfig(data="x", compile_backend="aot_eager", compile_memory_budget=budget)
        G_main, _, _ = compiled_networks(G, D, None, None, cfg)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.nbytes) or t, lambda t: t):
            img = G_main.synthesis(ws)
        (grad,) = torch.autograd.grad(img.square().sum(), ws)
        return sum(saved), grad

    (kept, kept_grad), (budgeted, budgeted_grad) = saved_bytes_and_gradient(1.0), saved_bytes_and_gradient(0.1)
    assert budgeted < 0.8 * kept, (budgeted, kept)
    assert torch.allclose(budgeted_grad, kept_grad, rtol=1e-5, atol=1e-6 * float(kept_grad.abs().max()))
    torch._dynamo.reset()
