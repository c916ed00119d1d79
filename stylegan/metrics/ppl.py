"""Perceptual path length, NVIDIA's `ppl2_wend`: how far the image moves, in LPIPS distance (their VGG16), for a
step of 1e-4 from a path's end in W, squared and divided by the step squared; the mean over samples between their
1st and 99th percentiles. The synthesis runs in float32 (NVIDIA's force_fp32): float16 rounding would swamp a step
this small. Sample i uses latents RandomState(2i) and RandomState(2i + 1), so results do not depend on the ranks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stylegan.distributed import gather_lists
from stylegan.generate import one_hot
from stylegan.metrics.detector import Detector
from stylegan.metrics.vgg import to_vgg_input
from stylegan.seeds import seed_latents

EPSILON = 1e-4


@torch.no_grad()
def path_length(G: nn.Module, vgg: Detector, num: int, device: torch.device, rank: int = 0, world: int = 1,
                batch: int = 64) -> float:
    indices = list(range(rank, num, world))
    half = [m for m in G.synthesis.modules() if getattr(m, "use_fp16", False)]
    for m in half:
        m.use_fp16 = False
    try:
        chunks = [_distances(G, vgg, indices[i:i + batch], device) for i in range(0, len(indices), batch)]
    finally:
        for m in half:
            m.use_fp16 = True
    dist = np.concatenate(gather_lists(chunks))
    lo, hi = np.percentile(dist, 1, method="lower"), np.percentile(dist, 99, method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def _distances(G: nn.Module, vgg: Detector, idx: list[int], device: torch.device) -> np.ndarray:
    z = seed_latents([2 * i for i in idx] + [2 * i + 1 for i in idx], G.z_dim).to(device)
    c = one_hot(torch.tensor(idx + idx, device=device) % max(G.c_dim, 1), G.c_dim)
    w0, w1 = G.mapping(z, c if G.c_dim else None).chunk(2)
    img = G.synthesis(torch.cat([w0, w0.lerp(w1, EPSILON)]), noise_mode="const").float()
    lpips0, lpips1 = vgg.lpips(to_vgg_input((img + 1) * (255 / 2))).chunk(2)
    return ((lpips0 - lpips1).square().sum(dim=1) / EPSILON ** 2).cpu().numpy()
