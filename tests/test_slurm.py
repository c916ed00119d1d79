"""The launch layer on a real Slurm cluster (two simulated nodes on this host, tests/slurm_cluster.py): the sbatch
scripts and jobs.submit, with arrays, multi-node torchrun, preemption + requeue and job dependencies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.nvidia_pickles import write_stylegan1_pickle
from stylegan.rundir import RunDir
from tests.conftest import REPO, TINY_SG1, TINY_TRAIN, sg1_networks, write_tiny_network
from tests.image_folder import BAD, make_image_folder
from tests.slurm_cluster import LocalSlurm, missing_requirements

pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("cluster"),
              pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))]

# No STYLEGAN_HOME: the scripts find the suite from the path they were submitted as.
JOB_ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TINY = [*TINY_TRAIN, "batch=8", "mirror=false", "tick_kimg=0.2", "snap=1000"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> LocalSlurm:
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


def script(name: str) -> str:
    return str(REPO / "slurm" / f"{name}.sh")


def read_logs(folder: Path, pattern: str) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.glob(pattern)))


def sbatch_and_wait(slurm: LocalSlurm, cwd: Path, *args: str, env: dict | None = None,
                    log_pattern: str = "*.out") -> str:
    job = slurm.sbatch(*args, cwd=cwd, env={**JOB_ENV, **(env or {})})
    states = slurm.wait_job(job)
    logs = read_logs(cwd, log_pattern)
    assert set(states) == {"COMPLETED"}, f"job {job}: {states}\n{logs[-4000:]}"
    return logs


@pytest.fixture(scope="module")
def dataset(slurm, work) -> Path:
    """`sbatch slurm/preprocess.sh` as a 2-task array; the last task writes dataset.json."""
    count = make_image_folder(work / "raw", count=40)
    # no --cpus-per-task: the scripts ask for nothing a small node lacks
    logs = sbatch_and_wait(slurm, work, "--array=0-1", script("preprocess"), "--source", "raw",
                           "--dest", "data", "--resolution", "16", "--min-size", "8", "--shard-size", "8",
                           log_pattern="preprocess-*.out")
    assert re.search(r"preprocess task 1/2: \d+/\d+ img \([\d.]+ img/s, \d+s so far\)", logs), logs  # progress
    info = json.loads((work / "data" / "dataset.json").read_text())
    assert info["total_images"] == count and info["rejected"] == len(BAD) and info["num_tasks"] == 2
    assert {s["name"][:10] for s in info["shards"]} == {"shard-0000", "shard-0001"}
    rejected = [line for task in (0, 1) for line in (work / "data" / f"rejected-{task:04d}.jsonl").read_text()
                .splitlines()]
    assert len(rejected) == len(BAD)
    return work / "data"


def test_train_two_nodes(slurm, dataset, work):
    """One torchrun agent per node (srun), joined by c10d rendezvous: 2 ranks on 2 nodes."""
    logs = sbatch_and_wait(slurm, work, "--nodes=2", "--cpus-per-task=2", "--job-name=twonodes", script("train"),
                           f"data={dataset}", *TINY, "kimg=0.4", log_pattern="twonodes-*.out")
    assert "2 node(s) x 1 process(es)" in logs and "training twonodes: 2 process(es)" in logs
    assert "training complete" in logs
    assert RunDir(work / "runs" / "twonodes").latest() is not None


def test_sbatch_from_another_folder_with_a_relative_script_path(slurm, dataset, work):
    """Slurm runs a copy of the script from its spool folder; it finds common.sh from the submitted path."""
    elsewhere = work / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    relative = os.path.relpath(REPO / "slurm" / "train.sh", elsewhere)
    logs = sbatch_and_wait(slurm, elsewhere, "--cpus-per-task=2", "--job-name=moved", relative, f"data={dataset}",
                           f"outdir={work / 'runs'}", *TINY, "kimg=0.1", log_pattern="moved-*.out")
    assert "training complete" in logs and RunDir(work / "runs" / "moved").latest() is not None


def test_a_copy_of_a_script_beside_the_data_finds_the_suite_or_says_how(slurm, work):
    """Users copy sbatch scripts next to their data: the copy finds the suite through python3 (it is installed), and
    where it cannot, it fails at once with one line naming STYLEGAN_HOME."""
    make_image_folder(work / "mine" / "raw", count=12)
    copy = work / "mine" / "preprocess.sh"
    copy.write_text((REPO / "slurm" / "preprocess.sh").read_text())
    args = ("--array=0", "--job-name=copied", str(copy), "--source", "raw", "--dest", "data", "--resolution", "16",
            "--min-size", "8")
    sbatch_and_wait(slurm, work / "mine", *args, log_pattern="copied-*.out")
    assert json.loads((work / "mine" / "data" / "dataset.json").read_text())["total_images"] == 12
    job = slurm.sbatch(*args, cwd=work / "mine", env={**JOB_ENV, "PYTHON": "false"})
    assert slurm.wait_job(job) == ["FAILED"] and slurm.job_state(job)["ExitCode"] == "2:0"
    log = read_logs(work / "mine", f"copied-{job}_*.out")
    assert "set STYLEGAN_HOME=/path/to/the/suite" in log and len(log.strip().splitlines()) == 1, log


def test_a_suite_whose_path_holds_spaces(slurm, work):
    """Slurm's Command= joins the script's path and its arguments with spaces: the script is found whole."""
    (work / "my suite").symlink_to(REPO, target_is_directory=True)
    make_image_folder(work / "spaced" / "raw images", count=12)
    logs = sbatch_and_wait(slurm, work / "spaced", "--array=0", "--job-name=spaced",
                           "../my suite/slurm/preprocess.sh", "--source", "raw images", "--dest", "data set",
                           "--resolution", "16", "--min-size", "8", log_pattern="spaced-*.out")
    assert f"suite {work / 'my suite'}, container runtime none" in logs, logs
    assert json.loads((work / "spaced" / "data set" / "dataset.json").read_text())["total_images"] == 12


def test_a_config_error_under_train_sh_ends_at_once_with_exit_2(slurm, dataset, work):
    job = slurm.sbatch("--cpus-per-task=2", "--job-name=badcfg", script("train"), f"data={dataset}", "batchsize=4",
                       cwd=work, env={**JOB_ENV, "PROCS_PER_NODE": "2"})
    assert slurm.wait_job(job) == ["FAILED"]
    log = (work / f"badcfg-{job}.out").read_text()
    assert slurm.job_state(job)["ExitCode"] == "2:0", log
    assert log.count("error: unknown config key(s) batchsize") == 1 and "Traceback" not in log, log
    assert "no training process started" in log


def test_submit_refuses_a_job_no_node_can_hold(slurm, work):
    out = subprocess.run([sys.executable, "-m", "jobs.submit", "preprocess", "--cluster", "slurm", "--cpus", "16",
                          "--folder", "submitit-big", "--", "--source", "raw", "--dest", "x", "--resolution", "16"],
                         cwd=work, capture_output=True, text=True, env={**slurm.env, **JOB_ENV}, timeout=120)
    assert out.returncode == 2 and "Slurm would never start this job (" in out.stderr, out.stderr
    assert "Requested node configuration is not available" in out.stderr and "--cpus" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_train_preempted_requeued_resumes_then_evaluate_and_sample(slurm, dataset, work):
    """1 node x 2 processes. USR1 to the batch shell (what --signal=B:USR1@120 sends before the time limit):
    snapshot, requeue, resume at the same kimg, finish. An evaluation waits on it with --dependency=afterok; then
    a 2-task sampling array writes the same PNGs as one local process."""
    env = {**JOB_ENV, "PROCS_PER_NODE": "2"}
    # resume=none: a requeued run must still resume its own snapshots, never start over on top of them
    job = slurm.sbatch("--cpus-per-task=2", "--job-name=pre", script("train"), f"data={dataset}", *TINY,
                       "kimg=1.2", "resume=none", cwd=work, env=env)
    log = work / f"pre-{job}.out"
    slurm.wait_for(lambda: log.is_file() and "tick 2 " in log.read_text(), 180, "training to reach tick 2")
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))
    slurm.start_requeued_now(job)
    first_run = {p: p.read_bytes() for _, p in RunDir(work / "runs/pre").snapshots()}

    evaluation = slurm.sbatch(f"--dependency=afterok:{job}", "--cpus-per-task=2", script("evaluate"),
                              "--run", "runs/pre", "--metrics", "swd", "--device", "cpu", cwd=work, env=JOB_ENV)
    assert slurm.wait_job(job, timeout=300) == ["COMPLETED"], log.read_text()[-4000:]
    text = log.read_text()
    stopped = re.findall(r"stopping on signal 15 at kimg (\d+\.\d+)", text)
    resumed = re.findall(r"resumed from \S+ at kimg (\d+\.\d+)", text)
    assert len(stopped) == 1 and resumed == stopped, text[-4000:]
    assert 0 < float(stopped[0]) < 1.2 and "training complete" in text
    assert all(p.read_bytes() == data for p, data in first_run.items()) and len(first_run) >= 2
    # a normal requeue does not read like a crash
    assert "Traceback" not in text and "Killed" not in text and "stopped by signal SIGTERM" in text, text[-3000:]
    assert float(json.loads((work / "runs/pre/stats.jsonl").read_text().splitlines()[-1])["kimg"]) == 1.2

    assert slurm.wait_job(evaluation) == ["COMPLETED"], read_logs(work, f"evaluate-{evaluation}.out")
    assert re.search(r"swd: fakes: \d+/\d+ img \([\d.]+ img/s", read_logs(work, f"evaluate-{evaluation}.out"))
    rows = [json.loads(line) for line in (work / "runs/pre/metric-swd.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r["value"]) for r in rows)

    checkpoint = RunDir(work / "runs/pre").latest()
    logs = sbatch_and_wait(slurm, work, "--array=0-1", "--cpus-per-task=1", script("sample"), "--checkpoint",
                           str(checkpoint), "--outdir", "samples", "--seeds", "0-9", "--workers", "1",
                           log_pattern="sample-*.out")
    assert re.search(r": 5/5 img \([\d.]+ img/s, \d+s so far\)", logs), logs
    subprocess.run([sys.executable, "-m", "jobs.sample", "--checkpoint", str(checkpoint), "--outdir",
                    str(work / "samples-local"), "--seeds", "0-9", "--workers", "1"], cwd=REPO, check=True,
                   capture_output=True, env={**os.environ, **JOB_ENV})  # one thread, as the jobs: same float sums
    array = sorted((work / "samples").rglob("seed*.png"))
    local = sorted((work / "samples-local").rglob("seed*.png"))
    assert [p.name for p in array] == [f"seed{s:04d}.png" for s in range(10)] == [p.name for p in local]
    for a, b in zip(array, local, strict=True):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    # a grid is one file: in an array, task 0 writes it and the other task has nothing to do
    logs = sbatch_and_wait(slurm, work, "--array=0-1", "--job-name=grid", script("sample"), "--checkpoint",
                           str(checkpoint), "--outdir", "grid", "--seeds", "0-3", "--grid", "2x2",
                           log_pattern="grid-*.out")
    assert [p.name for p in (work / "grid").iterdir()] == ["grid0000.png"]
    assert logs.count("wrote 1 grid sheet(s)") == 1 and "task 1 rank 0: nothing to do" in logs
    # a figure is submitted without --array: its log is <name>-<job id>.out, not <name>-<id>_4294967294.out
    job = slurm.sbatch("--job-name=walk", script("sample"), "--checkpoint", str(checkpoint), "--outdir", "walk",
                       "--walk", "0,1", "--frames", "2", cwd=work, env=JOB_ENV)
    assert slurm.wait_job(job) == ["COMPLETED"] and (work / f"walk-{job}.out").is_file(), sorted(work.glob("walk*"))


def test_project_a_preprocessed_dataset_over_an_array(slurm, dataset, work, vgg_file):
    """`sbatch --array=0-1 slurm/project.sh` on the shards `preprocess` wrote: every image projected once between
    the two tasks, each task's progress in its log."""
    net = write_tiny_network(work / "project-net.pt")
    logs = sbatch_and_wait(slurm, work, "--array=0-1", "--cpus-per-task=1", script("project"), "--network", str(net),
                           "--images", str(dataset), "--outdir", "projections", "--steps", "3", "--batch", "8",
                           "--vgg", str(vgg_file), log_pattern="project-*.out")
    total = json.loads((dataset / "dataset.json").read_text())["total_images"]
    assert len(list((work / "projections").glob("*.npz"))) == total
    assert len(list((work / "projections").glob("*-target.png"))) == total
    for task in (0, 1):
        assert re.search(rf"project task {task}/2: {total // 2}/{total // 2} img \([\d.]+ img/s", logs), logs


