"""Low-level StyleGAN2 operations in plain PyTorch.

Numerics follow NVIDIA's official StyleGAN2 (stylegan2-ada-pytorch): the [1,3,3,1] FIR filter normalised to sum 1,
up-sampling with gain 4, the official padding, and the same bias/activation/gain/clamp order. Nothing here
compiles a CUDA extension: the FIR filter runs as pooling and interpolation kernels, shifted slices in compiled
graphs and a depthwise convolution on CPUs (see `_fir`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps: list[float]) -> torch.Tensor:
    """Outer product of 1-D taps, normalised to sum 1: the official [4,4] `resample_filter` buffer. The networks
    keep it for state-dict compatibility; the fir_* functions below compute this filter for [1,3,3,1]."""
    total = sum(taps) ** 2
    # In Python, not torch ops: out-of-place arithmetic on the meta device, where a file's networks are built to check
    # their shapes, imports torch._dynamo for its meta kernels (about a second of every loading job's start on a CPU).
    return torch.tensor([[a * b / total for b in taps] for a in taps], dtype=torch.float32)


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias, apply 'linear' or 'lrelu', scale by gain, clamp to [-clamp, clamp]."""
    if act not in ("linear", "lrelu"):
        raise ValueError(f"unknown activation {act!r}")
    if b is not None:
        b = b.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    clamp = clamp if clamp is not None and clamp >= 0 else None
    if act == "lrelu" and b is not None and not torch.compiler.is_compiling():
        return _BiasLrelu.apply(x, b, gain, clamp)
    # Compiled graphs get the plain ops: Inductor fuses them and picks what to keep for the backward itself.
    if b is not None:
        x = x + b
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


