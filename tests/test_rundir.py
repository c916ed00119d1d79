"""The run folder (snapshot names, lookup, retention, refusing another run's folder), file modes under the umask,
and lock files with owners."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from stylegan.errors import UserError
from stylegan.fileio import held_lock, try_lock, write_text_atomic
from stylegan.formats.checkpoint import save_checkpoint
from stylegan.rundir import RunDir, snapshot_nimg
from tests.conftest import REPO


def test_snapshot_names_are_unique_per_image_count_and_sort_in_training_order(tmp_path):
    run = RunDir(tmp_path)
    # a tick under 1 kimg and a signal-time snapshot: under whole-kimg names the later ones replaced the earlier
    for nimg in (0, 640, 1000, 1280, 12_000, 999):
        save_checkpoint(run.snapshot(nimg), {"format": 1, "nimg": nimg})
    (run.checkpoints / "network-snapshot-000040.pt").write_bytes(b"x")  # the old naming: still found
    (run.checkpoints / ".tmp-ab12-network-snapshot-000400.000.pt").write_bytes(b"partial")
    (run.checkpoints / "network-snapshot-latest.pt").write_bytes(b"x")
    assert [n for n, _ in run.snapshots()] == [0, 640, 999, 1000, 1280, 12_000, 40_000]
    assert sorted(p.name for _, p in run.snapshots()) == [p.name for _, p in run.snapshots()]
    assert run.latest().name == "network-snapshot-000040.pt"
    assert run.snapshot(1280).name == "network-snapshot-000001.280.pt" and snapshot_nimg(run.snapshot(1280)) == 1280
    assert run.fakes(1280).name == "fakes000001.280.png"


def test_retention_keeps_the_newest(tmp_path):
    run = RunDir(tmp_path)
    for nimg in range(0, 5000, 1000):
        save_checkpoint(run.snapshot(nimg), {"format": 1})
    assert run.prune(0) == []
    removed = run.prune(2)
    assert [snapshot_nimg(p) for p in removed] == [0, 1000, 2000]
    assert [n for n, _ in run.snapshots()] == [3000, 4000]


def test_a_new_run_refuses_another_runs_folder(tmp_path):
    run = RunDir(tmp_path / "r")
    run.check_new_run()  # no folder yet
    run.checkpoints.mkdir(parents=True)
    write_text_atomic(run.config, "batch: 8\n")
    run.log.write_text("training r\n")
    run.check_new_run()  # what a start that failed before its first tick leaves
    run.stats.write_text("{}\n")
    run.check_new_run()  # ticks but no snapshot: a start stopped in its first minutes restarts
    (run.path / "metric-swd.jsonl").write_text("{}\n")
    (run.path / "fakes000004.000.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"holds another run's files \(fakes000004.000.png, metric-swd.jsonl\)"):
        run.check_new_run()


WRITE_EVERYTHING = """
import os, sys
os.umask(int(sys.argv[2], 8))
from pathlib import Path
import numpy as np, torch
from stylegan.formats.checkpoint import save_checkpoint
from stylegan.fileio import try_lock, write_text_atomic
from stylegan.imagefiles import save_png
root = Path(sys.argv[1])
save_checkpoint(root / "checkpoints" / "net.pt", {"format": 1})
write_text_atomic(root / "data" / "dataset.json", "{}")
save_png(np.zeros((4, 4, 3), np.uint8), root / "samples" / "0000" / "seed0000.png", durable=False)
try_lock(root / ".lock-x", 60)
"""


@pytest.mark.parametrize("umask,mode", [("022", 0o644), ("002", 0o664), ("077", 0o600)])
def test_files_and_folders_follow_the_umask(tmp_path, umask, mode):
    """mkstemp made every file 0600 whatever the umask: a colleague could not read shards or snapshots."""
    subprocess.run([sys.executable, "-c", WRITE_EVERYTHING, str(tmp_path), umask], cwd=REPO, check=True)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 4
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p
    for d in (p for p in tmp_path.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~int(umask, 8), d


def test_a_lock_of_a_dead_process_is_taken_over_at_once(tmp_path):
    lock = tmp_path / ".lock-snap-swd"
    child = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from stylegan.fileio import "
                            f"try_lock; sys.exit(0 if try_lock(Path({str(lock)!r}), 3600) else 1)"], cwd=REPO)
    assert child.returncode == 0 and lock.is_file()  # its owner has exited: the lock is stale whatever its age
    host, pid = lock.read_text().split()[:2]
    assert host == os.uname().nodename and int(pid) != os.getpid()
    assert try_lock(lock, 3600)
    assert not try_lock(lock, 3600)  # held by a live process (this one)
    lock.unlink()


def test_a_lock_of_another_host_expires_by_age(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text("elsewhere 1234 5678 0\n")
    assert not try_lock(lock, 3600)
    old = time.time() - 7200
    os.utime(lock, (old, old))
    assert try_lock(lock, 3600)


def test_held_lock_times_out_with_the_owner_named(tmp_path):
    lock = tmp_path / ".lock"
    assert try_lock(lock, 60)
    with pytest.raises(UserError, match="held for over 0 s by a live process"), held_lock(lock, wait_s=0.2):
        pass
