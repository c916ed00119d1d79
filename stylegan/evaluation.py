"""Evaluate a run's snapshots off the training path: newest first, each (snapshot, metric) once across any number
of evaluator jobs, results into `RUN/metric-<name>.jsonl` and TensorBoard scalars at the snapshot's image count.

Only complete snapshots exist under their final names (atomic writes), so a snapshot being written is never read.
A (snapshot, metric) pair is claimed with a lock file that names its owner (stylegan.fileio): a lock whose owner died
on this host is taken over at once, one of another host when older than `stale_s`. Results are keyed by the
snapshot's image count, which its name carries (stylegan.rundir), so every snapshot is scored once. Under torchrun,
rank 0 decides what to evaluate and writes the results; every rank generates and extracts its share of the images.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

from torch import nn
from torch.utils.tensorboard import SummaryWriter

from stylegan.distributed import DistEnv, broadcast_object
from stylegan.errors import UserError
from stylegan.fileio import TMP_PREFIX, held_lock, lock_owner, try_lock
from stylegan.formats.checkpoint import build_generator, load_checkpoint
from stylegan.generate import compile_synthesis
from stylegan.metrics.compute import MetricSpec, compute_metric, detector_for, parse_metric
from stylegan.rundir import RunDir


def wait_for_run(run_dir: Path, poll_s: float) -> None:
    """Return once a training run has written its config: a watcher submitted with its training job may start
    before the trainer has made the run folder."""
    config = RunDir(run_dir).config
    if not config.is_file():
        print(f"{run_dir}: waiting for training to start (for {config.name})", flush=True)
    while not config.is_file():
        time.sleep(poll_s)


def write_metric_events(rundir: RunDir) -> Path:
    """Every metric result of the run so far, in order of image count, as one new TensorBoard event file in the run
    folder, which replaces the evaluators' earlier ones. TensorBoard drops a tag's points from a step on when an
    earlier step follows them (as scoring the newest snapshot first does), so the file is written whole and in order:
    read after older files, it puts back whatever they lost, and the curve is complete whatever order snapshots were
    scored in. Under one lock, so that the newest file always holds every result (results are appended first)."""
    with held_lock(rundir.path / ".events.lock"):
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}events-", dir=rundir.path))
        writer = SummaryWriter(str(tmp))
        for metric in rundir.metric_names():
            for row in sorted(rundir.results(metric), key=lambda r: r["kimg"]):
                writer.add_scalar(f"Metrics/{metric}", row["value"], round(row["kimg"] * 1000))
        writer.close()
        (written,) = tmp.iterdir()
        older = list(rundir.path.glob("events.out.tfevents.*.eval"))
        # a name that sorts after every earlier file, as TensorBoard reads them in name order
        dest = rundir.path / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.eval"
        written.rename(dest)
        tmp.rmdir()
        for path in older:
            path.unlink(missing_ok=True)
    return dest


class RunEvaluator:
    def __init__(self, run_dir: Path, metrics: list[str], data_dir: Path | None, detector_path: str | None,
                 env: DistEnv, batch: int = 64, compile: bool = False, stale_s: float = 3600.0, every: int = 1,
                 latest: bool = False, vgg_path: str | None = None):
        """`every`: score every Nth snapshot, counted from the run's first; `latest`: only the newest one (each new
        one while watching), to keep up with training. `detector_path`, `vgg_path`: the Inception and VGG16 files
        (default: the cache)."""
        if every < 1:
            raise UserError(f"--every {every}: must be 1 (every snapshot) or more")
        self.rundir, self.every, self.latest = RunDir(run_dir), every, latest
        self.config = self.rundir.saved_config()
        data = data_dir or self.config.get("data")
        if not data:
            raise UserError(f"{run_dir}: no config.yaml naming the dataset; pass --data DIR")
        self.data_dir = Path(data)
        self.specs: list[MetricSpec] = [parse_metric(m) for m in metrics]
        self.detectors = detector_for(self.specs, detector_path, vgg_path, env.device)
        self.env, self.batch, self.compile, self.stale_s = env, batch, compile, stale_s
        self.skipped: set[str] = set()  # snapshots that cannot be read, claims that cannot be taken (by file name)
        self.network: tuple[str, nn.Module] | None = None  # (architecture, G_ema on the device)
        self.network_path: Path | None = None  # the snapshot whose weights it holds

    def done(self, metric: str) -> set[int]:
        """Image counts of the snapshots that have a result for `metric` (its first, for precision/recall)."""
        return {round(r["kimg"] * 1000) for r in self.rundir.results(parse_metric(metric).results[0])}

    def chosen(self) -> list[tuple[int, Path]]:
        """The snapshots this evaluator scores (`every`, `latest`), oldest first."""
        snaps = self.rundir.snapshots()[::self.every]
        return snaps[-1:] if self.latest else snaps

    def pending(self) -> list[tuple[int, Path, MetricSpec]]:
        done = {s.name: self.done(s.name) for s in self.specs}
        return [(nimg, p, s) for nimg, p in self.chosen()[::-1] for s in self.specs
                if nimg not in done[s.name] and not {p.name, self.rundir.claim_path(p, s.name).name} & self.skipped]

    def claim(self, lock: Path, nimg: int, metric: str) -> bool:
        if not self.env.is_main:
            return False
        try:
            taken = try_lock(lock, self.stale_s)
            owner = [] if taken or not lock.exists() else lock_owner(lock)
        except UserError as e:  # nobody can hold this lock: skip the pair, go on with the others
            print(f"skipping {lock.name}: {e}", flush=True)
            self.skipped.add(lock.name)
            return False
        if not taken:
            who = " pid ".join(owner[:2]) if owner else "a process that wrote no owner yet"
            print(f"{lock.name}: being evaluated by {who}; left to it", flush=True)
            return False
        if nimg in self.done(metric):
            lock.unlink()  # another evaluator finished it between our listing and our lock
            return False
        return True

    def generator(self, path: Path) -> nn.Module:
        """A snapshot's G_ema on the device. One network per architecture is built (and compiled) and each snapshot's
        weights are copied into it: a compiled network keeps its graphs, where a new network for every snapshot
        compiled again for every snapshot. Every snapshot is still read and checked in full."""
        if path == self.network_path:  # the next metric of the same snapshot
            return self.network[1]
        self.network_path = None
        ckpt = load_checkpoint(path)
        loaded = build_generator(ckpt, "G_ema", path)
        architecture = json.dumps([ckpt.get("family"), ckpt["G_kwargs"]], sort_keys=True, default=str)
        if self.network is None or self.network[0] != architecture:
            G = loaded.eval().to(self.env.device)
            if self.compile:
                compile_synthesis(G)
            self.network = (architecture, G)
        else:
            self.network[1].load_state_dict(loaded.state_dict())
        self.network_path = path
        return self.network[1]

    def evaluate(self, nimg: int, path: Path, spec: MetricSpec) -> dict | None:
        lock = self.rundir.claim_path(path, spec.name)
        if not broadcast_object(self.claim(lock, nimg, spec.name)):
            return None
        try:
            try:
                G = self.generator(path)
            except UserError as e:  # every rank reads the same file, so every rank skips it
                if self.env.is_main:
                    print(f"skipping corrupt snapshot: {e}", flush=True)
                self.skipped.add(path.name)
                return None
            start = time.time()
            detector = self.detectors.get(spec.detector)
            values, _ = compute_metric(G, self.data_dir, spec, detector, self.env.device, self.env.rank,
                                       self.env.world, self.batch, mirror=bool(self.config.get("mirror", False)))
            if not self.env.is_main:
                return None
            for name, value in reversed(values.items()):  # the first result last: done() reads it
                row = {"snapshot": path.name, "kimg": nimg / 1000, "metric": name, "value": value,
                       "seconds": round(time.time() - start, 3), "detector_sha256": detector and detector.sha256}
                self.rundir.append_result(name, row)
                print(f"{path.name} {name} {value:.4f} ({row['seconds']:.1f} s)", flush=True)
            write_metric_events(self.rundir)  # its own files: training and evaluation never write the same file
            return row
        finally:
            if self.env.is_main:
                lock.unlink(missing_ok=True)

    def training_finished(self) -> bool:
        """Whether the newest snapshot is the run's last, by the image count its name carries: no file is read, so
        a corrupt newest snapshot cannot stop the watcher (it is reported and skipped like any other)."""
        snaps = self.rundir.snapshots()
        return bool(snaps) and snaps[-1][0] >= float(self.config.get("kimg", float("inf"))) * 1000

    def run(self, watch: bool, poll_s: float = 30.0) -> None:
        while True:
            for nimg, path, spec in broadcast_object(self.pending()):
                self.evaluate(nimg, path, spec)
            if not watch or broadcast_object(self.training_finished() and not self.pending()):
                break
            time.sleep(poll_s)
