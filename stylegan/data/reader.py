"""Read preprocessed shards with WebDataset: endless shuffled batches for training, one exact pass for evaluation.

Shards are split over ranks (explicit rank/world arguments, so one place decides the distributed environment)
and over DataLoader workers. Images come out as uint8 NCHW tensors, labels as one-hot float vectors.
"""

from __future__ import annotations

import atexit
import io
import json
import multiprocessing
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from stylegan.cluster import STOP_SIGNALS
from stylegan.errors import UserError


def load_dataset_info(data_dir: str | Path, resolution: int | None = None) -> dict:
    """dataset.json of a preprocessed folder, checked against the resolution the caller needs."""
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; run `python -m jobs.preprocess` on the images first (its last task, "
                        "or `--finalize`, writes dataset.json)")
    try:
        info = json.loads(path.read_text())
        info["resolution"], info["shards"]  # noqa: B018 - required fields
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a valid dataset.json ({e})") from None
    if resolution is not None and info["resolution"] != resolution:
        raise UserError(f"{path}: the dataset is {info['resolution']}x{info['resolution']} but {resolution}x"
                        f"{resolution} is needed; preprocess again with --resolution {resolution} or set "
                        f"resolution: {info['resolution']} in the config")
    for shard in info["shards"]:
        if not (path.parent / shard["name"]).is_file():
            raise UserError(f"{path}: lists shard {shard['name']} which does not exist in {path.parent}")
    return info


def _shard_urls(data_dir: Path, info: dict) -> list[str]:
    return [str(data_dir / s["name"]) for s in info["shards"]]


class _Decode:
    """tar sample -> (uint8 CHW image, one-hot label), optional random x-flip. A class so workers can pickle it."""

    def __init__(self, label_count: int, xflip: bool):
        self.label_count, self.xflip = label_count, xflip

    def __call__(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(io.BytesIO(sample["png"])) as im:
            img = torch.from_numpy(np.array(im if im.mode == "RGB" else im.convert("RGB")))  # HWC, one copy
        if self.xflip and random.random() < 0.5:
            img = img.flip(1)
        img = img.permute(2, 0, 1)  # a view: the batch collation makes it contiguous
        label = torch.zeros(self.label_count)
        if self.label_count:
            label[json.loads(sample["json"])["label"]] = 1
        return img, label


class _NotExcluded:
    def __init__(self, exclude: list[str]):
        self.exclude = set(exclude)

    def __call__(self, sample: dict) -> bool:
        return sample["__key__"] not in self.exclude


class _RankSplit:
    """Every world-th shard for this rank, then webdataset's split_by_worker divides them over workers."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def __call__(self, src):
        for i, item in enumerate(src):
            if i % self.world == self.rank:
                yield item


class _WorkerSeed:
    def __init__(self, seed: int, rank: int):
        self.seed, self.rank = seed, rank

    def __call__(self) -> int:
        info = torch.utils.data.get_worker_info()
        return self.seed * 1_000_003 + self.rank * 1009 + (info.id if info else 0)


def training_pipeline(data_dir: str | Path, *, rank: int = 0, world: int = 1, seed: int = 0, xflip: bool = False,
                      shuffle: int = 1000, resolution: int | None = None) -> wds.DataPipeline:
    """Endless stream: each rank and worker resamples shards with its own seed and shuffles samples in a buffer."""
    data_dir = Path(data_dir)
    info = load_dataset_info(data_dir, resolution)
    return wds.DataPipeline(
        wds.ResampledShards(_shard_urls(data_dir, info), worker_seed=_WorkerSeed(seed, rank), deterministic=True),
        wds.tarfile_to_samples(),
        wds.select(_NotExcluded(info.get("exclude", []))),
        wds.shuffle(shuffle, initial=min(shuffle, 100)),
        wds.map(_Decode(info.get("label_count", 0), xflip)),
    )


def eval_pipeline(data_dir: str | Path, *, rank: int = 0, world: int = 1,
                  resolution: int | None = None) -> wds.DataPipeline:
    """One pass in which every image of the dataset appears exactly once across all ranks and workers."""
    data_dir = Path(data_dir)
    info = load_dataset_info(data_dir, resolution)
    return wds.DataPipeline(
        wds.SimpleShardList(_shard_urls(data_dir, info)),
        _RankSplit(rank, world),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.select(_NotExcluded(info.get("exclude", []))),
        wds.map(_Decode(info.get("label_count", 0), xflip=False)),
    )


class OutliveJobSignals:
    """worker_init_fn. Slurm signals every process of a job step (time-limit warnings, TERM on preemption). The
    training process answers with a snapshot while it still needs its loader, so the workers must outlive those
    signals. When their own process exits, multiprocessing stops them with TERM: from then on TERM works again."""

    def __init__(self):
        self.parent_exiting = multiprocessing.Event()
        atexit.register(self.parent_exiting.set)

    def __call__(self, worker_id: int) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self.handle)

    def handle(self, signum: int, frame) -> None:
        if self.parent_exiting.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def make_loader(pipeline: wds.DataPipeline, batch_size: int, workers: int = 2,
                pin_memory: bool = False, drop_last: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(pipeline, batch_size=batch_size, num_workers=workers, pin_memory=pin_memory,
                                       drop_last=drop_last, persistent_workers=workers > 0,
                                       prefetch_factor=4 if workers > 0 else None,
                                       worker_init_fn=OutliveJobSignals() if workers > 0 else None)
