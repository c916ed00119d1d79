"""Seed lists and the seed -> latent mapping of NVIDIA's gen_images.py."""

from __future__ import annotations

import numpy as np
import torch

from stylegan.errors import UserError

MAX_SEED = 2 ** 32 - 1  # numpy RandomState accepts seeds in [0, 2**32)


def parse_ranges(spec: str, noun: str, example: str, maximum: int) -> list[int]:
    """'0,5,10-19' -> [0, 5, 10, ..., 19]; order kept, ranges inclusive. `noun` and `example` word the errors."""
    def number(text: str) -> int:
        if not text.strip().isdigit():
            raise UserError(f"bad {noun} '{text}' in '{spec}': {noun}s are non-negative integers, e.g. {example}")
        if int(text) > maximum:
            raise UserError(f"bad {noun} {int(text)} in '{spec}': {noun}s must be at most {maximum}")
        return int(text)

    values: list[int] = []
    for part in spec.split(","):
        if "-" in part.strip()[1:]:
            lo_text, hi_text = part.split("-", 1)
            lo, hi = number(lo_text), number(hi_text)
            if hi < lo:
                raise UserError(f"bad {noun} range '{part}' in '{spec}': the end is below the start")
            values.extend(range(lo, hi + 1))
        else:
            values.append(number(part))
    return values


def parse_seeds(spec: str) -> list[int]:
    """'0,5,10-19' -> [0, 5, 10, ..., 19]; order kept, ranges inclusive."""
    return parse_ranges(spec, "seed", "0,5,10-19", MAX_SEED)


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
