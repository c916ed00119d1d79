"""Sample diversity, weight-free: how far apart generated images are from each other, relative to real images.

Each image becomes a structure descriptor: grayscale at 16x16, normalised to zero mean and unit variance, so that
colour and brightness do not count (a generator that repeats one motif in many colours is not diverse). The metric
is the mean pairwise distance between the generated images' descriptors over the same for real images: about 1
when the samples vary as much as the data, well below 1 under mode collapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIZE = 16
IMAGES = 1000


def descriptors(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW images -> [N, SIZE * SIZE] float32 structure descriptors."""
    gray = images.float().mean(dim=1, keepdim=True)
    small = F.adaptive_avg_pool2d(gray, SIZE).flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return small / (small.std(dim=1, keepdim=True) + 1e-6)


def mean_pairwise_distance(desc: torch.Tensor) -> float:
    desc = torch.as_tensor(desc).double()  # the real statistics' cache holds numpy arrays
    d = torch.cdist(desc, desc)
    n = len(desc)
    return float(d.sum() / max(n * (n - 1), 1))


def diversity_ratio(real: torch.Tensor, fake: torch.Tensor) -> float:
    return mean_pairwise_distance(fake) / mean_pairwise_distance(real)
