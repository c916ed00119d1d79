"""Helpers shared by the benchmarks: the anchors' training settings, synthetic datasets and device timing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan.cluster import available_cpus
from stylegan.data.images import ImageOptions
from stylegan.data.shards import PreprocessConfig, finalize, run_task
from stylegan.data.textures import texture
from stylegan.train.config import TrainConfig, load_config


def anchor_config(data: Path, res: int, outdir: str | Path, *overrides: str, batch: int = 32) -> TrainConfig:
    """The settings of the official speed anchors (channel_base 16384, 2 mapping layers, no augmentation), shards
    read by 6 workers, compiled before the first step (the timed steps are compiled ones); `overrides` last, so they
    win."""
    return load_config(None, [f"data={data}", f"resolution={res}", f"batch={batch}", "channel_base=16384",
                              "map_layers=2", "aug=noaug", "workers=6", f"outdir={outdir}", "compile_start=first-step",
                              *overrides])


def synthetic_dataset(root: Path, resolution: int, count: int, png_level: int = ImageOptions.png_level,
                      textures: bool = False, shard_size: int = 500) -> Path:
    """`count` smooth random images (or the demo's procedural textures) preprocessed into shards at `resolution`
    (what a real dataset costs to read)."""
    if (root / "data" / "dataset.json").is_file():
        return root / "data"
    rng = np.random.default_rng(0)
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if textures:
            image = Image.fromarray(texture(0, i, resolution))
        else:
            small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
            image = small.resize((resolution, resolution), Image.BICUBIC)
        image.save(src / f"{i:05d}.png", compress_level=0)
    cfg = PreprocessConfig([src], root / "data", ImageOptions(resolution, png_level=png_level), shard_size=shard_size,
                           workers=min(8, available_cpus()))
    run_task(cfg)
    finalize(root / "data", required=True)
    return root / "data"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The spans merged where they overlap or touch, sorted: what a timeline is busy for, each moment once."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length of the intersection of two sorted lists of disjoint spans."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total
