"""The augmentation's resampling: twice differentiable through our own op (what CUDA needs), exact where it must be,
and sharper than plain bilinear sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from benchmarks.augment_fidelity import BG, PERCENTILES, bilinear_1x, fidelity, grating, official_matrix
from benchmarks.saved_for_backward import LiveBytes
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.train.augment import AugmentPipe, apply_geometric, rotate2d, translate2d
from stylegan.train.losses import LossConfig, StyleGAN2Loss, augmented
from stylegan.train.resample import (
    _sample_adjoint,
    downsample2x,
    downsample_matrix,
    grid_sample,
    pad_upsample_matrix,
    upsample2x,
)
from tests.conftest import FIXTURES, tiny_discriminator_kwargs, tiny_generator_kwargs

# Nodes whose backward PyTorch's CUDA kernels lack: R1 through them passes on the CPU and fails on every GPU
# ("derivative for aten::grid_sampler_2d_backward is not implemented").
NO_CUDA_DOUBLE_BACKWARD = ("GridSampler2DBackwardBackward", "CudnnGridSamplerBackwardBackward")


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(fn.name())
        stack.extend(n for n, _ in fn.next_functions)
    return names


def test_r1_through_every_augmentation_uses_only_ops_cuda_can_differentiate_twice():
    torch.manual_seed(0)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    pipe = AugmentPipe("bgc", p=1.0)  # every transform fires for every image
    loss_fn = StyleGAN2Loss(G, D, pipe, LossConfig(r1_gamma=1.0))
    D.requires_grad_(True)
    ((r1, _),) = loss_fn("Dreg", torch.randn(4, 3, 16, 16), torch.zeros(4, 0), None, None)
    nodes = graph_nodes(r1)
    assert any("grid_sample_adjoint" in n for n in nodes), f"R1 does not go through our resampling op: {nodes}"
    assert not [n for n in nodes if n.startswith(NO_CUDA_DOUBLE_BACKWARD)], nodes
    r1.backward()
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)


def test_sampling_op_equals_grid_sample_and_its_double_backward_matches_finite_differences():
    torch.manual_seed(1)
    img = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 4, 7, 2, dtype=torch.float64) * 2.4 - 1.2  # some samples fall outside (zeros)
    assert torch.equal(grid_sample(img, grid), F.grid_sample(img, grid, align_corners=False))
    assert torch.autograd.gradcheck(lambda x: grid_sample(x, grid), (img,))
    assert torch.autograd.gradgradcheck(lambda x: grid_sample(x, grid), (img,))


def test_the_sampling_adjoint_allocates_its_result_and_no_image_for_the_kernels_unused_input():
    """R1's double backward scatters gradients back onto the 2x image (1.7 GiB at 1024x1024 in float32); the kernel
    reads its input only for the grid's gradient, which is not asked for, so nothing image-sized stands in for it."""
    img_shape = torch.Size([2, 3, 64, 64])
    grad, grid = torch.randn(2, 3, 32, 32), torch.rand(2, 32, 32, 2) * 2 - 1
    with LiveBytes() as live:
        out = _sample_adjoint(grad, grid, *img_shape[-2:])
    expected = torch.ops.aten.grid_sampler_2d_backward(grad, torch.zeros(img_shape), grid, 0, 0, False,
                                                       [True, False])[0]
    assert torch.equal(out, expected)
    image, grid_grad = 4 * img_shape.numel(), 4 * grid.numel()  # the kernel always returns the grid's gradient
    assert live.peak <= image + grid_grad + 64, live.peak

