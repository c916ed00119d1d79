"""Image resampling for the augmentation pipeline, twice differentiable on every device.

R1 differentiates D's output twice with respect to the reals, and the reals pass through the augmentation's
geometric resampling. PyTorch's CUDA `grid_sample` has no double backward (its CPU kernel has one, so CPU-only tests
never notice), so the bilinear sampling here is a pair of custom ops of our own: it is linear in the image, so its
backward is its adjoint and the adjoint's backward is the sampling again, on any device, to any order.

The 2x up- and down-sampling use the sym6 wavelet's low-pass filter, as the official augmentation does: up then
down is an exact identity (the filter is orthogonal), so only the geometric transform itself changes the image.
They are linear maps along each axis. Eagerly each is one small matrix per axis (reflect padding folded in) and an
image is filtered by two matrix products: fixed shapes, no cuDNN grouped convolutions, differentiable to any order,
and few kernel launches (R1's eager double backward runs them). Inside a compiled graph they are sums of shifted
slices instead, the filter's 12 taps: Inductor fuses those into a few passes over the image, while the dense
matrices' products do work that grows with the image's side (benchmarks/RESULTS.md times both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Daubechies' symlet 6 decomposition low-pass filter (published coefficients; the same as PyWavelets' 'sym6').
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
# Output pixels beyond each border that the 2x filters read (half their length at 1x): pad and crop by this much.
FILTER_PAD = len(SYM6) // 4
_TAP_PAD = len(SYM6) // 2 - 1  # conv padding that centres the 12-tap filter between the two 2x samples
# Where the transform sits relative to the 2x grid, in input pixels: NVIDIA's pipeline takes up-sampled sample j to
# lie at input coordinate j / 2, a quarter pixel from the pixel-centre convention, and transforms about that point
# (its translate2d(-0.5) around the 2x matrix). We do the same, so the discriminator sees the images NVIDIA's sees
# (benchmarks/augment_fidelity.py --official). sym6's own centroid would put it at 0.20: flips and turns move the
# image by twice the 0.05 difference, which NVIDIA's training has always had.
PHASE_SHIFT = 0.25


# Bilinear sampling (align_corners=False, zeros outside) and its adjoint, each the other's derivative (above). The grid
# is a constant (augmentation parameters are random draws, never trained), and neither op keeps the image: the adjoint
# needs only the grid and the image's size. Custom ops act the same eagerly and in compiled graphs, where the plain
# `grid_sampler_2d` would keep its input (the 2x image: 1.7 GiB at 1024x1024) for a backward that reads only the grid,
# and where an autograd function would make AOTAutograd bypass its cache.
@torch.library.custom_op("stylegan::grid_sample", mutates_args=())
def _sample(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.grid_sampler_2d(img, grid, 0, 0, False)


@torch.library.custom_op("stylegan::grid_sample_adjoint", mutates_args=())
def _sample_adjoint(grad: torch.Tensor, grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The transpose of _sample: scatters `grad` back onto an image of height x width."""
    # The kernel reads its input only for the grid's gradient, which is not asked for: a zero broadcast to the
    # image's shape stands for it without allocating it.
    blank = grad.new_zeros(()).expand(*grad.shape[:2], height, width)
    return torch.ops.aten.grid_sampler_2d_backward(grad, blank, grid, 0, 0, False, [True, False])[0]