class _BiasLrelu(torch.autograd.Function):
    """clamp(leaky_relu(x + b) * gain), keeping only its output for the backward, as NVIDIA's bias_act does:
    eagerly the composite kept the sum and the scaled values beside it, per layer, and the regularisers' double
    backward kept more. The derivative depends on the output alone, so no order of differentiation needs x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, b: torch.Tensor, gain: float, clamp: float | None) -> torch.Tensor:
        y = F.leaky_relu_(x + b, LRELU_SLOPE).mul_(gain)
        if clamp is not None:
            y.clamp_(-clamp, clamp)
        ctx.save_for_backward(y)
        ctx.gain, ctx.clamp = gain, clamp
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        grad_x = _LreluDerivative.apply(grad, y, ctx.gain, ctx.clamp)
        grad_b = None
        if ctx.needs_input_grad[1]:
            grad_b = grad_x.sum([d for d in range(grad_x.ndim) if d != 1], keepdim=True)
        return grad_x, grad_b, None, None


class _LreluDerivative(torch.autograd.Function):
    """grad -> grad * dy/dx, read from y (y > 0 where x > 0; the clamp passed what lies inside it): a diagonal
    linear map, so its backward is itself, to any order (and its derivative in y is zero wherever it exists)."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, y: torch.Tensor, gain: float, clamp: float | None) -> torch.Tensor:
        ctx.save_for_backward(y)
        ctx.gain, ctx.clamp = gain, clamp
        grad = torch.where(y > 0, grad, grad * LRELU_SLOPE) * gain
        return grad if clamp is None else torch.where(y.abs() < clamp, grad, 0)

    @staticmethod
    def backward(ctx, grad2: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        return _LreluDerivative.apply(grad2, y, ctx.gain, ctx.clamp), None, None, None


def _fir_depthwise(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """The [1,3,3,1] x [1,3,3,1] / 64 filter as a depthwise convolution of the input zero-padded by `pad`."""
    kernel = setup_filter([1, 3, 3, 1]).to(x.dtype)
    return F.conv2d(x, kernel.expand(x.shape[1], 1, 4, 4), stride=stride, padding=pad, groups=x.shape[1])


def _pool_boxes(x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    for pad in pads:
        x = F.avg_pool2d(x, 2, 1, padding=pad)  # zeros count: the same sums as F.pad then pooling
    return x


class _Boxes(torch.autograd.Function):
    """2x2 box filters at stride 1, each zero-padding its input by `pads[i]` (0 or 1). The gradient of a box filter
    is a box filter of the gradient with the other padding, so the gradient runs PyTorch's forward pooling kernel:
    its NCHW backward kernel took 2.4x as long, a fifth of the projector's GPU time (benchmarks/RESULTS.md).
    Differentiable to any order, as R1 and path length need."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
        ctx.pads = pads
        return _pool_boxes(x, pads)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _Boxes.apply(grad, tuple(1 - pad for pad in reversed(ctx.pads))), None


def _fir_boxes(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """The same filter as three 2x2 box filters ([1,3,3,1] = [1,1] * [1,1] * [1,1]), the last one at `stride`.
    Zero-padding the input by p <= 3 equals padding the input of each of the first p box filters by one (the padded
    input's outer outputs are zeros), which needs no padded copy."""
    if pad > 3:
        x, pad = F.pad(x, [pad - 3] * 4), 3
    pads = tuple(int(i < pad) for i in range(3))
    if stride == 1:
        return _Boxes.apply(x, pads)
    return F.avg_pool2d(_Boxes.apply(x, pads[:2]), 2, stride, padding=pads[2])


def _fir_slices(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    """The same filter as four shifted slices of the zero-padded input per axis, [1, 3, 3, 1] / 8. Compiled, the
    slices, sums and padding fuse into one kernel each way, and a slice's gradient needs only its shape: the graph
    keeps nothing of the filter's for its backward, where pooling's gradient needs each box filter's input."""
    x = F.pad(x, [pad] * 4)
    return _taps_last(_taps_last(x, stride).mT, stride).mT


def _taps_last(x: torch.Tensor, stride: int) -> torch.Tensor:
    span = x.shape[-1] - 3  # the outputs at stride 1
    a, b, c, d = (x[..., k:k + span:stride] for k in range(4))
    return (a + d + 3 * (b + c)) / 8


def _fir(x: torch.Tensor, stride: int, pad: int) -> torch.Tensor:
    # Compiled graphs: shifted slices (Inductor fuses them; compiled pooling kept every box filter's input for its
    # gradient, 4.7 of the compiled Gmain's 11.3 GiB at 1024x1024: benchmarks/RESULTS.md). Eager GPUs: pooling
    # kernels are fast, memory-bound and twice differentiable, unlike a depthwise convolution in half precision.
    # Eager CPUs (float32): the depthwise convolution is 10x faster than pooling with stride 1.
    if torch.compiler.is_compiling():
        return _fir_slices(x, stride, pad)
    return _fir_depthwise(x, stride, pad) if x.device.type == "cpu" else _fir_boxes(x, stride, pad)


def fir_filter(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by `pad`, then the [1,3,3,1] FIR filter (normalised to sum 1) in both axes."""
    return _fir(x, 1, pad)


def fir_downsample2x(x: torch.Tensor) -> torch.Tensor:
    """The official downsample2d: pad 1, [1,3,3,1] filter, keep every second pixel."""
    return _fir(x, 2, 1)


def fir_upsample2x(x: torch.Tensor) -> torch.Tensor:
    """The official upsample2d (zero insertion, [1,3,3,1] filter, gain 4, zero borders): out[2i] = x[i-1]/4 +
    3x[i]/4 and out[2i+1] = 3x[i]/4 + x[i+1]/4, which is bilinear 2x interpolation of the zero-padded input."""
    y = F.interpolate(F.pad(x, [1, 1, 1, 1]), scale_factor=2, mode="bilinear", align_corners=False)
    return y[:, :, 2:-2, 2:-2]


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, up: int = 1, down: int = 1, padding: int = 0,
                    groups: int = 1) -> torch.Tensor:
    """Cross-correlation with optional 2x [1,3,3,1] FIR up- or down-sampling, with the official padding.

    Up-sampling is a stride-2 transposed convolution followed by the FIR filter; down-sampling filters first and
    then runs a stride-2 convolution; 1x1 kernels resample on the cheaper side of the convolution.
    """
    out_channels, in_per_group, kh, kw = w.shape
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if (up, down) == (1, 2):
        if kw == 1 and kh == 1:
            return F.conv2d(fir_downsample2x(x), w, groups=groups)
        return F.conv2d(fir_filter(x, padding + 1), w, stride=2, groups=groups)
    if (up, down) != (2, 1):
        raise ValueError(f"unsupported resampling up={up} down={down}")
    if kw == 1 and kh == 1:
        return fir_upsample2x(F.conv2d(x, w, groups=groups))
    # As in the official code the kernel goes to the transposed conv unflipped, so an 'up' layer's weights mean
    # the same as in NVIDIA's checkpoints; the filter's gain of 4 is folded into the (small) weight tensor.
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    pad = padding + 3 - kw  # the official (fw + up - 1) // 2 - (kw - 1) with fw = 4, equal on both sides
    crop = max(-pad, 0)
    x = F.conv_transpose2d(x, wt * 4, stride=2, padding=crop, groups=groups)
    return fir_filter(x, pad + crop)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, demodulate: bool = True, fused: bool = True) -> torch.Tensor:
    """StyleGAN2 weight modulation/demodulation.

    fused=True runs one grouped convolution with per-sample weights (inference); fused=False scales activations
    before and after a shared-weight convolution (training, cheaper gradients). Both compute the same function.
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.dtype in (torch.float16, torch.bfloat16) and demodulate:
        # Pre-normalise so the per-sample weights cannot overflow in half precision; demodulation undoes it.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw)
                           / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:
        # The per-sample weights' norms, sum over i, k of (styles[n, i] * weight[o, i, k])^2, as one matrix product:
        # the [batch, out, in, kh, kw] tensor never exists. Eagerly the path-length penalty's double backward kept
        # several of them per layer.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()

    if not fused:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), up=up, padding=padding)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if demodulate:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), up=up, padding=padding, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
