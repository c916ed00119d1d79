"""Seed lists and the seed -> latent mapping of NVIDIA's gen_images.py."""

from __future__ import annotations

import numpy as np
import torch

from stylegan.errors import UserError

MAX_SEED = 2 ** 32 - 1  # numpy RandomState accepts seeds in [0, 2**32)


def _seed(text: str, spec: str) -> int:
    if not text.strip().isdigit():
        raise UserError(f"bad seed '{text}' in '{spec}': seeds are non-negative integers, e.g. 0,5,10-19")
    value = int(text)
    if value > MAX_SEED:
        raise UserError(f"bad seed {value} in '{spec}': seeds must be at most {MAX_SEED}")
    return value


def parse_seeds(spec: str) -> list[int]:
    """'0,5,10-19' -> [0, 5, 10, ..., 19]; order kept, ranges inclusive."""
    seeds: list[int] = []
    for part in spec.split(","):
        if "-" in part.strip()[1:]:
            lo_text, hi_text = part.split("-", 1)
            lo, hi = _seed(lo_text, spec), _seed(hi_text, spec)
            if hi < lo:
                raise UserError(f"bad seed range '{part}' in '{spec}': the end is below the start")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(_seed(part, spec))
    return seeds


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """z for each seed: `np.random.RandomState(seed).randn(1, z_dim)`, float32 [len(seeds), z_dim].

    One RandomState reseeded per seed gives the same numbers as a new one per seed (reseeding also drops the cached
    Gaussian) for much less work: at bulk-sampling rates, creating generators was as slow as the network."""
    z = np.zeros((len(seeds), z_dim))
    rng = np.random.RandomState()
    for i, s in enumerate(seeds):
        rng.seed(s)
        z[i] = rng.randn(z_dim)
    return torch.from_numpy(z.astype(np.float32))
