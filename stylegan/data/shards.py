"""Write a folder of user images as WebDataset shards, one Slurm array task at a time, resumably.

Layout of DIR:
    shard-<task:04d>-<n:05d>.tar   samples `<key>.png` (RGB, R x R) + `<key>.json` (source, original size, label)
    manifest-<task:04d>.json       the task's settings fingerprint and its completed shards (count, sha256)
    rejected-<task:04d>.jsonl      inputs the task skipped, with the reason
    dataset.json                   written once every task is complete: totals, shards, label count
Inputs are listed in one sorted order, put in a seeded random order (`shuffle_seed`) and split into K contiguous
ranges, so sample keys (the global index) and shard contents do not depend on which task wrote them, and every
shard is a random sample of the dataset: training reads a few shards at a time, so shards in file-name order would
give batches of one class wherever names group the classes (folders per class, camera shoots).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import random
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stylegan.cluster import leave_interrupts_to_parent, task_range
from stylegan.data.images import ImageOptions, Processed, Rejected, process_image
from stylegan.data.sources import MAX_FILE_BYTES, InputItem, Unusable, list_inputs, read_items
from stylegan.errors import UserError
from stylegan.fileio import atomic_write, output_dir, sha256_file, write_text_atomic
from stylegan.progress import Progress

DATASET_FORMAT = 1


@dataclass
class PreprocessConfig:
    sources: list[Path]
    dest: Path
    image: ImageOptions
    shard_size: int = 1000
    labels_file: Path | None = None
    task: int = 0
    num_tasks: int = 1
    workers: int = 1
    dedup: bool = False
    shuffle_seed: int = 0
    labels: dict[str, int] = field(default_factory=dict, repr=False)
    max_file_bytes: int = MAX_FILE_BYTES  # larger inputs (or archive members) are rejected, never read whole


def load_labels(path: Path) -> dict[str, int]:
    """NVIDIA's dataset.json form {"labels": [[name, label], ...]} or a plain {name: label} mapping."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: --labels file does not exist") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: --labels is not valid JSON ({e})") from None
    pairs = data["labels"] if isinstance(data, dict) and "labels" in data else data
    pairs = pairs.items() if isinstance(pairs, dict) else pairs
    try:
        labels = {str(name): int(label) for name, label in pairs}
    except (TypeError, ValueError):
        raise UserError(f"{path}: --labels must map image paths to integer labels") from None
    if any(v < 0 for v in labels.values()):
        raise UserError(f"{path}: labels must be non-negative integers")
    return labels


def _fingerprint(cfg: PreprocessConfig, items: list[InputItem]) -> str:
    """Identifies the inputs and every setting that changes the shards: a rerun must match it to resume."""
    h = hashlib.sha256()
    h.update(json.dumps({"image": asdict(cfg.image), "shard_size": cfg.shard_size, "num_tasks": cfg.num_tasks,
                         "dedup": cfg.dedup, "labels": sorted(cfg.labels.items()), "shuffle_seed": cfg.shuffle_seed,
                         "sources": [str(s.resolve()) for s in cfg.sources]}, sort_keys=True).encode())
    for item in items:
        h.update(f"{item.source}:{item.name}\n".encode())
    return h.hexdigest()


def _process(args: tuple[bytes | Unusable, ImageOptions]) -> Processed | str:
    data, opts = args
    if isinstance(data, Unusable):
        return data.reason
    try:
        return process_image(data, opts)
    except Rejected as e:
        return str(e)


def _manifest_path(dest: Path, task: int) -> Path:
    return dest / f"manifest-{task:04d}.json"


def _load_manifest(cfg: PreprocessConfig, fingerprint: str) -> dict:
    path = _manifest_path(cfg.dest, cfg.task)
    fresh = {"fingerprint": fingerprint, "task": cfg.task, "num_tasks": cfg.num_tasks, "complete": False,
             "resolution": cfg.image.resolution, "dedup": cfg.dedup, "shuffle_seed": cfg.shuffle_seed,
             "label_count": max(cfg.labels.values()) + 1 if cfg.labels else 0, "shards": {}}
    if not path.exists():
        return fresh
    manifest = json.loads(path.read_text())
    if manifest.get("fingerprint") != fingerprint:
        raise UserError(f"{path}: {cfg.dest} holds shards written from other inputs or settings; use an empty "
                        "--dest or rerun with the original arguments")
    return manifest


def _shard_is_intact(dest: Path, entry: dict) -> bool:
    path = dest / entry["name"]
    return path.is_file() and sha256_file(path) == entry["sha256"]


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A read-only member `name` holding `data`."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _write_shard(cfg: PreprocessConfig, name: str, first: int, items: list[InputItem],
                 results: Iterator[Processed | str], progress: Progress) -> dict:
    rejected, samples = [], []
    path = cfg.dest / name
    with atomic_write(path) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for offset, (item, result) in enumerate(zip(items, results, strict=True)):
            source = item.describe(cfg.sources)
            progress.update()
            label = cfg.labels.get(item.name) if cfg.labels else None
            if isinstance(result, str):
                rejected.append({"source": source, "reason": result})
                continue
            if cfg.labels and label is None:
                rejected.append({"source": source, "reason": f"no label in {cfg.labels_file}"})
                continue
            key = f"{first + offset:09d}"
            meta = {"source": source, "original_size": list(result.original_size), "label": label,
                    "pixel_sha256": result.pixel_sha256}
            add_tar_member(tar, f"{key}.png", result.png)
            add_tar_member(tar, f"{key}.json", json.dumps(meta).encode())
            samples.append([key, result.pixel_sha256])
    return {"name": name, "count": len(samples), "sha256": sha256_file(path), "bytes": path.stat().st_size,
            "samples": samples, "rejected": rejected}


