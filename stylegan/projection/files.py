"""The projection job's files: which images to project, and what each one leaves behind.

Inputs are an image folder or archive (what `preprocess` reads, cropped and resized to the network's resolution as
`preprocess` does, which is NVIDIA's projector's centre crop and LANCZOS resize), or a preprocessed dataset folder
(dataset.json and its shards, at the network's resolution). Per image `<name>` (its path under the input without
the suffix, or its shard key): `<name>.npz` holding `w` [1, num_ws, w_dim] (NVIDIA's projected_w.npz layout) and the
step count, `<name>.png` (G(w) with the network's constant noise, as NVIDIA's proj.png), `<name>-target.png`, and on
request `<name>.mp4`. The .npz is written last, so it marks a finished image: a rerun skips those.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stylegan.cluster import task_range
from stylegan.data.images import ImageOptions, Rejected, process_image
from stylegan.data.reader import load_dataset_info
from stylegan.data.sources import MAX_FILE_BYTES, InputItem, Unusable, list_inputs, read_items
from stylegan.errors import UserError
from stylegan.fileio import atomic_path


@dataclass(frozen=True)
class Target:
    name: str
    item: InputItem | None = None  # in an image folder or archive
    shard: Path | None = None  # or in a preprocessed shard, as <name>.png


def list_targets(images: Path, resolution: int) -> tuple[list[Target], list[Unusable]]:
    """Every image to project, in a fixed order (the same on every array task), and the unusable entries."""
    if (images / "dataset.json").is_file():
        return _dataset_targets(images, load_dataset_info(images, resolution)), []
    if not images.exists():
        raise UserError(f"--images {images}: no such folder or archive")
    items, unusable = list_inputs([images])
    targets = [Target(str(Path(item.name).with_suffix("")), item=item) for item in items]
    seen: dict[str, str] = {}
    for item, target in zip(items, targets, strict=True):
        if (other := seen.setdefault(target.name, item.name)) != item.name:
            raise UserError(f"{images}: {other} and {item.name} would both be projected to {target.name}.npz: rename "
                            "one of them")
    return targets, unusable


def task_targets(images: Path, resolution: int, task: int, num_tasks: int
                 ) -> tuple[list[Target], int, int, list[Unusable]]:
    """Array task `task`'s share of list_targets' images (stylegan.cluster.task_range): the share, the index of its
    first image, the number of images, the unusable entries. A preprocessed dataset with no excluded samples is
    counted from its dataset.json, and a task opens only the shards that hold its share."""
    info = load_dataset_info(images, resolution) if (images / "dataset.json").is_file() else None
    if info is None or info.get("exclude"):
        targets, unusable = list_targets(images, resolution) if info is None else (_dataset_targets(images, info), [])
        start, end = task_range(len(targets), task, num_tasks)
        return targets[start:end], start, len(targets), unusable
    total = sum(shard["count"] for shard in info["shards"])
    start, end = task_range(total, task, num_tasks)
    share, first = [], 0
    for shard in info["shards"]:
        if first < end and first + shard["count"] > start:
            targets = _shard_targets(images / shard["name"], set())
            if len(targets) != shard["count"]:
                raise UserError(f"{images / shard['name']}: holds {len(targets)} images where dataset.json says "
                                f"{shard['count']}: preprocess again")
            share += targets[max(start - first, 0):end - first]
        first += shard["count"]
    return share, start, total, []


def _dataset_targets(images: Path, info: dict) -> list[Target]:
    excluded = set(info.get("exclude", []))
    return [t for shard in info["shards"] for t in _shard_targets(images / shard["name"], excluded)]


def _shard_targets(shard: Path, excluded: set[str]) -> list[Target]:
    try:
        with tarfile.open(shard) as tar:
            return [Target(Path(m.name).stem, shard=shard) for m in tar.getmembers()
                    if m.name.endswith(".png") and Path(m.name).stem not in excluded]
    except tarfile.TarError as e:
        raise UserError(f"{shard}: not a readable shard ({e}): preprocess again") from None


def read_targets(images: Path, targets: list[Target], resolution: int) -> Iterator[np.ndarray | str]:
    """uint8 [H, W, 3] of each target at `resolution`, or the reason it cannot be used. Each shard is opened (and
    its member list read) once per call, not once per image."""
    items = [t.item for t in targets if t.item is not None]
    from_folder = read_items([images], items, MAX_FILE_BYTES) if items else iter(())
    opts = ImageOptions(resolution=resolution)
    with contextlib.ExitStack() as stack:
        shards: dict[Path, tarfile.TarFile] = {}
        for target in targets:
            if target.item is not None:
                data = next(from_folder)
            else:
                if target.shard not in shards:
                    shards[target.shard] = stack.enter_context(tarfile.open(target.shard))
                data = shards[target.shard].extractfile(f"{target.name}.png").read()
            if isinstance(data, Unusable):
                yield data.reason
                continue
            try:
                png = process_image(data, opts).png
            except Rejected as e:
                yield str(e)
                continue
            with Image.open(io.BytesIO(png)) as im:
                yield np.asarray(im.convert("RGB"))


def w_path(outdir: Path, name: str) -> Path:
    return outdir / f"{name}.npz"


def save_w(path: Path, w: np.ndarray, steps: int) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, w=w, steps=np.int64(steps))


def load_w(path: Path, num_ws: int, w_dim: int) -> np.ndarray:
    """w [num_ws, w_dim] from a projection file (ours or NVIDIA's projected_w.npz)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (projected w files come from `stylegan project`)")
    try:
        with np.load(path) as data:
            w = data["w"]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise UserError(f"{path}: not a projected w file (.npz with 'w'): {type(e).__name__}") from None
    if w.shape not in ((1, num_ws, w_dim), (num_ws, w_dim)):
        raise UserError(f"{path}: w has shape {list(w.shape)} but the network needs [1, {num_ws}, {w_dim}]: it was "
                        "projected with another network")
    return w.reshape(num_ws, w_dim).astype(np.float32)


def write_rejected(outdir: Path, task: int, rejected: list[dict]) -> None:
    with atomic_path(outdir / f"rejected-{task:04d}.json") as tmp:
        tmp.write_text(json.dumps(rejected, indent=1) + "\n")