def submit(work: Path, slurm: LocalSlurm, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "jobs.submit", *args], cwd=work, capture_output=True, text=True,
                         env={**slurm.env, **JOB_ENV}, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_submit_preprocess_array_to_slurm(slurm, work):
    make_image_folder(work / "raw2", count=20)
    out = submit(work, slurm, "preprocess", "--cluster", "slurm", "--array", "2", "--cpus", "1", "--wait",
                 "--folder", "submitit-pre", "--", "--source", "raw2", "--dest", "data2", "--resolution", "16",
                 "--min-size", "8", "--shard-size", "8", "--workers", "1")
    assert out.count("submitted preprocess job") == 2 and "2 job(s) finished" in out
    info = json.loads((work / "data2" / "dataset.json").read_text())
    assert info["total_images"] == 20 and info["num_tasks"] == 2


def test_submit_train_preempted_requeues_itself(slurm, dataset, work):
    """The submitit route: USR1 to the job step, the trainer snapshots, submitit requeues the same call, and the
    requeued job resumes and finishes."""
    out = submit(work, slurm, "train", "--cluster", "slurm", "--cpus", "2", "--folder", "submitit-train",
                 "--time", "00:20:00", "--", f"data={dataset}", "outdir=runs", "run_name=submitted", *TINY,
                 "kimg=1.2")
    job = int(re.search(r"submitted train job (\d+)", out).group(1))
    log = work / "submitit-train" / f"{job}_0_log.out"
    slurm.wait_for(lambda: log.is_file() and "tick 2 " in log.read_text(), 180, "training to reach tick 2")
    slurm.run("scancel", "--signal=USR2", str(job))  # what submitit asks Slurm to send
    slurm.start_requeued_now(job)
    assert slurm.wait_job(job, timeout=300) == ["COMPLETED"], log.read_text()[-4000:]
    text = log.read_text()
    stopped = re.findall(r"stopping on signal 12 at kimg (\d+\.\d+)", text)
    assert len(stopped) == 1 and re.findall(r"resumed from \S+ at kimg (\d+\.\d+)", text) == stopped, text[-4000:]
    assert "training complete" in text


