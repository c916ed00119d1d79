"""Read preprocessed shards with WebDataset: endless shuffled batches for training, one exact pass for evaluation.

Shards are split over ranks (explicit rank/world arguments, so one place decides the distributed environment)
and over DataLoader workers. Images come out as uint8 NCHW tensors, labels as one-hot float vectors.
"""

from __future__ import annotations

import atexit
import io
import itertools
import json
import multiprocessing
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from stylegan.cluster import STOP_SIGNALS
from stylegan.errors import UserError
from stylegan.fileio import sha256_file

# dataset.json's fields and their types (preprocess writes them; a hand-edited or foreign file is checked first)
DATASET_FIELDS = {"resolution": int, "shards": list, "total_images": int}
OPTIONAL_FIELDS = {"label_count": int, "rejected": int, "exclude": list, "shuffle_seed": int}
SHARD_FIELDS = {"name": str}
SHARD_OPTIONAL = {"bytes": int, "count": int}


def check_fields(path: Path, info: object) -> None:
    """A UserError naming the first field of dataset.json that is missing or of the wrong type."""
    def kind(value: object, expected: type) -> bool:
        return isinstance(value, expected) and not (expected is int and isinstance(value, bool))

    if not isinstance(info, dict):
        raise UserError(f"{path}: not a valid dataset.json (a JSON object is expected); preprocess again")
    fields = {**DATASET_FIELDS, **{k: t for k, t in OPTIONAL_FIELDS.items() if k in info}}
    for key, expected in fields.items():
        if not kind(info.get(key), expected):
            raise UserError(f"{path}: field '{key}' must be {expected.__name__}, found {info.get(key)!r:.60}; "
                            "preprocess again (or restore the file)")
    for i, shard in enumerate(info["shards"]):
        if not isinstance(shard, dict) or not all(kind(shard.get(k), t) for k, t in SHARD_FIELDS.items()):
            raise UserError(f"{path}: shards[{i}] must be an object with a 'name'; preprocess again")
        for key, expected in SHARD_OPTIONAL.items():
            if shard.get(key) is not None and not kind(shard[key], expected):
                raise UserError(f"{path}: shards[{i}].{key} must be {expected.__name__}; preprocess again")
    if not all(isinstance(key, str) for key in info.get("exclude", [])):
        raise UserError(f"{path}: field 'exclude' must list sample keys (strings); preprocess again")


def load_dataset_info(data_dir: str | Path, resolution: int | None = None) -> dict:
    """dataset.json of a preprocessed folder, checked against the resolution the caller needs."""
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        raise UserError(f"{path}: missing; run `python -m jobs.preprocess` on the images first (its last task, "
                        "or `--finalize`, writes dataset.json)")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid dataset.json ({e})") from None
    check_fields(path, info)
    if resolution is not None and info["resolution"] != resolution:
        raise UserError(f"{path}: the dataset is {info['resolution']}x{info['resolution']} but {resolution}x"
                        f"{resolution} is needed; preprocess again with --resolution {resolution} or set "
                        f"resolution: {info['resolution']} in the config")
    for shard in info["shards"]:
        shard_path = path.parent / shard["name"]
        if not shard_path.is_file():
            raise UserError(f"{path}: lists shard {shard['name']} which does not exist in {path.parent}")
        if shard.get("bytes") is not None and shard_path.stat().st_size != shard["bytes"]:
            raise UserError(f"{shard_path}: {shard_path.stat().st_size} bytes where dataset.json promises "
                            f"{shard['bytes']} (truncated or replaced): restore it, or preprocess again")
    excluded = len(set(info.get("exclude", [])))
    if info["total_images"] < 1:
        raise UserError(f"{path}: the dataset has no usable images ({info.get('rejected', 0)} rejected, "
                        f"{excluded} excluded as duplicates): check the rejected-*.jsonl files")
    counts = [shard.get("count") for shard in info["shards"]]
    if all(isinstance(n, int) for n in counts) and sum(counts) - excluded != info["total_images"]:
        # training draws until it finds images: with all of them excluded it would wait for ever
        raise UserError(f"{path}: total_images is {info['total_images']} but its shards hold {sum(counts)} images "
                        f"of which {excluded} are excluded: the file was edited; preprocess again (or restore it)")
    return info


def verify_shards(data_dir: str | Path, info: dict) -> None:
    """Every shard's sha256 against dataset.json (reads them all): before statistics that will be cached."""
    for shard in info["shards"]:
        path = Path(data_dir) / shard["name"]
        if sha256_file(path) != shard["sha256"]:
            raise UserError(f"{path}: its content differs from what dataset.json records (sha256): restore the "
                            "shard, or preprocess again")


class ShardError(Exception):
    """A sample that cannot be read, named by its shard and key (raised in DataLoader workers)."""


def _damaged_tar(exn: Exception) -> bool:
    """webdataset's handler for tar reading errors (it appends the shard's URL to the exception's args)."""
    where = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "a shard")
    raise ShardError(f"{where}: cannot be read as a tar shard ({type(exn).__name__}); restore it, or preprocess "
                     "again") from None


def named_errors(batches: Iterator) -> Iterator:
    """Pass batches through; a worker's ShardError becomes one UserError line naming the shard (the DataLoader
    re-raises it wrapped in the worker's traceback)."""
    try:
        yield from batches
    except ShardError as e:
        raise UserError(str(e).strip().splitlines()[-1].split("ShardError: ", 1)[-1]) from None


