"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

Every transform of the paper's 'bgc' pipeline is applied per sample with probability p (the ADA-tuned value):
geometric ones are composed into one inverse affine matrix, colour ones into one 4x4 matrix on homogeneous RGB.
Parameter ranges are the paper's. The geometric resampling is the paper's too: reflect-pad by what the transform
reaches, 2x up-sample with the sym6 low-pass, sample bilinearly, 2x down-sample with the same filter
(`stylegan.train.resample`, twice differentiable on CPU and CUDA alike). With the same parameters every transform
gives NVIDIA's pipeline's pixels to float32 rounding (`python -m benchmarks.augment_fidelity --official`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stylegan.train.resample import FILTER_PAD, PHASE_SHIFT, downsample2x, grid_sample, upsample2x

# Which transforms each pipeline enables (the official names).
PIPES = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "bg": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"),
    "bgc": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
            "lumaflip", "hue", "saturation"),
}

XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


def _eye(n: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.eye(size, device=device).repeat(n, 1, 1)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(len(tx), 3, tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(len(sx), 3, sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(len(theta), 3, theta.device)
    m[:, 0, 0], m[:, 0, 1] = theta.cos(), -theta.sin()
    m[:, 1, 0], m[:, 1, 1] = theta.sin(), theta.cos()
    return m


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation about a unit axis, as a 4x4 homogeneous matrix per sample."""
    x, y, z = axis
    c, s = theta.cos(), theta.sin()
    cc = 1 - c
    m = _eye(len(theta), 4, theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c
    return m


def _diag(sx: float, sy: float, like: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, dtype=like.dtype, device=like.device)
    m[0, 0], m[1, 1] = sx, sy  # filled on the device: a tensor built from a host list would wait for the GPU
    return m


def apply_geometric(img: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Resample `img` through `g` ([n, 3, 3], output -> input in normalised [-1, 1] coordinates).

    Works in pixels centred on the image: reflect-pad the input as far as reflection goes (size - 1 pixels: what
    the official pipeline pads at most, and enough for any transform, so no host sync measures the reach and every
    call has the same shapes), 2x up-sample, sample an output FILTER_PAD pixels larger than the image at 2x, 2x
    down-sample and crop (`stylegan.train.resample`).
    """
    n, c, h, w = img.shape
    pad = FILTER_PAD
    upsampled = upsample2x(img, h - 1, w - 1)
    g_px = _diag(w / 2, h / 2, g) @ g @ _diag(2 / w, 2 / h, g)
    out_h, out_w = 2 * (h + 2 * pad), 2 * (w + 2 * pad)
    # Transform about the point NVIDIA's pipeline places on the 2x grid (PHASE_SHIFT), on both sides of it.
    shift, unshift = _diag(1, 1, g), _diag(1, 1, g)
    shift[0, 2] = shift[1, 2] = PHASE_SHIFT
    unshift[0, 2] = unshift[1, 2] = -PHASE_SHIFT
    theta = _diag(1 / (1.5 * w - 1), 1 / (1.5 * h - 1), g) @ unshift @ g_px @ shift @ _diag(w / 2 + pad, h / 2 + pad, g)
    grid = F.affine_grid(theta[:, :2, :].to(img.dtype), [n, c, out_h, out_w], align_corners=False)
    return downsample2x(grid_sample(upsampled, grid), pad)


class AugmentPipe(nn.Module):
    def __init__(self, pipe: str = "bgc", p: float = 0.0):
        super().__init__()
        if pipe not in PIPES:
            raise ValueError(f"unknown augment pipe {pipe!r}; choose from {', '.join(PIPES)}")
        self.enabled = set(PIPES[pipe])
        self.register_buffer("p", torch.tensor(float(p)))  # the official name: augment_pipe.p

    def _gate(self, n: int, device: torch.device, prob: torch.Tensor | float) -> torch.Tensor:
        return torch.rand(n, device=device) < prob

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        n, c, h, w = img.shape
        dev = img.device
        p = self.p.to(dev)
        on = self.enabled
        one, zero = torch.ones(n, device=dev), torch.zeros(n, device=dev)

        # Geometric: an inverse map from output to input coordinates, in normalised [-1, 1] units.
        g = _eye(n, 3, dev)
        if "xflip" in on:
            flip = torch.where(self._gate(n, dev, p), torch.randint(0, 2, (n,), device=dev).float(), zero)
            g = g @ scale2d(1 - 2 * flip, one)
        if "rotate90" in on:
            quarter = torch.where(self._gate(n, dev, p), torch.randint(0, 4, (n,), device=dev).float(), zero)
            g = g @ rotate2d(-math.pi / 2 * quarter)
        if "xint" in on:
            t = (torch.rand(n, 2, device=dev) * 2 - 1) * XINT_MAX
            t = torch.where(self._gate(n, dev, p)[:, None], t, torch.zeros_like(t))
            g = g @ translate2d(2 * torch.round(t[:, 0] * w) / w, 2 * torch.round(t[:, 1] * h) / h)
        if "scale" in on:
            s = torch.where(self._gate(n, dev, p), torch.exp2(torch.randn(n, device=dev) * SCALE_STD), one)
            g = g @ scale2d(s, s)
        p_rot = 1 - torch.sqrt((1 - p).clamp(min=0))  # two rotations: either one fires with probability p
        if "rotate" in on:
            theta = torch.where(self._gate(n, dev, p_rot), (torch.rand(n, device=dev) * 2 - 1) * math.pi * ROTATE_MAX,
                                zero)
            g = g @ rotate2d(-theta)
        if "aniso" in on:
            s = torch.where(self._gate(n, dev, p), torch.exp2(torch.randn(n, device=dev) * ANISO_STD), one)
            g = g @ scale2d(s, 1 / s)
        if "rotate" in on:
            theta = torch.where(self._gate(n, dev, p_rot), (torch.rand(n, device=dev) * 2 - 1) * math.pi * ROTATE_MAX,
                                zero)
            g = g @ rotate2d(-theta)
        if "xfrac" in on:
            t = torch.randn(n, 2, device=dev) * XFRAC_STD
            t = torch.where(self._gate(n, dev, p)[:, None], t, torch.zeros_like(t))
            g = g @ translate2d(2 * t[:, 0], 2 * t[:, 1])
        if on & set(PIPES["bg"]):
            img = apply_geometric(img, g)

        # Colour: a 4x4 matrix on homogeneous RGB.
        if on & set(PIPES["color"]) and c == 3:
            m = _eye(n, 4, dev)
            luma = F.pad(torch.full([3], 1 / math.sqrt(3), device=dev), [0, 1])
            if "brightness" in on:
                b = torch.where(self._gate(n, dev, p), torch.randn(n, device=dev) * BRIGHTNESS_STD, zero)
                t = _eye(n, 4, dev)
                t[:, :3, 3] = b[:, None]
                m = t @ m
            if "contrast" in on:
                k = torch.where(self._gate(n, dev, p), torch.exp2(torch.randn(n, device=dev) * CONTRAST_STD), one)
                m = torch.diag_embed(torch.stack([k, k, k, one], dim=1)) @ m
            outer = torch.outer(luma, luma)
            if "lumaflip" in on:
                i = torch.where(self._gate(n, dev, p), torch.randint(0, 2, (n,), device=dev).float(), zero)
                m = (_eye(n, 4, dev) - 2 * outer * i[:, None, None]) @ m
            if "hue" in on:
                theta = torch.where(self._gate(n, dev, p), (torch.rand(n, device=dev) * 2 - 1) * math.pi * HUE_MAX,
                                    zero)
                m = _rotate3d(luma[:3] / luma[:3].norm(), theta) @ m
            if "saturation" in on:
                s = torch.where(self._gate(n, dev, p), torch.exp2(torch.randn(n, device=dev) * SATURATION_STD), one)
                m = (outer + (_eye(n, 4, dev) - outer) * s[:, None, None]) @ m
            flat = img.reshape(n, c, h * w)
            img = (m[:, :3, :3].to(img.dtype) @ flat + m[:, :3, 3:].to(img.dtype)).reshape(n, c, h, w)
        return img