def run_task(cfg: PreprocessConfig) -> dict:
    """Write (or finish) this task's shards; return its manifest. Completed, intact shards are skipped."""
    if not 0 <= cfg.task < cfg.num_tasks:
        raise UserError(f"--task-index {cfg.task} is outside 0..{cfg.num_tasks - 1} (--num-tasks {cfg.num_tasks})")
    output_dir(cfg.dest, "--dest")
    items, unusable = list_inputs(cfg.sources)
    if not items:
        raise UserError(f"no usable image files in {', '.join(map(str, cfg.sources))}"
                        + (f" ({len(unusable)} unusable, e.g. {unusable[0].where}: {unusable[0].reason})"
                           if unusable else ""))
    random.Random(cfg.shuffle_seed).shuffle(items)
    fingerprint = _fingerprint(cfg, items)
    manifest = _load_manifest(cfg, fingerprint)
    start, end = task_range(len(items), cfg.task, cfg.num_tasks)
    chunks = [(f"shard-{cfg.task:04d}-{n:05d}.tar", s, items[s:min(s + cfg.shard_size, end)])
              for n, s in enumerate(range(start, end, cfg.shard_size))]
    todo = [c for c in chunks if not (c[0] in manifest["shards"] and
                                      _shard_is_intact(cfg.dest, manifest["shards"][c[0]]))]
    progress = Progress(sum(len(c[2]) for c in todo), f"preprocess task {cfg.task}/{cfg.num_tasks}")
    print(f"task {cfg.task}/{cfg.num_tasks}: inputs {start}..{end - 1} of {len(items)}, "
          f"{len(chunks) - len(todo)} of {len(chunks)} shards already complete", flush=True)
    pool = multiprocessing.get_context("spawn").Pool(cfg.workers, initializer=leave_interrupts_to_parent) \
        if cfg.workers > 1 and todo else None
    try:
        for name, first, chunk in todo:
            jobs = ((data, cfg.image) for data in read_items(cfg.sources, chunk, cfg.max_file_bytes))
            results = pool.imap(_process, jobs, chunksize=4) if pool else map(_process, jobs)
            manifest["shards"][name] = _write_shard(cfg, name, first, chunk, results, progress)
            write_text_atomic(_manifest_path(cfg.dest, cfg.task), json.dumps(manifest))
    finally:
        if pool:  # all results are consumed unless an error or a signal stopped the loop: nothing left to wait for
            pool.terminate()
            pool.join()
    progress.close()
    # the listing is the same in every task: task 0 reports what could not even be listed
    manifest["unlisted"] = [{"source": u.where, "reason": u.reason} for u in unusable] if cfg.task == 0 else []
    rejected = manifest["unlisted"] + [r for c in chunks for r in manifest["shards"][c[0]]["rejected"]]
    with atomic_write(cfg.dest / f"rejected-{cfg.task:04d}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rejected)
    manifest["complete"] = True
    write_text_atomic(_manifest_path(cfg.dest, cfg.task), json.dumps(manifest))
    written = sum(manifest["shards"][c[0]]["count"] for c in chunks)
    print(f"task {cfg.task}/{cfg.num_tasks}: {written} images in {len(chunks)} shards, {len(rejected)} rejected",
          flush=True)
    return manifest


def finalize(dest: Path, required: bool = False) -> dict | None:
    """Write dataset.json once all K tasks are complete. Returns it, or None (required=False) if tasks remain."""
    manifests = [json.loads(p.read_text()) for p in sorted(dest.glob("manifest-*.json"))]
    if not manifests:
        raise UserError(f"{dest}: no manifest-*.json found; run the preprocess tasks first")
    num_tasks = manifests[0]["num_tasks"]
    done = {m["task"] for m in manifests if m["complete"] and m["fingerprint"] == manifests[0]["fingerprint"]}
    missing = sorted(set(range(num_tasks)) - done)
    if missing or len(manifests) != num_tasks:
        if required:
            raise UserError(f"{dest}: tasks {missing} of {num_tasks} are not complete (or manifests of another "
                            "configuration are present); rerun those tasks before --finalize")
        return None
    shards = [s for m in sorted(manifests, key=lambda m: m["task"]) for s in
              sorted(m["shards"].values(), key=lambda s: s["name"]) if s["count"] > 0]
    seen: dict[str, str] = {}
    duplicates = []
    for shard in shards:
        for key, pixel_sha in shard["samples"]:
            if pixel_sha in seen:
                duplicates.append(key)
            else:
                seen[pixel_sha] = key
    info = {
        "format": DATASET_FORMAT,
        "resolution": manifests[0]["resolution"],
        "channels": 3,
        "total_images": sum(s["count"] for s in shards),
        "label_count": manifests[0]["label_count"],
        "rejected": sum(len(s["rejected"]) for m in manifests for s in m["shards"].values())
        + sum(len(m.get("unlisted", [])) for m in manifests),
        "num_tasks": num_tasks,
        "shards": [{"name": s["name"], "count": s["count"], "sha256": s["sha256"], "bytes": s.get("bytes")}
                   for s in shards],
        "exclude": duplicates if manifests[0]["dedup"] else [],
    }
    info["total_images"] -= len(info["exclude"])
    if manifests[0].get("shuffle_seed") is not None:  # absent: tasks of an older preprocess, in file-name order
        info["shuffle_seed"] = manifests[0]["shuffle_seed"]
    write_text_atomic(dest / "dataset.json", json.dumps(info, indent=1) + "\n")
    return info