def _shard_urls(data_dir: Path, info: dict) -> list[str]:
    return [str(data_dir / s["name"]) for s in info["shards"]]


class _Decode:
    """tar sample -> (uint8 CHW image, one-hot label), optional random x-flip, drawn from the worker's own generator
    (`seed`: the run's, needed with `xflip`). A class so workers can pickle it."""

    def __init__(self, label_count: int, xflip: bool, seed: _WorkerSeed | None = None):
        self.label_count, self.xflip, self.seed, self.rng = label_count, xflip, seed, None

    def __call__(self, sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            with Image.open(io.BytesIO(sample["png"])) as im:
                img = torch.from_numpy(np.array(im if im.mode == "RGB" else im.convert("RGB")))  # HWC, one copy
            label_index = json.loads(sample["json"])["label"] if self.label_count else None
        except Exception as e:  # PIL and json raise many types for damaged members
            raise ShardError(f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')} is damaged "
                             f"({type(e).__name__}: {e}); restore the shard, or preprocess again") from None
        if self.xflip:
            if self.rng is None:  # made in the worker that decodes
                self.rng = random.Random(self.seed())
            if self.rng.random() < 0.5:
                img = img.flip(1)
        img = img.permute(2, 0, 1)  # a view: the batch collation makes it contiguous
        label = torch.zeros(self.label_count)
        if self.label_count:
            label[label_index] = 1
        return img, label


class _NotExcluded:
    """Drops the excluded samples. A stream of nothing but excluded samples (a dataset.json edited to exclude
    every image a rank reads) ends in an error instead of an endless search."""

    def __init__(self, exclude: list[str]):
        self.exclude = set(exclude)
        self.limit = 10 * len(self.exclude) + 1000  # consecutive drops no real dataset comes near

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        dropped = 0
        for sample in src:
            if sample["__key__"] not in self.exclude:
                dropped = 0
                yield sample
                continue
            dropped += 1
            if dropped > self.limit:
                raise ShardError(f"{sample.get('__url__', '?')}: {dropped} excluded samples in a row: dataset.json "
                                 "excludes every image this process reads; preprocess again")


class _RankSplit:
    """Every world-th shard for this rank, then webdataset's split_by_worker divides them over workers."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def __call__(self, src):
        for i, item in enumerate(src):
            if i % self.world == self.rank:
                yield item


class _WorkerSeed:
    """The seed of a rank's loader worker (its `stream`: one per use), called in the worker."""

    def __init__(self, seed: int, rank: int, stream: int = 0):
        self.seed, self.rank, self.stream = seed, rank, stream

    def __call__(self) -> int:
        info = torch.utils.data.get_worker_info()
        return self.seed * 1_000_003 + self.rank * 1009 + (info.id if info else 0) + self.stream * 7_919_011


class _Shuffled:
    """webdataset's buffer shuffle with the worker's own generator: its default one takes the process id and the
    clock, and a run's batches would then not follow from its seed."""

    def __init__(self, bufsize: int, seed: _WorkerSeed):
        self.bufsize, self.seed = bufsize, seed

    def __call__(self, src: Iterator) -> Iterator:
        return wds.shuffle(self.bufsize, initial=min(self.bufsize, 100), rng=random.Random(self.seed()))(src)


def training_pipeline(data_dir: str | Path, *, rank: int = 0, world: int = 1, seed: int = 0, xflip: bool = False,
                      shuffle: int = 1000, resolution: int | None = None) -> wds.DataPipeline:
    """Endless stream: each rank and worker resamples shards, shuffles samples in a buffer and flips them with
    generators of its own, seeded by `seed`: the same seed, ranks and workers give the same batches."""
    data_dir = Path(data_dir)
    info = load_dataset_info(data_dir, resolution)
    return wds.DataPipeline(
        wds.ResampledShards(_shard_urls(data_dir, info), worker_seed=_WorkerSeed(seed, rank), deterministic=True),
        wds.tarfile_to_samples(handler=_damaged_tar),
        _NotExcluded(info.get("exclude", [])),
        _Shuffled(shuffle, _WorkerSeed(seed, rank, stream=1)),
        wds.map(_Decode(info.get("label_count", 0), xflip, _WorkerSeed(seed, rank, stream=2))),
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
        wds.tarfile_to_samples(handler=_damaged_tar),
        _NotExcluded(info.get("exclude", [])),
        wds.map(_Decode(info.get("label_count", 0), xflip=False)),
    )


def first_images(data_dir: str | Path, count: int, resolution: int | None = None) -> list[np.ndarray]:
    """The dataset's first `count` images (all, if it holds fewer), uint8 [H, W, 3] each: the run's reals grid. The
    shards hold the images in a seeded random order, so these are a random sample, as NVIDIA's grid."""
    images = named_errors(itertools.islice(eval_pipeline(data_dir, resolution=resolution), count))
    return [img.permute(1, 2, 0).numpy() for img, _ in images]


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


def device_batches(loader: torch.utils.data.DataLoader, device: torch.device) -> Iterator[tuple[torch.Tensor,
                                                                                               torch.Tensor]]:
    """Endless (images in [-1, 1] as float32, labels) batches on `device` from a training loader."""
    for img, c in named_errors(loader):
        yield (img.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1, c.to(device, non_blocking=True))
