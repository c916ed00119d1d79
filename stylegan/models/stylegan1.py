"""StyleGAN (Karras et al. 2019, "StyleGAN1") generator and discriminator, with NVIDIA's numerics and progressive
growing.

The functions are those of NVIDIA's TensorFlow `networks_stylegan.py` (G_style, G_mapping, G_synthesis, D_basic):
equalized learning rate everywhere (weights stored at unit variance over the learning-rate multiplier, scaled at run
time by gain / sqrt(fan_in) * lrmul), leaky ReLU 0.2 with its sqrt(2) gain in the weight scale (none after it),
AdaIN (instance norm, then a per-channel scale + 1 and bias from w), the [1, 2, 1] blur after every up-sampling
convolution and before every down-sampling one, transposed ("fused") up/down convolutions from 128x128 on, and one
RGB layer per resolution blended by `lod` (level of detail: 0 = full resolution, k = the resolution / 2^k network).

Layer names say the resolution (`synthesis.b64.torgb`, `b64.fromrgb`), where NVIDIA's say the lod relative to the
network's own resolution (`ToRGB_lod4`): a 64x64 network's RGB layer at 64 is the same kind of layer as a 1024x1024
network's at 64, so transfers copy by name. The call interface is the StyleGAN2 one (stylegan.models.stylegan2):
`G(z, c)`, `G.mapping(z, c, truncation_psi, truncation_cutoff)`, `G.synthesis(ws, noise_mode)`, `D(img, c)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stylegan.models.ops import LRELU_GAIN, LRELU_SLOPE, normalize_2nd_moment
from stylegan.models.stylegan2 import MinibatchStdLayer

FUSED_FROM = 128  # resolution (of the larger side) from which up/down-sampling convolutions are transposed/strided


def channels_at(stage: int, fmap_base: int, fmap_max: int) -> int:
    """NVIDIA's nf(stage): stage s is resolution 2^(s + 1)."""
    return min(fmap_base // 2 ** stage, fmap_max)


def check_arguments(c_dim: int, img_resolution: int) -> None:
    if c_dim:
        raise ValueError("conditional StyleGAN (2018) networks are not supported")
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution {img_resolution} is not a power of two >= 4")


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


def blur(x: torch.Tensor) -> torch.Tensor:
    """[1, 2, 1] x [1, 2, 1] / 16 per channel, zero padded ('SAME')."""
    f = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    f = (f[:, None] * f[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(x, f, padding=1, groups=x.shape[1])


def upscale(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x if factor == 1 else x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def downscale(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool2d(x, factor)


def lerp_clip(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * t.clamp(0, 1)


class Dense(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = LRELU_GAIN, lrmul: float = 1.0):
        super().__init__()
        # in place: see ops.setup_filter on arithmetic on the meta device
        self.weight = nn.Parameter(torch.randn(out_features, in_features).div_(lrmul))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain, self.lrmul = gain / math.sqrt(in_features) * lrmul, lrmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias * self.lrmul, x, (self.weight * self.weight_gain).t())


class Conv(nn.Module):
    """k x k convolution; `up`: nearest 2x then the convolution (transposed with the summed 4x4 kernel when fused);
    `down`: the convolution then 2x2 average (strided with the summed 4x4 kernel / 4 when fused)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, gain: float = LRELU_GAIN,
                 up: bool = False, down: bool = False, fused: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = gain / math.sqrt(in_channels * kernel * kernel)
        self.up, self.down, self.fused = up, down, fused

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution with its resampling, without the bias."""
        w = self.weight * self.weight_gain
        if self.fused:  # the 3x3 kernel at the four shifts of a 2x step, summed into one 4x4 kernel
            w = F.pad(w, [1, 1, 1, 1])
            w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
            if self.up:
                return F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=1)
            return F.conv2d(x, w * 0.25, stride=2, padding=1)
        if self.up:
            x = upscale(x)
        x = F.conv2d(x, w, padding=w.shape[-1] // 2)
        return downscale(x) if self.down else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.bias[None, :, None, None]


class StyleLayer(nn.Module):
    """One synthesis layer: [the learned constant | a convolution (+ blur after up-sampling)], then noise times its
    per-channel strength, bias, leaky ReLU, instance norm and the style of its w (AdaIN)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kind: str):
        super().__init__()
        self.kind = kind  # const | conv | up
        if kind == "const":
            self.const = nn.Parameter(torch.ones(out_channels, 4, 4))
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.conv = Conv(in_channels, out_channels, 3, up=kind == "up", fused=kind == "up" and
                             resolution >= FUSED_FROM)
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.affine = Dense(w_dim, 2 * out_channels, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if self.kind == "const":
            x, bias = self.const[None].expand(w.shape[0], -1, -1, -1), self.bias
        else:
            x, bias = self.conv.conv(x), self.conv.bias
            if self.kind == "up":
                x = blur(x)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength[None, :, None, None]
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength[None, :, None, None]
        x = lrelu(x + bias[None, :, None, None])
        x = x - x.mean(dim=[2, 3], keepdim=True)
        x = x * (x.square().mean(dim=[2, 3], keepdim=True) + 1e-8).rsqrt()
        style = self.affine(w)
        scale, shift = style.chunk(2, dim=1)
        return x * (scale[:, :, None, None] + 1) + shift[:, :, None, None]


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, layer_features: int | None = None,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995, truncation_cutoff: int = 8):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta, self.truncation_cutoff = w_avg_beta, truncation_cutoff
        features = [z_dim] + [layer_features or w_dim] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            setattr(self, f"fc{i}", Dense(features[i], features[i + 1], lrmul=lr_multiplier))
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))  # NVIDIA's dlatent_avg

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """ws [n, num_ws, w_dim]. Truncation lerps the first `truncation_cutoff` layers' ws toward w_avg (None: this
        network's default, NVIDIA's 8)."""
        x = normalize_2nd_moment(z)
        for i in range(self.num_layers):
            x = lrelu(getattr(self, f"fc{i}")(x))
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int = 3, fmap_base: int = 8192,
                 fmap_max: int = 512):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 2 * len(self.resolutions)
        for r in self.resolutions:
            stage = int(math.log2(r)) - 1
            out = channels_at(stage, fmap_base, fmap_max)
            block = nn.Module()
            if r == 4:
                block.layer0 = StyleLayer(out, out, w_dim, r, "const")
                block.layer1 = StyleLayer(out, out, w_dim, r, "conv")
            else:
                block.layer0 = StyleLayer(channels_at(stage - 1, fmap_base, fmap_max), out, w_dim, r, "up")
                block.layer1 = StyleLayer(out, out, w_dim, r, "conv")
            block.torgb = Conv(out, img_channels, 1, gain=1.0)
            setattr(self, f"b{r}", block)
        self.register_buffer("lod", torch.zeros([]))  # 0: full resolution; fractional: fading in a resolution

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """NVIDIA's 'linear' structure: each resolution's RGB output replaces the up-scaled coarser one as the lod
        falls below that resolution's level (exactly, at integer lods)."""
        img = x = None
        top = len(self.resolutions) - 1
        for i, r in enumerate(self.resolutions):
            block = getattr(self, f"b{r}")
            x = block.layer1(block.layer0(x, ws[:, 2 * i], noise_mode), ws[:, 2 * i + 1], noise_mode)
            rgb = block.torgb(x)
            img = rgb if img is None else lerp_clip(rgb, upscale(img), self.lod - (top - i))
        return img


class Generator(nn.Module):
    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 1024,
                 img_channels: int = 3, fmap_base: int = 8192, fmap_max: int = 512, mapping_kwargs: dict | None = None):
        super().__init__()
        check_arguments(c_dim, img_resolution)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, fmap_base, fmap_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "random", update_emas: bool = False
                ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode)


class Discriminator(nn.Module):
    def __init__(self, c_dim: int = 0, img_resolution: int = 1024, img_channels: int = 3, fmap_base: int = 8192,
                 fmap_max: int = 512, mbstd_group_size: int = 4, mbstd_num_features: int = 1):
        super().__init__()
        check_arguments(c_dim, img_resolution)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 1, -1)]
        for r in self.resolutions:
            stage = int(math.log2(r)) - 1
            block = nn.Module()
            here = channels_at(stage, fmap_base, fmap_max)
            block.fromrgb = Conv(img_channels, here, 1)
            if r > 4:
                block.conv0 = Conv(here, here, 3)
                block.conv1 = Conv(here, channels_at(stage - 1, fmap_base, fmap_max), 3, down=True,
                                   fused=r >= FUSED_FROM)
            else:
                c = channels_at(1, fmap_base, fmap_max)
                block.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_features) if mbstd_group_size > 1 \
                    else nn.Identity()
                block.conv = Conv(c + (mbstd_num_features if mbstd_group_size > 1 else 0), c, 3)
                block.fc = Dense(c * 16, channels_at(0, fmap_base, fmap_max))
                block.out = Dense(channels_at(0, fmap_base, fmap_max), 1, gain=1.0)
            setattr(self, f"b{r}", block)
        self.register_buffer("lod", torch.zeros([]))

    def layer_names(self) -> list[str]:
        """Layer prefixes from the input side (`b64.fromrgb`, `b64.conv0`, ...): what freeze-D counts. Only the
        full-resolution RGB input counts: the coarser ones take part only while a resolution fades in."""
        names = [f"b{self.img_resolution}.fromrgb"]
        for r in self.resolutions:
            block = getattr(self, f"b{r}")
            names += [f"b{r}.{n}" for n in ("conv0", "conv1", "conv", "fc", "out") if hasattr(block, n)]
        return names

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [n, 1]; at a fractional lod the coarser resolution's RGB input (of the 2x2-averaged image) is
        blended in, as NVIDIA's 'linear' structure."""
        x = lrelu(getattr(self, f"b{self.img_resolution}").fromrgb(img))
        for i, r in enumerate(self.resolutions[:-1]):
            block = getattr(self, f"b{r}")
            x = lrelu(block.conv1(blur(lrelu(block.conv0(x)))))
            img = downscale(img)
            x = lerp_clip(x, lrelu(getattr(self, f"b{r // 2}").fromrgb(img)), self.lod - i)
        b4 = self.b4
        x = lrelu(b4.conv(b4.mbstd(x)))
        return b4.out(lrelu(b4.fc(x.flatten(1))))
