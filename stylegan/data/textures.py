"""Deterministic procedural textures (stripes, checks, weaves, dots, noise, marble) for the demo dataset.

Texture i of seed s is a pure function of (s, i): the same call always writes the same bytes.
"""

from __future__ import annotations

import numpy as np

KINDS = ("stripes", "checks", "weave", "dots", "noise", "marble")


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.uniform(0, 1, 3)
    b = np.clip(a + rng.choice([-1, 1], 3) * rng.uniform(0.3, 0.7, 3), 0, 1)
    return a, b


def _smooth_noise(rng: np.random.Generator, res: int, cells: int) -> np.ndarray:
    grid = rng.uniform(0, 1, (cells + 1, cells + 1))
    t = np.linspace(0, cells, res, endpoint=False)
    i = t.astype(int)
    f = t - i
    f = f * f * (3 - 2 * f)
    top = grid[i][:, i] * (1 - f)[None, :] + grid[i][:, i + 1] * f[None, :]
    bottom = grid[i + 1][:, i] * (1 - f)[None, :] + grid[i + 1][:, i + 1] * f[None, :]
    return top * (1 - f)[:, None] + bottom * f[:, None]


def texture(seed: int, index: int, resolution: int) -> np.ndarray:
    """uint8 [resolution, resolution, 3]."""
    rng = np.random.default_rng([seed, index])
    kind = KINDS[index % len(KINDS)]
    r = resolution
    y, x = np.mgrid[0:r, 0:r].astype(np.float64) / r
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    freq = rng.uniform(2, 8)
    if kind == "stripes":
        mask = (np.sin(2 * np.pi * freq * u) > rng.uniform(-0.5, 0.5)).astype(float)
    elif kind == "checks":
        mask = ((np.floor(freq * u) + np.floor(freq * v)) % 2).astype(float)
    elif kind == "weave":
        over = (np.floor(freq * u) + np.floor(freq * v)) % 2
        mask = np.where(over == 0, 0.5 + 0.5 * np.sin(2 * np.pi * freq * 4 * u), 0.5 + 0.5 * np.sin(
            2 * np.pi * freq * 4 * v))
    elif kind == "dots":
        cu, cv = (freq * u) % 1 - 0.5, (freq * v) % 1 - 0.5
        mask = (np.hypot(cu, cv) < rng.uniform(0.15, 0.4)).astype(float)
    elif kind == "noise":
        mask = _smooth_noise(rng, r, int(rng.integers(3, 10)))
    else:  # marble
        turb = _smooth_noise(rng, r, 4) + 0.5 * _smooth_noise(rng, r, 8)
        mask = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * u + 2.0 * turb))
    a, b = _palette(rng)
    img = a[None, None] * (1 - mask[..., None]) + b[None, None] * mask[..., None]
    img += rng.normal(0, 0.02, img.shape)  # a little fabric grain
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