def test_submit_train_requeues_after_every_time_limit(slurm, dataset, work):
    """submitit counts a signal as a time-out when the job ran past 80% of its time limit (or the limit less 10
    minutes: with a 5-minute limit, always) and by default stops requeueing after 3; training requeues itself
    at every time limit, as slurm/train.sh does. Four time-outs, four resumes, then the run completes."""
    out = submit(work, slurm, "train", "--cluster", "slurm", "--cpus", "2", "--folder", "submitit-timeouts",
                 "--time", "00:05:00", "--", f"data={dataset}", "outdir=runs", "run_name=timeouts", *TINY,
                 "kimg=1.2", "tick_kimg=0.05")  # room for 5 runs: one moves ~0.15 kimg between its tick and the signal
    job = int(re.search(r"submitted train job (\d+)", out).group(1))
    log = work / "submitit-timeouts" / f"{job}_0_log.out"
    for restarts in range(1, 5):
        # a tick of this run of the job (after its resume, from the second run on), then the time-limit signal
        slurm.wait_for(lambda n=restarts - 1: log.is_file() and "tick " in log.read_text().split("resumed from")[-1]
                       and log.read_text().count("resumed from") == n, 180, f"run {restarts} of the job to tick")
        slurm.run("scancel", "--signal=USR2", str(job))
        slurm.start_requeued_now(job, restarts=restarts)
    assert slurm.wait_job(job, timeout=300) == ["COMPLETED"], log.read_text()[-4000:]
    text = log.read_text()
    assert text.count("this job is timed-out") == 4 and text.count("resumed from") == 4, text[-4000:]
    assert "training complete" in text


