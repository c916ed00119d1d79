"""The image, built here from docker/Dockerfile (a Debian base made with debootstrap, the CPU torch the tests pin),
then every job run inside it, and slurm/train.sh through the podman runtime on the local Slurm cluster.

Needs root with podman, buildah, runc and debootstrap (tests/install-system-packages.sh installs them); skipped with
the reason otherwise. The base image and the suite's image are kept in podman's store, so a second run on the same
machine rebuilds only what changed (CI starts from a fresh machine: it builds both, about 3 minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylegan.rundir import RunDir
from tests.conftest import REPO, TINY_TRAIN
from tests.slurm_cluster import LocalSlurm
from tests.slurm_cluster import missing_requirements as missing_slurm

BASE, IMAGE = "localhost/debian-bookworm", "localhost/stylegan-suite:test"
TORCH = "torch==2.13.0+cpu"  # the build the tests run with (setup.py's range admits it)


def missing() -> str | None:
    tools = [t for t in ("podman", "buildah", "runc", "debootstrap") if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not installed (tests/install-system-packages.sh installs them as root)"
    if os.geteuid() != 0:
        return "building images here needs root (rootless podman was not tried)"
    return None


pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.xdist_group("cluster"),
              pytest.mark.skipif(missing() is not None, reason=str(missing()))]


def podman_env(root: Path) -> dict:
    """The two settings a sandboxed CI machine needs: no default ulimits (setrlimit is refused) and runc (crun fails
    there with "cgroups in hybrid mode not supported")."""
    conf = root / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(env: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", "--runtime", "runc", *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"podman {' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def host_ca_bundle() -> str | None:
    """The CA bundle this machine's pip trusts (it holds a TLS-inspecting proxy's CA here), for pip in the build."""
    candidates = [os.environ.get("PIP_CERT"), "/etc/ssl/certs/ca-certificates.crt"]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("podman")
    env = podman_env(root)
    start = time.time()
    if subprocess.run(["podman", "image", "exists", BASE], env=env).returncode != 0:
        rootfs = root / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], check=True, capture_output=True,
                       timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, env=env, check=True, capture_output=True)
        tar.wait()
    base_s = time.time() - start
    wheels = REPO / "docker" / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
                    TORCH], check=True, capture_output=True, timeout=600)
    cert = host_ca_bundle()
    mount = ["--volume", f"{cert}:/run/host-ca.pem:ro", "--build-arg", "CA_BUNDLE=/run/host-ca.pem"] if cert else []
    start = time.time()
    podman(env, "build", "--network", "host", *mount, "--build-arg", f"BASE={BASE}", "--build-arg", f"TORCH={TORCH}",
           "-f", "docker/Dockerfile", "-t", IMAGE, str(REPO), timeout=1800)
    size = json.loads(podman(env, "image", "inspect", IMAGE).stdout)[0]["Size"]
    print(f"\nbase image {base_s:.0f} s, suite image built in {time.time() - start:.0f} s, {size / 2 ** 30:.2f} GiB")
    return env


def run(env: dict, work: Path, *args: str) -> subprocess.CompletedProcess:
    """A job inside the image, as this user, on a bind-mounted folder, with no network."""
    return podman(env, "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}", "-v",
                  f"{work}:{work}", "-w", str(work), IMAGE, *args)


def test_the_image_lists_every_job_and_runs_them_on_a_mount(image, tmp_path):
    listed = run(image, tmp_path, "--help").stdout
    for name in ("convert", "evaluate", "fetch_weights", "preprocess", "sample", "train"):
        assert name in listed
    assert "usage: stylegan fetch_weights" in run(image, tmp_path, "fetch_weights", "--help").stdout
    run(image, tmp_path, "make_textures", "--count", "64", "--resolution", "32", "--dest", "tex")
    run(image, tmp_path, "preprocess", "--source", "tex", "--dest", "data", "--resolution", "16", "--workers", "1")
    # the presets inside the image, where the README says they are
    plan = run(image, tmp_path, "train", "--config", "/opt/stylegan/configs/textures64.yaml", "data=data",
               "resume=none", "resolution=16", "--dry-run").stdout
    assert "config OK: new run runs/textures64 from random weights" in plan, plan
    run(image, tmp_path, "train", "data=data", "outdir=runs", "run_name=c", *TINY_TRAIN, "batch=8", "kimg=0.04",
        "tick_kimg=0.02", "snap=1")
    snapshot = RunDir(tmp_path / "runs" / "c").latest()
    assert snapshot is not None
    run(image, tmp_path, "evaluate", "--run", "runs/c", "--metrics", "swd")
    assert len(RunDir(tmp_path / "runs" / "c").results("swd")) == len(RunDir(tmp_path / "runs" / "c").snapshots())
    run(image, tmp_path, "sample", "--checkpoint", str(snapshot), "--outdir", "seeds", "--seeds", "0-3",
        "--workers", "1")
    run(image, tmp_path, "sample", "--checkpoint", str(snapshot), "--outdir", "grid", "--seeds", "0-3", "--grid", "2x2")
    pngs = sorted((tmp_path / "seeds").rglob("seed*.png"))
    assert len(pngs) == 4 and np.asarray(Image.open(tmp_path / "grid" / "grid0000.png")).shape == (32, 32, 3)
    for p in [tmp_path / "data" / "dataset.json", snapshot, *pngs]:
        assert p.stat().st_uid == os.getuid()  # the caller's files, not the image user's


@pytest.mark.slurm
@pytest.mark.skipif(missing_slurm() is not None, reason=str(missing_slurm()))
def test_sbatch_train_through_the_podman_runtime(image, tmp_path):
    cluster = LocalSlurm(tmp_path / "slurm")
    cluster.root.mkdir()
    cluster.start()
    try:
        work = tmp_path / "work"
        run(image, tmp_path, "make_textures", "--count", "32", "--resolution", "16", "--dest", "work/tex")
        run(image, tmp_path, "preprocess", "--source", "work/tex", "--dest", "work/data", "--resolution", "16",
            "--workers", "1")
        env = {"CONTAINER_RUNTIME": "podman", "CONTAINER_IMAGE": IMAGE, "PODMAN_OPTIONS": "--runtime runc",
               "STYLEGAN_BIND": str(work), "CONTAINERS_CONF": image["CONTAINERS_CONF"], "PROCS_PER_NODE": "2",
               "OMP_NUM_THREADS": "1"}
        job = cluster.sbatch("--cpus-per-task=2", "--job-name=pod", str(REPO / "slurm" / "train.sh"), "data=data",
                             "outdir=runs", *TINY_TRAIN, "batch=8", "kimg=0.1", "tick_kimg=0.05", cwd=work, env=env)
        states = cluster.wait_job(job, timeout=600)
        log = (work / f"pod-{job}.out").read_text()
        assert states == ["COMPLETED"], log[-4000:]
        assert "training pod: 2 process(es)" in log and "training complete" in log
        snapshot = RunDir(work / "runs" / "pod").latest()
        assert snapshot is not None and snapshot.stat().st_uid == os.getuid()
    finally:
        cluster.stop()