def test_whole_pipeline_double_backward_matches_finite_differences():
    pipe = AugmentPipe("bgc", p=0.8).double()
    img = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def augmented(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(3)  # the same transforms on every evaluation
        return pipe(x)

    assert torch.autograd.gradgradcheck(augmented, (img,), atol=1e-5)


def test_up_then_down_is_the_identity():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y = x @ pad_upsample_matrix(16, 0, x) @ downsample_matrix(32, x)
    assert y.shape == x.shape
    assert (y - x)[..., 3:-4].abs().max() < 1e-10
    # reflect padding gives the filters something to read beyond the ends: then the identity holds everywhere
    y = x @ pad_upsample_matrix(16, 15, x) @ downsample_matrix(2 * 46, x)
    assert (y[..., 15:31] - x).abs().max() < 1e-10


def smooth(n: int = 2, res: int = 32) -> torch.Tensor:
    torch.manual_seed(4)
    return F.interpolate(torch.randn(n, 3, res // 4, res // 4, dtype=torch.float64), size=res, mode="bicubic")


def test_integer_translation_is_exact():
    x = smooth()
    res = x.shape[-1]
    shifted = apply_geometric(x, translate2d(torch.full([2], 2 * 3 / res), torch.full([2], -2 * 2 / res)).double())
    assert (shifted - torch.roll(x, (2, -3), (2, 3)))[..., 3:-3, 4:-4].abs().max() < 1e-9


def test_every_geometric_transform_resamples_as_nvidias_pipeline():
    """NVIDIA's AugmentPipe outputs (tests/fixtures/README.md) for each transform alone and all seven composed, at
    fixed parameters: ours with the same matrix gives them to float32 rounding. Flips and quarter turns used to
    differ by up to 0.09 (our 2x alignment was the filter's centroid, NVIDIA's is a quarter pixel)."""
    ref = np.load(FIXTURES / "augment_official.npz")
    images = torch.from_numpy(ref["images"]).double()
    n, _, h, w = images.shape
    checked = set()
    for name, percentiles in PERCENTILES.items():
        for q in percentiles:
            ours = apply_geometric(images, official_matrix(name, q, n, w, h)).float()
            assert (ours - torch.from_numpy(ref[f"{name}_{q:g}"])).abs().max() < 1e-4, (name, q)
            checked.add(name)
    assert checked == {*BG, "bg"}


def test_no_transform_returns_the_images_as_they_are():
    x = smooth()
    assert (apply_geometric(x, torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)) - x).abs().max() < 1e-10
    assert (AugmentPipe("bgc", p=0.0)(x.float()) - x.float()).abs().max() < 1e-5


@pytest.mark.parametrize("freq", [0.2, 0.3])
def test_rotation_keeps_mid_frequencies_better_than_bilinear(freq):
    theta = math.radians(30)
    g = rotate2d(torch.tensor([-theta])).double()
    src, ref = grating(64, freq, 0.0), grating(64, freq, theta)
    ours, plain = fidelity(apply_geometric(src, g), ref), fidelity(bilinear_1x(src, g), ref)
    assert ours[0] > 0.9 and ours[1] < plain[1] / 2  # error 2x smaller or better (benchmarks/RESULTS.md)


def test_augmented_D_is_one_graph_with_no_host_sync():
    # A host sync (.item(), .tolist(), shapes that depend on values) would break the graph: the augmentation
    # then could not compile into D's graph, and each call would wait for the GPU (benchmarks/RESULTS.md).
    D = Discriminator(**tiny_discriminator_kwargs())
    explained = torch._dynamo.explain(augmented(D, AugmentPipe("bgc", p=0.5)))(torch.randn(4, 3, 16, 16),
                                                                              torch.zeros(4, 0))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_compiled_graphs_keep_only_the_grid_for_the_sampling_backward_and_match_eager():
    """The plain `grid_sampler_2d` in a compiled graph keeps its input, the 2x image (1.7 GiB at 1024x1024), for a
    backward that reads only the grid; our op keeps the grid alone, and AOTAutograd still caches the graph (an
    autograd function would make it bypass its cache: seconds of every warm start)."""
    torch.manual_seed(2)
    img = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 4, 7, 2, dtype=torch.float64) * 2.4 - 1.2
    saved = []

    def keep_shape(t: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(t.shape))
        return t

    torch._dynamo.reset()
    counters["aot_autograd"].clear()
    with torch.autograd.graph.saved_tensors_hooks(keep_shape, lambda t: t):
        compiled = torch.compile(grid_sample, fullgraph=True)(img, grid)
    assert saved == [tuple(grid.shape)], saved
    eager = grid_sample(img, grid)
    assert torch.equal(compiled, eager)
    weights = torch.randn_like(eager)
    (g_compiled,) = torch.autograd.grad((compiled * weights).sum(), img)
    (g_eager,) = torch.autograd.grad((eager * weights).sum(), img)
    assert torch.equal(g_compiled, g_eager)
    # Read after the backward: with static shapes AOTAutograd compiles the backward, and saves the entry, only when
    # the backward first runs. Consulted means a save, or a hit on an earlier run's entry; never a bypass.
    cache = counters["aot_autograd"]
    assert cache["autograd_cache_saved"] + cache["autograd_cache_hit"] == 1, cache
    assert not cache["autograd_cache_bypass"], cache


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 6, 10)])
def test_compiled_graphs_filter_with_slices_and_match_the_eager_matrices(shape):
    """Inside a compiled graph the 2x filters are sums of shifted slices (cheaper on the GPU than the dense matrices
    at large sizes: benchmarks/RESULTS.md); eagerly they are the matrices. Both are the same linear map."""
    torch.manual_seed(5)
    img = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    h, w = shape[-2:]
    targets = []

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> torch.fx.GraphModule:
        targets.extend(str(node.target) for node in gm.graph.nodes)
        return gm

    def filtered(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up = upsample2x(x, h - 1, w - 1)
        return up, downsample2x(up * up, 3)  # squared: the down-sampling sees a signal the up-sampling did not make

    compiled = torch.compile(filtered, backend=record, fullgraph=True)(img)
    assert targets and not any("conv" in t or "eye" in t for t in targets)  # no matrix is built
    eager = filtered(img)
    assert compiled[0].shape == eager[0].shape == (*shape[:2], 2 * (3 * h - 2), 2 * (3 * w - 2))
    assert compiled[1].shape == eager[1].shape == (*shape[:2], 3 * h - 8, 3 * w - 8)
    weights = [torch.randn_like(e) for e in eager]
    for c, e, wt in zip(compiled, eager, weights, strict=True):
        assert (c - e).abs().max() < 1e-12
        (g_compiled,) = torch.autograd.grad((c * wt).sum(), img, retain_graph=True)
        (g_eager,) = torch.autograd.grad((e * wt).sum(), img, retain_graph=True)
        assert (g_compiled - g_eager).abs().max() < 1e-12
