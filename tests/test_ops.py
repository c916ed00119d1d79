"""The fast fixed-filter resampling ops equal the general upfirdn2d reference, values and gradients, with each
filter implementation (pooling on GPUs, a depthwise convolution on CPUs, shifted slices in compiled graphs); the
modulated convolution equals the paper's per-sample weights, to the second derivative."""

import pytest
import torch

from stylegan.models import ops
from stylegan.models.ops import conv2d_resample, fir_downsample2x, fir_filter, fir_upsample2x, setup_filter
from tests import reference_ops
from tests.reference_ops import conv_transpose_then_filter, filter_then_strided_conv, upfirdn2d

F64 = torch.float64


@pytest.fixture(params=["boxes", "depthwise", "slices"])
def f(request, monkeypatch) -> torch.Tensor:
    """The filter, and the implementation the ops use in this test (whatever the device)."""
    monkeypatch.setattr(ops, "_fir", getattr(ops, f"_fir_{request.param}"))
    return setup_filter([1, 3, 3, 1]).to(F64)


@pytest.mark.parametrize("size", [4, 7, 16])
def test_resampling_equals_reference(f, size):
    x = torch.randn(2, 3, size, size, dtype=F64)
    assert torch.allclose(fir_upsample2x(x), upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4), atol=1e-12)
    if size % 2 == 0:
        assert torch.allclose(fir_downsample2x(x), upfirdn2d(x, f, down=2, padding=(1, 1, 1, 1)), atol=1e-12)
    for pad in (0, 1, 2, 4):
        assert torch.allclose(fir_filter(x, pad), upfirdn2d(x, f, padding=(pad,) * 4), atol=1e-12)


def test_resampling_convs_equal_reference(f):
    x, w = torch.randn(2, 5, 8, 8, dtype=F64), torch.randn(6, 5, 3, 3, dtype=F64)
    assert torch.allclose(conv2d_resample(x, w, up=2, padding=1), conv_transpose_then_filter(x, w, f), atol=1e-10)
    assert torch.allclose(conv2d_resample(x, w, down=2, padding=1), filter_then_strided_conv(x, w, f), atol=1e-10)


def test_double_backward_matches_reference(f):
    """R1 and path length differentiate through the resampling twice."""
    chains = {  # ours, the reference
        "up then down": (lambda t: fir_downsample2x(fir_upsample2x(t)),
                         lambda t: upfirdn2d(upfirdn2d(t, f, up=2, padding=(2, 1, 2, 1), gain=4), f, down=2,
                                             padding=(1, 1, 1, 1))),
    } | {f"filter, pad {pad}": (lambda t, pad=pad: fir_filter(t, pad),
                                 lambda t, pad=pad: upfirdn2d(t, f, padding=(pad,) * 4)) for pad in (0, 1, 2, 4)}
    for name, pair in chains.items():
        x = torch.randn(2, 3, 8, 8, dtype=F64, requires_grad=True)
        results = []
        for fn in pair:
            (g,) = torch.autograd.grad(fn(x).pow(3).sum(), x, create_graph=True)
            (gg,) = torch.autograd.grad(g.square().sum(), x)
            results.append((g.detach(), gg))
        assert torch.allclose(results[0][0], results[1][0]), name
        assert torch.allclose(results[0][1], results[1][1]), name


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_equals_per_sample_weights(f, up, fused, demodulate):
    """Values, and the path-length penalty's two derivatives (through the styles, then to weight and styles): the
    demodulation's norms are taken without forming per-sample weights, so check them against the formed ones."""
    x = torch.randn(3, 5, 8, 8, dtype=F64)
    weight = torch.randn(4, 5, 3, 3, dtype=F64, requires_grad=True)
    styles = torch.randn(3, 5, dtype=F64, requires_grad=True)
    y = torch.randn(3, 4, 8 * up, 8 * up, dtype=F64)
    results = []
    for conv in (lambda: ops.modulated_conv2d(x, weight, styles, up=up, padding=1, demodulate=demodulate, fused=fused),
                 lambda: reference_ops.modulated_conv2d(x, weight, styles, f, up=up, demodulate=demodulate)):
        out = conv()
        (g,) = torch.autograd.grad((out * y).sum(), styles, create_graph=True)
        second = torch.autograd.grad(g.square().sum(), [weight, styles], materialize_grads=True)
        results.append([out.detach(), g.detach(), *second])
    for ours, reference in zip(*results, strict=True):
        assert torch.allclose(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("image", [False, True])
def test_bias_lrelu_equals_plain_ops_to_the_third_derivative(image, clamp):
    """bias_act's lrelu keeps only its output for the backward; its values and derivatives are the plain ops',
    through two layers as R1 takes them: the gradient in the input, the penalty's gradient in the weights, and that
    one's gradient again."""
    x = torch.randn((3, 4, 5, 5) if image else (3, 4), dtype=F64, requires_grad=True)
    ws = [torch.randn((4, 4, 3, 3) if image else (4, 4), dtype=F64, requires_grad=True) for _ in range(2)]
    bs = [torch.randn(4, dtype=F64, requires_grad=True) for _ in range(2)]

    def plain(h, b):
        h = torch.nn.functional.leaky_relu(h + b.reshape([1, -1] + [1] * (h.ndim - 2)), 0.2) * 1.5
        return h if clamp is None else h.clamp(-clamp, clamp)

    results = []
    for act in (lambda h, b: ops.bias_act(h, b, "lrelu", gain=1.5, clamp=clamp), plain):
        out = x
        for w, b in zip(ws, bs, strict=True):
            out = act(torch.nn.functional.conv2d(out, w, padding=1) if image else out @ w, b)
        (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        first = torch.autograd.grad(gx.square().sum(), [*ws, *bs], create_graph=True)
        (second,) = torch.autograd.grad(first[1].square().sum() + first[3].sum(), ws[1])
        results.append([out, gx, *first, second])
    for ours, reference in zip(*results, strict=True):
        assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-12)
    if clamp is not None:
        assert (results[0][0].abs() == clamp).any() and (results[0][0].abs() < clamp).any()  # both sides seen


def test_bias_lrelu_keeps_only_its_output():
    """What the backward keeps: the output, which the next layer keeps anyway (the plain ops keep two more)."""
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = ops.bias_act(x, b, "lrelu", gain=1.5, clamp=0.7)
    assert len(saved) == 1 and saved[0].data_ptr() == out.data_ptr()
    out.sum().backward()
    assert x.grad is not None and b.grad.shape == b.shape


def test_a_compiled_filter_keeps_nothing_for_its_backward_and_computes_the_eager_values():
    """Compiled graphs filter with shifted slices: their gradient needs only shapes, so the compiled graph saves
    none of the filter's tensors (compiled pooling kept each box filter's input: 4.7 of the compiled Gmain's 11.3
    GiB at 1024x1024, benchmarks/RESULTS.md). aot_eager: Inductor's partitioner without generating kernels."""
    torch._dynamo.reset()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    saved = []
    for fn in (lambda t: fir_filter(t, 2), fir_downsample2x):
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = torch.compile(fn, backend="aot_eager", fullgraph=True)(x)
        assert not saved
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        expected = fn(x)
        assert torch.allclose(out, expected, atol=1e-6)
        assert torch.allclose(grad, torch.autograd.grad(expected.square().sum(), x)[0], atol=1e-5)
    torch._dynamo.reset()