def test_submit_local_runs_the_same_job(work, dataset):
    cmd = [sys.executable, "-m", "jobs.submit", "train", "--cluster", "local", "--wait", "--folder", "submitit-local",
           "--", f"data={dataset}", "outdir=runs", "run_name=local", *TINY, "kimg=0.2"]
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env={**os.environ, **JOB_ENV}, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(local)" in out.stdout and RunDir(work / "runs" / "local").latest() is not None


def test_the_readme_stylegan_2018_walkthrough_on_the_cluster(slurm, work, dataset):
    """README's walkthrough with NVIDIA's 2018 network, as written but tiny: `sbatch --job-name=tex-sg1
    slurm/train.sh --config configs/stylegan1-textures64.yaml resume=<2018 pickle>` (the run folder is named by the
    job), then evaluate (swd: fid2k needs Inception weights), seeds at 0.7, the walk 200,1000,2500,4000,200 with 10
    frames at 0.8, and style mixing, with the `stylegan` command."""
    G, D, G_kwargs, D_kwargs = sg1_networks(32)
    pkl = write_stylegan1_pickle(work / "karras2019-tiny.pkl", G, D, G_kwargs, D_kwargs)
    logs = sbatch_and_wait(slurm, work, "--job-name=tex-sg1", script("train"), "--config",
                           str(REPO / "configs" / "stylegan1-textures64.yaml"), f"resume={pkl}", f"data={dataset}",
                           "resolution=16", *TINY_SG1, "batch=8", "workers=1", "tick_kimg=0.008", "snap=1",
                           "kimg=0.016", "grid_size=2", log_pattern="tex-sg1-*.out")
    assert "fine-tuning from" in logs and "training complete" in logs and "lod 0.00" in logs
    run = RunDir(work / "runs" / "tex-sg1")
    snapshot = str(run.latest())

    def stylegan(*args: str) -> None:
        subprocess.run(["stylegan", *args], cwd=work, check=True, capture_output=True, env={**os.environ, **JOB_ENV})

    stylegan("evaluate", "--run", "runs/tex-sg1", "--metrics", "swd")
    stylegan("sample", "--network", snapshot, "--outdir", "out", "--seeds", "0-9", "--trunc", "0.7", "--workers", "1")
    stylegan("sample", "--network", snapshot, "--outdir", "out", "--walk", "200,1000,2500,4000,200", "--frames", "10",
             "--trunc", "0.8", "--workers", "1")
    # a 16x16 network has 6 style layers: NVIDIA's default columns 0-6 do not fit it
    stylegan("sample", "--network", snapshot, "--outdir", "out", "--style-mix", "1,2,3", "4,5,6", "--layers", "0-3",
             "--workers", "1")
    assert len(run.results("swd")) == len(run.snapshots()) and all(np.isfinite(r["value"]) for r in run.results("swd"))
    out = work / "out"
    assert len(list(out.rglob("seed*.png"))) == 10 and (out / "style-mix.png").is_file()
    with Image.open(out / "walk.gif") as walk:
        assert walk.n_frames == 4 * 10 + 1 and walk.size == (16, 16)
