"""The general upfirdn2d (upsample, pad, FIR-filter, downsample) written out step by step, as the reference the
fast fixed-filter ops in stylegan/models/ops.py are checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1,
              padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * gain).to(x.dtype).flip([0, 1])
    x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def conv_transpose_then_filter(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The official up-sampling 3x3 conv (padding 1): transposed conv with the unflipped kernel, FIR pad 1, gain 4."""
    x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
    return upfirdn2d(x, f, padding=(1, 1, 1, 1), gain=4)


def filter_then_strided_conv(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The official down-sampling 3x3 conv (padding 1): FIR with pad 2, then a stride-2 conv."""
    return F.conv2d(upfirdn2d(x, f, padding=(2, 2, 2, 2)), w, stride=2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, f: torch.Tensor, up: int = 1,
                     demodulate: bool = True) -> torch.Tensor:
    """The paper's weight demodulation written out: each sample's weights scaled by its styles, divided by their own
    norm, and convolved with that sample alone (3x3, padding 1)."""
    out = []
    for xi, si in zip(x, styles, strict=True):
        w = weight * si.reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xi = xi.unsqueeze(0)
        out.append(conv_transpose_then_filter(xi, w, f) if up == 2 else F.conv2d(xi, w, padding=1))
    return torch.cat(out)
