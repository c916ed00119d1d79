"""The demo end to end with a reduced budget, and the procedural texture generator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegan.data.textures import texture
from stylegan.rundir import RunDir
from tests.conftest import REPO


def test_textures_are_deterministic_and_varied(tmp_path):
    for d in ("a", "b"):
        subprocess.run([sys.executable, "-m", "jobs.make_textures", "--count", "100", "--resolution", "32",
                        "--dest", str(tmp_path / d)], cwd=REPO, check=True, capture_output=True)
    files = sorted((tmp_path / "a").glob("*.png"))
    assert len(files) == 100
    assert all(f.read_bytes() == (tmp_path / "b" / f.name).read_bytes() for f in files)  # same seed, same bytes
    pixels = {np.asarray(Image.open(f)).tobytes() for f in files}
    assert len(pixels) == 100  # no two identical
    assert not np.array_equal(texture(0, 5, 32), texture(1, 5, 32))


@pytest.mark.slow
def test_short_demo_produces_every_output_and_learns(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "jobs.demo", "--outdir", str(out), "--kimg", "2", "--count",
                             "600"], cwd=REPO, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "STYLEGAN_CACHE": str(tmp_path / "no-detector")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("make textures", "preprocess (2 tasks)", "train 2 kimg", "evaluate snapshots (swd)",
                  "seed grid", "100 seeds", "latent walk"):
        assert f"{stage}" in result.stdout
    assert f"tensorboard --logdir {out / 'runs'}" in result.stdout
    run = out / "runs" / "demo"
    assert json.loads((out / "data" / "dataset.json").read_text())["total_images"] == 600
    assert len(list((out / "data").glob("shard-0001-*.tar"))) >= 1  # the second array task wrote shards
    rows = sorted((json.loads(x) for x in (run / "metric-swd.jsonl").read_text().splitlines()),
                  key=lambda r: r["kimg"])
    snapshots = RunDir(run).snapshots()
    assert [r["snapshot"] for r in rows] == [p.name for _, p in snapshots] and len(snapshots) == 2  # every one once
    assert f"(progress: {run / 'log.txt'})" in result.stdout and "    tick 1 kimg" in result.stdout  # live progress
    assert rows[-1]["value"] < 0.85 * rows[0]["value"], rows  # it learns: SWD clearly falls from the start
    assert len(list((out / "samples" / "seeds").rglob("seed*.png"))) == 100
    assert Image.open(out / "samples" / "grid" / "grid0000.png").size[0] == 8 * 32
    assert Image.open(out / "samples" / "walk" / "walk.gif").n_frames == 4 * 8 + 1
    assert (run / "stats.jsonl").is_file() and list(run.glob("events.out.tfevents.*"))


def process_group(pgid: int) -> list[int]:
    """The live processes of a process group (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_ctrl_c_stops_the_demo_and_every_process_it_started(tmp_path):
    """A Ctrl-C reaches the whole foreground process group. The demo alone acts on it: submitit's local controller
    would requeue a stopped training and train on after the demo had gone. Training writes its snapshot, nothing is
    left running, and one line says what was kept."""
    out = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "jobs.demo", "--outdir", str(out), "--kimg", "50", "--count",
                             "300"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out / "runs" / "demo" / "log.txt"
    deadline = time.time() + 300
    while not (log.is_file() and "training demo:" in log.read_text()):
        assert demo.poll() is None and time.time() < deadline, demo.communicate()
        time.sleep(0.5)
    time.sleep(3)
    os.killpg(demo.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    stdout, stderr = demo.communicate(timeout=300)
    assert demo.returncode == 128 + signal.SIGINT, stdout[-2000:] + stderr[-2000:]
    assert stdout.strip().splitlines()[-1].startswith("demo: stopped on SIGINT during 'train 50 kimg"), stdout
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert process_group(demo.pid) == [], "a process of the demo outlived it"
    assert "stopping on signal 15" in log.read_text() and RunDir(out / "runs" / "demo").latest() is not None