@_sample.register_fake
def _(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return img.new_empty(*img.shape[:2], *grid.shape[1:3])


@_sample_adjoint.register_fake
def _(grad: torch.Tensor, grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return grad.new_empty(*grad.shape[:2], height, width)


def _keep_grid_and_size(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(inputs[1])
    ctx.size = tuple(inputs[0].shape[-2:])  # the sampled image's, for the adjoint (the adjoint's backward needs none)


def _sample_backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    (grid,) = ctx.saved_tensors
    return _sample_adjoint(grad, grid, *ctx.size), None


def _sample_adjoint_backward(ctx, grad2: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
    (grid,) = ctx.saved_tensors
    return _sample(grad2, grid), None, None, None


_sample.register_autograd(_sample_backward, setup_context=_keep_grid_and_size)
_sample_adjoint.register_autograd(_sample_adjoint_backward, setup_context=_keep_grid_and_size)


def grid_sample(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(img, grid, 'bilinear', 'zeros', align_corners=False)`, differentiable in `img` to any
    order on CPU and CUDA alike."""
    return _sample(img, grid)


# The low-pass normalised to unit gain, as Python numbers: constants inside a compiled graph.
_TAPS = tuple(v / sum(SYM6) for v in SYM6)


def upsample2x(img: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect-pad `img` [n, c, h, w] by pad_h rows and pad_w columns on both sides, then 2x up-sample it:
    [n, c, 2 * (h + 2 * pad_h), 2 * (w + 2 * pad_w)], as `pad_upsample_matrix` along each axis."""
    h, w = img.shape[-2:]
    if torch.compiler.is_compiling():
        padded = F.pad(img, [pad_w, pad_w, pad_h, pad_h], mode="reflect")
        return _upsample_last(_upsample_last(padded).mT).mT
    up_h = pad_upsample_matrix(h, pad_h, img)
    up_w = up_h if (w, pad_w) == (h, pad_h) else pad_upsample_matrix(w, pad_w, img)
    return up_h.mT @ img @ up_w


def downsample2x(img: torch.Tensor, crop: int) -> torch.Tensor:
    """2x down-sample `img` [n, c, h, w] and drop `crop` output samples at each end of both axes:
    [n, c, h // 2 - 2 * crop, w // 2 - 2 * crop], as `downsample_matrix` along each axis, cropped."""
    h, w = img.shape[-2:]
    if torch.compiler.is_compiling():
        return _downsample_last(_downsample_last(img, crop).mT, crop).mT
    down_h = downsample_matrix(h, img)[:, crop:h // 2 - crop]
    down_w = down_h if w == h else downsample_matrix(w, img)[:, crop:w // 2 - crop]
    return down_h.mT @ img @ down_w


def _upsample_last(x: torch.Tensor) -> torch.Tensor:
    """2x up-sampling of the last axis as `pad_upsample_matrix` without padding: output 2m + parity sums the taps t of
    the other parity times input m + (5 + parity - t) / 2 (the transposed convolution's phases), zeros beyond the
    ends."""
    size, reach = x.shape[-1], len(SYM6) // 4  # the phases read at most 3 samples beyond either end
    zeroed = F.pad(x, [reach, reach])
    phases = [sum(2 * _TAPS[t] * zeroed[..., reach + (_TAP_PAD + parity - t) // 2:][..., :size]
                  for t in range(1 - parity, len(SYM6), 2)) for parity in (0, 1)]
    return torch.stack(phases, dim=-1).flatten(-2)


def _downsample_last(x: torch.Tensor, crop: int) -> torch.Tensor:
    """2x down-sampling of the last axis as `downsample_matrix`, outputs crop .. size // 2 - crop - 1: output m sums
    tap t times input 2m - 5 + t (the strided convolution), zeros beyond the ends."""
    size = x.shape[-1]
    count = size // 2 - 2 * crop
    zeroed = F.pad(x, [_TAP_PAD, _TAP_PAD])
    return sum(_TAPS[t] * zeroed[..., 2 * crop + t:][..., :2 * count - 1:2] for t in range(len(SYM6)))


def _taps(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # normalised in `dtype`, not from _TAPS: float32 taps from float64 ones differ by an ulp, and that moves training
    f = torch.tensor(SYM6, dtype=dtype).to(device, non_blocking=True)  # no wait for the GPU's queue
    return (f / f.sum()).reshape(1, 1, -1)


def pad_upsample_matrix(size: int, pad: int, like: torch.Tensor) -> torch.Tensor:
    """[size, 2 * (size + 2 * pad)]: `x @ M` reflect-pads the last axis of x by `pad` on both sides, then 2x
    up-samples it (zero insertion and the sym6 low-pass, gain 2). Output sample j sits at padded input coordinate
    (j + 0.5) / 2, so both cover the same extent. Built by sending each unit impulse through pad and filter."""
    impulses = torch.eye(size, dtype=like.dtype, device=like.device).unsqueeze(1)
    padded = F.pad(impulses, [pad, pad], mode="reflect")
    taps = _taps(like.dtype, like.device) * 2
    return F.conv_transpose1d(padded, taps, stride=2, padding=_TAP_PAD).squeeze(1)


def downsample_matrix(size: int, like: torch.Tensor) -> torch.Tensor:
    """[size, size // 2]: `x @ M` is the adjoint of 2x up-sampling, halved (the sym6 low-pass, every second
    sample): down-sampling an up-sampled signal gives it back, exactly, FILTER_PAD samples away from its ends."""
    impulses = torch.eye(size, dtype=like.dtype, device=like.device).unsqueeze(1)
    return F.conv1d(impulses, _taps(like.dtype, like.device), stride=2, padding=_TAP_PAD).squeeze(1)
