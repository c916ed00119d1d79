"""Evaluate a run's snapshots off the training path: newest first, each (snapshot, metric) once across any number
of evaluator jobs, results into `RUN/metric-<name>.jsonl` and TensorBoard scalars at the snapshot's kimg.

Only complete snapshots exist under their final names (atomic writes), so a snapshot being written is never read.
A (snapshot, metric) pair is claimed with a lock file created with O_EXCL; a lock older than `stale_s` (a dead
evaluator) is taken over. Under torchrun, rank 0 decides what to evaluate and writes the results; every rank
generates and extracts its share of the images.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import yaml
from torch.utils.tensorboard import SummaryWriter

from stylegan.checkpoint import build_generator, list_snapshots, load_checkpoint
from stylegan.distributed import DistEnv, broadcast_object
from stylegan.errors import UserError
from stylegan.fileio import write_text_atomic
from stylegan.metrics.compute import MetricSpec, compute_metric, detector_for, parse_metric


def try_lock(path: Path, stale_s: float) -> bool:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > stale_s:
                    path.unlink()
                    continue
            return False
        os.write(fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        os.close(fd)
        return True
    return False


@contextlib.contextmanager
def held_lock(path: Path, stale_s: float = 60.0, wait_s: float = 30.0):
    """Block until the lock is ours (for short read-modify-write sections), then release it."""
    deadline = time.time() + wait_s
    while not try_lock(path, stale_s):
        if time.time() > deadline:
            raise UserError(f"{path}: lock held for over {wait_s:.0f} s; remove it if no evaluator is running")
        time.sleep(0.05)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def results(run_dir: Path, metric: str) -> list[dict]:
    path = run_dir / f"metric-{metric}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def append_result(run_dir: Path, metric: str, row: dict) -> None:
    path = run_dir / f"metric-{metric}.jsonl"
    with held_lock(path.with_name(path.name + ".lock")):
        old = path.read_text() if path.is_file() else ""
        write_text_atomic(path, old + json.dumps(row) + "\n")


class RunEvaluator:
    def __init__(self, run_dir: Path, metrics: list[str], data_dir: Path | None, detector_path: str | None,
                 env: DistEnv, batch: int = 64, compile: bool = False, stale_s: float = 3600.0):
        self.run_dir = run_dir
        config_path = run_dir / "config.yaml"
        self.config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        data = data_dir or self.config.get("data")
        if not data:
            raise UserError(f"{run_dir}: no config.yaml naming the dataset; pass --data DIR")
        self.data_dir = Path(data)
        self.specs: list[MetricSpec] = [parse_metric(m) for m in metrics]
        self.detector = detector_for(self.specs, detector_path, env.device)
        self.env, self.batch, self.compile, self.stale_s = env, batch, compile, stale_s
        self.skipped: set[str] = set()
        self.writer: SummaryWriter | None = None

    def pending(self) -> list[tuple[int, Path, MetricSpec]]:
        done = {(r["snapshot"], s.name) for s in self.specs for r in results(self.run_dir, s.name)}
        snaps = list_snapshots(self.run_dir / "checkpoints")[::-1]
        return [(kimg, p, s) for kimg, p in snaps for s in self.specs
                if (p.name, s.name) not in done and p.name not in self.skipped]

    def claim(self, lock: Path, snapshot: str, metric: str) -> bool:
        if not self.env.is_main:
            return False
        if not try_lock(lock, self.stale_s):
            return False
        if any(r["snapshot"] == snapshot for r in results(self.run_dir, metric)):
            lock.unlink()  # another evaluator finished it between our listing and our lock
            return False
        return True

    def evaluate(self, kimg: int, path: Path, spec: MetricSpec) -> dict | None:
        lock = self.run_dir / f".lock-{path.stem}-{spec.name}"
        if not broadcast_object(self.claim(lock, path.name, spec.name)):
            return None
        try:
            try:
                ckpt = load_checkpoint(path)
                G = build_generator(ckpt, "G_ema", path).eval().to(self.env.device)
                if self.compile:
                    G.synthesis.compile(dynamic=False)
            except UserError as e:  # every rank reads the same file, so every rank skips it
                if self.env.is_main:
                    print(f"skipping corrupt snapshot: {e}", flush=True)
                self.skipped.add(path.name)
                return None
            start = time.time()
            value, _ = compute_metric(G, self.data_dir, spec, self.detector, self.env.device, self.env.rank,
                                      self.env.world, self.batch)
            if not self.env.is_main:
                return None
            nimg = ckpt.get("progress", {}).get("cur_nimg", kimg * 1000)
            row = {"snapshot": path.name, "kimg": nimg / 1000, "metric": spec.name, "value": value,
                   "seconds": round(time.time() - start, 3),
                   "detector_sha256": self.detector.sha256 if spec.kind != "swd" else None}
            append_result(self.run_dir, spec.name, row)
            if self.writer is None:  # its own event file: training and evaluation never write the same file
                self.writer = SummaryWriter(str(self.run_dir), filename_suffix=".eval")
            self.writer.add_scalar(f"Metrics/{spec.name}", value, nimg // 1000)
            self.writer.flush()
            print(f"{path.name} {spec.name} {value:.4f} ({row['seconds']:.1f} s)", flush=True)
            return row
        finally:
            if self.env.is_main:
                lock.unlink(missing_ok=True)

    def training_finished(self) -> bool:
        snaps = list_snapshots(self.run_dir / "checkpoints")
        total = float(self.config.get("kimg", float("inf"))) * 1000
        return bool(snaps) and load_checkpoint(snaps[-1][1]).get("progress", {}).get("cur_nimg", 0) >= total

    def run(self, watch: bool, poll_s: float = 30.0) -> None:
        while True:
            for kimg, path, spec in broadcast_object(self.pending()):
                self.evaluate(kimg, path, spec)
            if not watch or broadcast_object(self.training_finished() and not self.pending()):
                break
            time.sleep(poll_s)
        if self.writer is not None:
            self.writer.close()
