"""NVIDIA's VGG16 for LPIPS distances (`vgg16.pt`, TorchScript), the projector's image distance.

The file is called as `vgg16(images, resize_images=False, return_lpips=True)` on float NCHW images in [0, 255] and
gives one feature row per image, scaled so that the squared L2 distance between two rows is their LPIPS distance.
`python -m jobs.fetch_weights --which vgg16` puts it in the cache; compute nodes read it from there.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from stylegan.errors import UserError
from stylegan.fileio import cache_dir
from stylegan.metrics.detector import WeightFile

VGG16 = WeightFile("vgg16.pt", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt",
                   None)


def find_vgg16(explicit: str | None) -> Path:
    if explicit:
        if not Path(explicit).is_file():
            raise UserError(f"--vgg {explicit}: no such file")
        return Path(explicit)
    if (cached := cache_dir() / VGG16.name).is_file():
        return cached
    raise UserError(f"no {VGG16.name} in {cache_dir()}: run `python -m jobs.fetch_weights --which vgg16` on a machine "
                    "with internet, set STYLEGAN_CACHE or pass --vgg PATH")


def to_vgg_input(images: torch.Tensor) -> torch.Tensor:
    """Float NCHW in [0, 255] -> at most 256x256 (area downsampling), as NVIDIA's projector and PPL feed it."""
    return F.interpolate(images, size=(256, 256), mode="area") if images.shape[2] > 256 else images


class LPIPSFeatures:
    """Float NCHW images in [0, 255] (at most 256x256) -> LPIPS feature rows, with gradients to the images and
    PyTorch's TF32 default, as NVIDIA's projector runs it (the metrics' Detector.lpips: no gradients, TF32 off)."""

    def __init__(self, path: Path, device: torch.device):
        try:
            self.module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # torch.jit.load raises many types for damaged or foreign files
            raise UserError(f"{path}: not NVIDIA's TorchScript VGG16 ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:150]}); get it again with `python -m jobs.fetch_weights "
                            "--which vgg16 --force`") from None
        for p in self.module.parameters():  # gradients flow to the images only
            p.requires_grad_(False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images, resize_images=False, return_lpips=True)
