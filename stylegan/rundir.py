"""A training run's folder: the one place that knows where each of its files lives.

    <outdir>/<run_name>/
        config.yaml                   the resolved training config
        log.txt, stats.jsonl          progress lines and per-tick statistics
        events.out.tfevents.*         TensorBoard (training and evaluation write separate files)
        fakes<stamp>.png              the fakes grid of each snapshot
        checkpoints/network-snapshot-<stamp>.pt
        metric-<name>.jsonl           evaluation results, one row per (snapshot, metric)
        .owner                        the training that runs in the folder now (RunOwner)
        .lock-<snapshot>-<metric>     an evaluator's claim (stylegan.fileio locks)
A stamp is the image count as kimg with three decimals (`001234.567`): unique per snapshot and sorting in training
order. Snapshots written before stamps had decimals (`network-snapshot-001234.pt`) are still found.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import socket
import threading
from pathlib import Path

import yaml

from stylegan.errors import UserError
from stylegan.fileio import TMP_PREFIX, held_lock, lock_is_stale, lock_owner, try_lock, write_text_atomic

SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d{6,})(?:\.(\d{3}))?\.pt$")


def stamp(nimg: int) -> str:
    return f"{nimg // 1000:06d}.{nimg % 1000:03d}"


def snapshot_nimg(path: str | Path) -> int | None:
    """The image count in a snapshot's file name; None when the name is not a snapshot's."""
    m = SNAPSHOT_RE.match(Path(path).name)
    return int(m.group(1)) * 1000 + int(m.group(2) or 0) if m else None


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; none when it does not exist yet."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.config = self.path / "config.yaml"
        self.log = self.path / "log.txt"
        self.stats = self.path / "stats.jsonl"
        self.reals = self.path / "reals.png"

    def __str__(self) -> str:
        return str(self.path)

    def snapshot(self, nimg: int) -> Path:
        return self.checkpoints / f"network-snapshot-{stamp(nimg)}.pt"

    def fakes(self, nimg: int) -> Path:
        return self.path / f"fakes{stamp(nimg)}.png"

    def snapshots(self) -> list[tuple[int, Path]]:
        """Complete snapshots as (image count, path), oldest first. Unfinished writes have temp names, which never
        match, so they are never listed."""
        if not self.checkpoints.is_dir():
            return []
        found = [(n, p) for p in self.checkpoints.iterdir() if (n := snapshot_nimg(p)) is not None]
        return sorted(found)

    def latest(self) -> Path | None:
        snaps = self.snapshots()
        return snaps[-1][1] if snaps else None

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the newest `keep` snapshots (keep <= 0: keep all). Returns what was deleted."""
        old = [p for _, p in self.snapshots()[:-keep]] if keep > 0 else []
        for p in old:
            p.unlink(missing_ok=True)
        return old

    def saved_config(self) -> dict:
        return yaml.safe_load(self.config.read_text()) or {} if self.config.is_file() else {}

    def metric_file(self, metric: str) -> Path:
        return self.path / f"metric-{metric}.jsonl"

    def metric_names(self) -> list[str]:
        """The metrics the run has results for."""
        return sorted(p.name[len("metric-"):-len(".jsonl")] for p in self.path.glob("metric-*.jsonl"))

    def results(self, metric: str) -> list[dict]:
        """The evaluator's rows for `metric`, in the order they were written."""
        return read_rows(self.metric_file(metric))

    def ticks(self) -> list[dict]:
        """The trainer's statistics, one row per tick, in the order they were written."""
        return read_rows(self.stats)

    def append_result(self, metric: str, row: dict) -> None:
        path = self.metric_file(metric)
        with held_lock(path.with_name(path.name + ".lock")):
            old = path.read_text() if path.is_file() else ""
            write_text_atomic(path, old + json.dumps(row) + "\n")

    def claim_path(self, snapshot: Path, metric: str) -> Path:
        return self.path / f".lock-{snapshot.stem}-{metric}"

    def check_new_run(self) -> None:
        """A run without snapshots starts only in a folder that holds nothing but what a run writes before its
        first snapshot (a start that was stopped or failed): never over another run's fakes, metrics or other
        files."""
        startup = ("config.yaml", "log.txt", "stats.jsonl", "checkpoints", "events.out.tfevents", ".owner", "reals.png",
                   TMP_PREFIX)
        if not self.path.is_dir():
            return
        other = sorted(p.name for p in self.path.iterdir() if not p.name.startswith(startup))
        if other:
            raise UserError(f"{self.path}: holds another run's files ({', '.join(other[:4])}) but no snapshot to "
                            "resume from; choose another run_name or outdir, or delete that folder to start over")


class RunOwner:
    """One training at a time per run folder: its main process holds `.owner` (a stylegan.fileio lock naming host,
    pid and Slurm job) and touches it every HEARTBEAT_S. A claim is taken over when its process is gone: at once on
    the same host or by a later incarnation of the same Slurm job (a requeue), after STALE_S without a heartbeat from
    another host."""

    HEARTBEAT_S = 60.0
    STALE_S = 300.0

    def __init__(self, rundir: RunDir):
        self.path = rundir.path / ".owner"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ours(self) -> bool:
        """The claim was made by this process (an earlier trainer of it) or this Slurm job (an earlier incarnation:
        Slurm ends one before it requeues the job)."""
        job = os.environ.get("SLURM_JOB_ID")
        with contextlib.suppress(OSError, UserError):
            words = lock_owner(self.path)
            return words[:2] == [socket.gethostname(), str(os.getpid())] or bool(job) and words[4:5] == [f"job={job}"]
        return False

    def check(self) -> None:
        """A UserError naming the live owner, if another training holds the folder."""
        if not self.path.exists() or self._ours():
            return
        if lock_is_stale(self.path, self.STALE_S):
            return
        words = lock_owner(self.path)
        if not words:
            who = "a training whose claim is being written"
        else:
            since = datetime.datetime.fromtimestamp(int(words[3])).strftime("%Y-%m-%d %H:%M") if \
                words[3:4] and words[3].isdigit() else "?"
            job = f", Slurm job {words[4][4:]}" if words[4:5] and words[4] != "job=-" else ""
            who = f"a training on {words[0]} (pid {words[1]}, since {since}{job})"
        raise UserError(f"{self.path.parent}: in use by {who}; wait for it to end, or choose another run_name or "
                        f"outdir (a claim whose process is gone is taken over: at once on the same host, after "
                        f"{self.STALE_S / 60:.0f} minutes on another)")

    def acquire(self) -> RunOwner:
        self.check()
        if self._ours():
            self.path.unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not try_lock(self.path, self.STALE_S):
            self.check()  # another training took it between the check and the lock: name it
            raise UserError(f"{self.path.parent}: in use by another training; wait for it to end")
        self._thread = threading.Thread(target=self._heartbeat, name="run-owner", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        with contextlib.suppress(OSError, UserError):
            if lock_owner(self.path)[1:2] == [str(os.getpid())]:
                self.path.unlink()


def network_path(path: str | Path, what: str) -> Path:
    """A network file, or a run folder standing for its newest snapshot; `what` names the flag in errors."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (newest := RunDir(path).latest()) is None:
        raise UserError(f"{path}: a folder with no snapshot in {path / 'checkpoints'}; pass a network file to "
                        f"{what} (.pt, .pkl or .safetensors) or a run folder that has snapshots")
    return newest
