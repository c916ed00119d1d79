"""The training job on CPU: gloo DDP, snapshots, TensorBoard, preemption + resume, NaN handling, transfer."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from benchmarks.nvidia_pickles import write_nvidia_pickle
from stylegan.distributed import DistEnv
from stylegan.errors import UserError
from stylegan.formats.checkpoint import load_checkpoint
from stylegan.rundir import RunDir
from stylegan.train.config import TrainConfig, load_config
from stylegan.train.fastpath import CompileRecord
from stylegan.train.progressive import stage_at
from stylegan.train.runlog import PREVIEW_SIDE, RunLog
from stylegan.train.startup import plan_start
from stylegan.train.trainer import Trainer, fill_compile_cache
from tests.conftest import FIXTURES, REPO, TINY_TRAIN, Fixture, run_job
from tests.image_folder import preprocess_folder, random_dataset

TINY = [*TINY_TRAIN, "r1_interval=4", "pl_interval=2", "mirror=false"]
ADA = ["aug=ada", "ada_kimg=1"]  # p moves within a few steps: the augmentation state is part of what must agree


def make_dataset(root: Path, identical: bool) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    for i in range(48):
        pixels = first if identical else rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / f"{i:03d}.png")
    return preprocess_folder(src, root / "data", 16, "--shard-size", "12")


@pytest.fixture(scope="module")
def same_images(tmp_path_factory) -> Path:
    """Every image identical: the real batch is then the same however shards are split over ranks, so runs with
    different process counts must agree exactly."""
    return make_dataset(tmp_path_factory.mktemp("same"), identical=True)


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread everywhere: the same float summation order in every run


def own_compile_cache(root: Path) -> dict:
    """Environment giving a run a compile cache of its own: the compile records (`CompileRecord`) another run left in
    the user's cache must not decide how a test's run compiles."""
    return {"STYLEGAN_CACHE": str(root), "TORCHINDUCTOR_CACHE_DIR": str(root / "torch-compile")}


def train(args: list[str], nproc: int = 1, check: bool = True, timeout: int = 600,
          env: dict | None = None) -> subprocess.CompletedProcess:
    return run_job("train", *args, nproc=nproc, check=check, timeout=timeout, env=env)


def stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_two_process_gloo_run_writes_everything_and_matches_one_process(same_images, tmp_path):
    common = [f"data={same_images}", f"outdir={tmp_path}", *TINY, *ADA, "batch=8", "batch_gpu=4", "kimg=0.4",
              "tick_kimg=0.008", "snap=25"]
    launched = time.time()
    two = train([*common, "run_name=two"], nproc=2)
    one = train([*common, "run_name=one"])
    assert "2 process(es)" in two.stdout and "4 x 1 round(s) x 2" in two.stdout
    assert "4 x 2 round(s) x 1" in one.stdout
    run = tmp_path / "two"
    assert (run / "config.yaml").is_file() and "tick 0 kimg 0.0" in (run / "log.txt").read_text()
    startup = re.search(r"start-up: (\d+) s .* first step: (\d+) s networks, weights and data, (\d+) s first step "
                        r"\(eager, nothing to compile\); (\d+) s before the trainer's start, from the process's start",
                        (run / "log.txt").read_text())  # CPU runs stay eager
    assert startup and abs(int(startup[1]) - int(startup[2]) - int(startup[3])) <= 1
    # the process's age by /proc (\d: not negative): its start and first step lie between torchrun's launch and tick 0
    assert int(startup[4]) + int(startup[1]) <= stats(run)[0]["timestamp"] - launched + 1
    assert [n for n, _ in RunDir(run).snapshots()] == [8, 208, 400]  # tick 0 ends after the first step
    assert (run / "fakes000000.400.png").is_file()
    # Same losses step by step (one tick per step) and the same final weights: N ranks == 1 rank + accumulation.
    s1, s2 = stats(tmp_path / "one"), stats(run)
    assert len(s1) == len(s2) >= 40
    # wall-clock times as NVIDIA's rows carry them (the parity harness reads launch to first tick from them)
    assert launched < s2[0]["timestamp"] <= s2[-1]["timestamp"] < s1[0]["timestamp"]
    for a, b in zip(s1[:20], s2[:20], strict=True):
        assert set(a) == set(b) and ("pl_penalty" in a) == (a["tick"] % 2 == 0)  # Greg every pl_interval=2 steps
        for key in ("loss_G", "loss_D", "pl_penalty", "r1_penalty", "augment_p"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["tick"], key)
    w1 = load_checkpoint(RunDir(tmp_path / "one").latest())
    w2 = load_checkpoint(RunDir(run).latest())
    for net in ("G", "D"):
        for k, v in w1[net].items():
            assert torch.allclose(v, w2[net][k], rtol=1e-3, atol=1e-4), (net, k)
    # TensorBoard events read back.
    events = EventAccumulator(str(run))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("Loss/G/loss", "Loss/D/loss", "Loss/D/r1_penalty", "Loss/G/pl_penalty", "Loss/scores/fake",
                "Loss/scores/real", "Loss/signs/fake", "Loss/signs/real", "Progress/augment", "Timing/sec_per_kimg",
                "Timing/images_per_sec_per_gpu", "Timing/Gmain", "Timing/Greg", "Timing/Dmain", "Timing/Dreg",
                "Resources/cpu_mem_gb", "Resources/peak_gpu_mem_gb", "Progress/glr"):
        assert tag in tags, tag
    assert np.isfinite([e.value for e in events.Scalars("Loss/G/loss")]).all()
    # ticks of 8 images: one point each, at the image count (kimg as the step put 125 ticks on step 0)
    assert [e.step for e in events.Scalars("Progress/kimg")] == [row["nimg"] for row in s2] == sorted(
        {row["nimg"] for row in s2})
    assert all(e.value > 0 for e in events.Scalars("Resources/cpu_mem_gb"))
    assert [e.step for e in events.Images("fakes")] == [8, 208, 400] and [e.step for e in events.Images("reals")] == [0]
    log = (run / "log.txt").read_text()
    assert re.search(r"cpumem [\d.]+ gpumem 0.0 reserved 0.0 augment .* \| loss G [-\d.]+ D [-\d.]+ .*\| phase sec "
                     r"Gmain [\d.]+ Greg [\d.]+ Dmain [\d.]+ Dreg [\d.]+", log), log[-2000:]
    # the reals grid, once: cells of the dataset's pixels (all images of this set are one image)
    with tarfile.open(sorted(same_images.glob("*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        first = np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB"))
    reals = np.asarray(Image.open(run / "reals.png"))
    assert reals.shape[0] == reals.shape[1] and np.array_equal(reals[:16, :16], first)


def test_a_process_knows_how_long_ago_it_started():
    """/proc's start time, which the trainer's start-up line reads: a process that slept 1.5 s before importing
    anything of ours is at least that old, and no older than the parent saw it run."""
    code = "import time; time.sleep(1.5); from stylegan.progress import process_age; print(process_age())"
    launched = time.time()
    age = float(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout)
    assert 1.5 <= age <= time.time() - launched + 0.02  # /proc counts in clock ticks (10 ms)


def test_tensorboard_holds_a_bounded_preview_of_a_large_sheet_and_every_pixel_of_a_small_one(tmp_path):
    rng = np.random.default_rng(0)
    large = rng.integers(0, 256, (2 * PREVIEW_SIDE + 4, PREVIEW_SIDE + 2, 3), dtype=np.uint8)  # reduced 3x
    small = rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)
    runlog = RunLog(RunDir(tmp_path), is_main=True)
    runlog.sheet("large", large, 0, tmp_path / "large.png")
    runlog.sheet("small", small, 8, tmp_path / "small.png")
    runlog.close()
    for name, sheet in (("large", large), ("small", small)):  # the files keep every pixel
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{name}.png")), sheet)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    read = {tag: np.asarray(Image.open(io.BytesIO(events.Images(tag)[0].encoded_image_string)))
            for tag in ("large", "small")}
    assert np.array_equal(read["small"], small)
    h, w = -(-large.shape[0] // 3), -(-large.shape[1] // 3)
    assert read["large"].shape == (h, w, 3) and max(h, w) <= PREVIEW_SIDE
    # each pixel the mean of its 3x3 block of the sheet, within Pillow's fixed-point rounding (whole blocks; the edge
    # averages what is left)
    blocks = large[:(h - 1) * 3, :(w - 1) * 3].reshape(h - 1, 3, w - 1, 3, 3).mean((1, 3))
    assert np.abs(read["large"][:h - 1, :w - 1] - blocks).max() < 1


def test_a_sheet_that_cannot_be_written_is_named_by_the_next_sheet_or_the_close(tmp_path):
    """Sheets are written by a thread of their own: its error comes back to the run, naming the file, at the next
    sheet (which is then not written) or at the close."""
    (tmp_path / "blocked").write_text("a file where a folder should be")
    image = np.zeros((8, 8, 3), np.uint8)
    runlog = RunLog(RunDir(tmp_path), is_main=True)
    runlog.sheet("fakes", image, 0, tmp_path / "blocked" / "fakes.png")
    with pytest.raises(OSError, match="blocked"):
        runlog.sheet("fakes", image, 8, tmp_path / "fakes.png")
    runlog.sheet("fakes", image, 16, tmp_path / "blocked" / "again.png")
    with pytest.raises(OSError, match="blocked"):
        runlog.close()
    assert not (tmp_path / "fakes.png").exists()


def test_ranks_hold_identical_weights(same_images, tmp_path):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             "-m", "tests.ddp_check", f"data={same_images}", f"outdir={tmp_path}", *TINY, "batch=8",
                             "mirror=true"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "RANKS AGREE" in result.stdout, result.stderr[-3000:]


def worker_pids(agent_pid: int) -> dict[int, int]:
    """rank -> pid of the worker processes a torchrun agent started (their environment holds RANK)."""
    pids = {}
    for child in Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split():
        env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        pids.update({int(e[5:]): int(child) for e in env if e.startswith(b"RANK=")})
    return pids


def test_a_dead_rank_fails_fast_and_torchrun_restarts_from_the_snapshot(same_images, tmp_path):
    """SIGKILL one of 2 ranks: the other fails at its next collective instead of waiting for the (15 minute)
    timeout, and torchrun (--max-restarts) starts both again, which resume from the last snapshot and finish."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=1",
            "-m", "jobs.train", f"data={same_images}", f"outdir={tmp_path}", "run_name=dead", *TINY, "batch=8",
            "kimg=0.6", "tick_kimg=0.1", "snap=1", "dist_timeout_s=900"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    run = RunDir(tmp_path / "dead")
    deadline = time.time() + 120
    while time.time() < deadline and not run.snapshots():
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(worker_pids(proc.pid)[1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "resumed from" in out and out.count("training complete") == 1, out[-3000:]
    assert load_checkpoint(run.latest())["progress"]["cur_nimg"] == 600


def test_background_compile_takes_over_at_a_tick_on_every_rank_and_computes_the_same(same_images, tmp_path):
    """compile_start: background (the default): the ranks train eagerly from the first step while helper processes
    compile (aot_eager here: Inductor's CPU backend cannot compile these graphs), then switch together at a tick:
    every step before it is the eager run's bit for bit, and the first compiled step computes what an eager step
    computes."""
    common = [f"data={same_images}", f"outdir={tmp_path}", *TINY, *ADA, "batch=8", "tick_kimg=0.008", "snap=100000"]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "jobs.train",
            *common, "run_name=background", "kimg=100", "compile_backend=aot_eager",
            # the run's priority: in CI the other tests' processes, not these ranks, hold the cores, and helpers below
            # them took ten minutes to compile (the helpers' priority has its own test, the killed-helper one)
            "compile_helper_nice=0"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**ENV, **own_compile_cache(tmp_path / "cache")})
    log, switch = tmp_path / "background" / "log.txt", None
    deadline = time.time() + 600  # the helpers compile beside the ranks and, in CI, another test's processes
    while time.time() < deadline and proc.poll() is None:
        text = log.read_text() if log.is_file() else ""
        switch = switch or re.search(r"kimg ([\d.]+): compiled main phases from the next step on", text)
        if switch and text.count("\ntick ") > round(float(switch[1]) / 0.008) + 4:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        os.kill(worker_pids(proc.pid)[1], signal.SIGTERM)  # one rank's signal stops both at the same step
    out, _ = proc.communicate(timeout=120)
    text = log.read_text() if log.is_file() else ""
    assert switch, f"{out[-3000:]}\nlog:\n{text[-2000:]}"
    assert "first step (eager: helper processes compile the main phases meanwhile" in text
    assert text.count("compiled main phases from the next step on") == 1 and "stopping on signal" in text, out[-3000:]
    record = json.loads(next((tmp_path / "cache").rglob("stylegan-graphs/*.json")).read_text())
    assert record["run"] == str(tmp_path / "background")  # written at the switch: the next such run starts compiled
    background = stats(tmp_path / "background")
    train([*common, "run_name=eager", f"kimg={background[-1]['kimg']}", "compile=false"], nproc=2)
    eager = stats(tmp_path / "eager")
    assert len(eager) == len(background) and background[-1]["kimg"] > float(switch[1]) + 0.024
    first_compiled = round(float(switch[1]) / 0.008)  # one step per tick; the switch is logged at the tick before
    for a, b in zip(eager, background, strict=True):
        assert a["augment_p"] == b["augment_p"], a["tick"]  # the compiled Dmain's real signs drive ADA as before
        for key in ("loss_G", "loss_D", "pl_penalty", "r1_penalty"):
            if key in a and a["tick"] < first_compiled:
                assert a[key] == b[key], (a["tick"], key)  # bit for bit: the helpers beside the ranks change nothing
        # The first compiled step starts from the eager run's state, so it must agree to float rounding. Later steps
        # are not compared: from ~1e-7 apart, this GAN on identical images diverges chaotically (measured: from 3e-7
        # to 3e-4 in one step, 1e-3 two steps later, at ticks that depend on where the switch lands).
        if a["tick"] == first_compiled:
            for key in ("loss_G", "loss_D"):
                assert a[key] == pytest.approx(b[key], rel=1e-5), (a["tick"], key)


def test_the_helpers_compile_the_graphs_the_run_takes_over(same_images, tmp_path, recorded_graphs):
    """The compile cache serves the run only if each helper's graphs are the run's own: the same traced code with
    the same inputs (shapes, dtypes, which need gradients), though the helpers start from random weights at step 0
    and the run takes over after eager steps with ADA's p moved; with compile_greg the path-length phase's graph
    too. torch.compile records the graphs here instead of compiling them (Inductor cannot compile them on a CPU)."""
    graphs = recorded_graphs
    cfg = load_config(None, [f"data={same_images}", f"outdir={tmp_path}", *TINY, *ADA, "batch=8", "workers=0",
                             "compile_backend=aot_eager", "ada_interval=1", "compile_greg=true"])
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    for phase in ("Gmain", "Dmain", "Greg"):
        fill_compile_cache(plan_start(cfg, 1), env, 0, phase)
        torch._dynamo.reset()  # as in a process of its own
    helpers, graphs[:] = list(graphs), []
    run = dataclasses.replace(cfg, run_name="run", compile_start="first-step", compile=False)
    trainer = Trainer(run, env, plan_start(run, 1))
    for _ in range(6):  # the compiled step below is one of Greg's (pl_interval 2)
        trainer.step()
    trainer.use_compiled()
    trainer.step()
    trainer.close()
    assert float(trainer.augment.p) > 0 and len(helpers) == len(graphs) >= 5 and sorted(helpers) == sorted(graphs)
    assert sum("_functorch._grad_increment_nesting" in graph for graph in graphs) == 1  # Greg's, torch.func.grad


def test_a_seed_starts_from_the_networks_nvidias_trainer_starts_from_with_it(same_images, tmp_path):
    """NVIDIA's trainer draws its DataLoader's seed from torch's generator between seeding and building its networks;
    ours draws it too, so that runs of the two trainers pair up by seed (benchmarks/parity.py). The fixture holds
    NVIDIA's seed-0 networks at the tiny config's shapes, built in its training loop's order (tests/fixtures)."""
    ref = np.load(FIXTURES / "stylegan2_official_init16.npz")
    cfg = load_config(None, [f"data={same_images}", f"outdir={tmp_path}", *TINY, "seed=0", "workers=0",
                             "compile=false"])
    trainer = Trainer(cfg, DistEnv(0, 1, 0, torch.device("cpu")), plan_start(cfg, 1))
    trainer.close()
    for prefix, net in (("G.", trainer.G), ("D.", trainer.D)):
        ours = net.state_dict()
        theirs = {k[len(prefix):]: torch.from_numpy(ref[k]) for k in ref.files if k.startswith(prefix)}
        assert set(theirs) == set(ours)
        differ = [k for k, v in theirs.items() if not torch.equal(ours[k], v)]
        assert not differ, differ


def test_adas_statistic_averages_the_real_signs_of_every_d_phase_as_nvidias(same_images, tmp_path):
    """NVIDIA's ADA heuristic averages Loss/signs/real, which its loss reports wherever D scores the reals: in Dmain
    and in the lazy R1 phase alike. Four steps with R1 every 4th: Dmain 4 times and Dreg once, each over every round."""
    cfg = load_config(None, [f"data={same_images}", f"outdir={tmp_path}", *TINY, *ADA, "batch=8", "batch_gpu=4",
                             "workers=0", "compile=false", "ada_interval=100"])
    trainer = Trainer(cfg, DistEnv(0, 1, 0, torch.device("cpu")), plan_start(cfg, 1))
    for _ in range(4):
        trainer.step()
    trainer.close()
    assert trainer.rounds == 2 and trainer.ada_signs[1] == (4 + 1) * 2


def test_a_killed_compile_helper_leaves_the_run_training_eagerly(same_images, tmp_path):
    """A helper that dies (here SIGKILL, as the OOM killer sends) costs the run its compiled phases, not its life:
    one warning, and the run goes on eagerly. The helpers run at a lower CPU priority than the run, whose eager
    steps need the host."""
    args = [sys.executable, "-m", "jobs.train", f"data={same_images}", f"outdir={tmp_path}", "run_name=killed",
            *TINY, "batch=8", "tick_kimg=0.008", "snap=100000", "kimg=100", "compile_backend=aot_eager"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**ENV, **own_compile_cache(tmp_path / "cache")})
    log, helpers = tmp_path / "killed" / "log.txt", []
    deadline = time.time() + 120
    while time.time() < deadline and len(helpers) < 2:  # one per compiled phase: Gmain, Dmain
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        helpers = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        time.sleep(0.05)
    lower, niced = min(os.getpriority(os.PRIO_PROCESS, proc.pid) + TrainConfig.compile_helper_nice, 19), False
    while time.time() < deadline and not niced:
        try:
            niced = all(os.getpriority(os.PRIO_PROCESS, pid) == lower for pid in helpers)
        except ProcessLookupError:  # a helper ended without having been seen at the lower priority
            break
        time.sleep(0.05)
    if not niced:
        proc.kill()
    assert len(helpers) == 2 and niced, proc.communicate()[0][-3000:]
    for pid in helpers:
        os.kill(pid, signal.SIGKILL)
    warned = "the background compile failed"
    while time.time() < deadline and warned not in (log.read_text() if log.is_file() else ""):
        time.sleep(0.2)
    ticks = log.read_text().count("\ntick ")
    while time.time() < deadline and log.read_text().count("\ntick ") < ticks + 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out[-3000:]
    text = log.read_text()
    assert text.count(warned) == 1 and "training goes on eagerly" in text and "compiled main phases" not in text
    assert not list((tmp_path / "cache").rglob("stylegan-graphs/*.json"))  # no graphs: no record of them


def test_a_run_whose_graphs_the_compile_cache_holds_compiles_at_its_first_step(same_images, tmp_path):
    """The first run that has its main phases compiled leaves a record of them in the compile cache; a run of the
    same configuration (another seed, length and folder) then compiles at its first step, which loads them,
    instead of stepping eagerly beside helper processes (compile_start: background, the default)."""
    common = [f"data={same_images}", *TINY, "batch=8", "tick_kimg=0.008", "kimg=0.016", "snap=100",
              "compile_backend=aot_eager"]
    env = own_compile_cache(tmp_path / "cache")
    train([*common, f"outdir={tmp_path}", "run_name=first", "compile_start=first-step"], env=env)
    records = list((tmp_path / "cache" / "torch-compile" / "stylegan-graphs").glob("*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["run"] == str(tmp_path / "first")
    train([*common, f"outdir={tmp_path / 'other'}", "run_name=second", "seed=7", "kimg=0.024"], env=env)
    log = (tmp_path / "other" / "second" / "log.txt").read_text()
    assert f"the compile cache holds these graphs ({records[0]})" in log, log
    assert "torch.compile on first use" in log and "helper processes" not in log, log
    assert len(list(records[0].parent.iterdir())) == 1


def test_a_compile_record_is_named_by_what_the_graphs_depend_on(same_images, tmp_path, monkeypatch):
    """Settings that change the compiled graphs (widths, batch per GPU, labels, augmentation, compile mode, memory
    budget) name another record; those that choose the data, seed, length or folders do not."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(None, [f"data={same_images}", f"outdir={tmp_path}", *TINY, "batch=8"])

    def record(c: TrainConfig, batch_gpu: int = 8, c_dim: int = 0) -> Path:
        return CompileRecord(c, c_dim, stage_at(c, 0, 1), batch_gpu, torch.device("cpu")).path

    same = dataclasses.replace(cfg, data=str(tmp_path / "elsewhere"), outdir="/runs", run_name="again", seed=9,
                               kimg=5000.0, tick_kimg=1.0, snap=7, workers=6, resume="ffhq.pkl",
                               compile_start="first-step", compile_helper_nice=0)
    assert record(same) == record(cfg)
    others = [record(dataclasses.replace(cfg, **change)) for change in (
        {"channel_base": 512}, {"map_layers": 4}, {"aug": "ada"}, {"compile_mode": "reduce-overhead"},
        {"compile_memory_budget": 0.5}, {"resolution": 32}, {"mbstd_group": 4}, {"family": "stylegan1"})]
    others += [record(cfg, batch_gpu=4), record(cfg, c_dim=3)]
    assert len({record(cfg), *others}) == len(others) + 1


def test_sigterm_checkpoints_and_resume_continues_with_identical_weights(same_images, tmp_path):
    """A run that has snapshots resumes from them whatever `resume` says (`resume` only picks a new run's starting
    weights): rerunning the same command, resume=none included, continues the run and never overwrites it."""
    common = [f"data={same_images}", f"outdir={tmp_path}", *TINY, *ADA, "batch=8", "tick_kimg=0.04", "snap=1000",
              "resume=none"]
    train([*common, "run_name=straight", "kimg=1"])
    args = [sys.executable, "-m", "jobs.train", *common, "run_name=cut", "kimg=1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    run = RunDir(tmp_path / "cut")
    ckpts = run.checkpoints
    deadline = time.time() + 120
    while time.time() < deadline and not run.snapshots():
        time.sleep(0.05)
    time.sleep(1.0)  # a few hundred images past the first snapshot
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "stopping on signal 15" in out
    first_run = run.snapshots()
    cut = load_checkpoint(run.latest())
    stopped_at = cut["progress"]["cur_nimg"]
    assert 0 < stopped_at < 1000 and [n for n, _ in first_run] == [8, stopped_at]
    resumed = train(args[3:])
    assert f"resumed from {ckpts}" in resumed.stdout and f"at kimg {stopped_at / 1000:.3f}" in resumed.stdout
    assert run.snapshots()[:2] == first_run and load_checkpoint(first_run[1][1])["progress"] == cut["progress"]
    final = load_checkpoint(run.latest())
    straight = load_checkpoint(RunDir(tmp_path / "straight").latest())
    assert final["progress"]["cur_nimg"] == straight["progress"]["cur_nimg"]
    for net in ("G", "D", "G_ema"):
        for k, v in straight[net].items():
            assert torch.allclose(v, final[net][k], rtol=1e-5, atol=1e-6), (net, k)


def test_a_runs_batches_follow_from_its_seed(tmp_path):
    """Varied images, flips and two loader workers: two runs of one seed step alike, loss for loss (the reader's
    shuffle and flips were seeded by the clock); another seed makes another run."""
    data = random_dataset(tmp_path, 32, 16)
    common = [f"data={data}", f"outdir={tmp_path}", *TINY, *ADA, "batch=8", "mirror=true", "workers=2",
              "kimg=0.048", "tick_kimg=0.008", "snap=1000"]
    for name, seed in (("a", 0), ("b", 0), ("other", 1)):
        train([*common, f"run_name={name}", f"seed={seed}"], env=ENV)
    losses = {name: [(r["loss_G"], r["loss_D"]) for r in stats(tmp_path / name)] for name in ("a", "b", "other")}
    assert len(losses["a"]) == 6 and losses["a"] == losses["b"]
    assert losses["other"] != losses["a"]


def test_nan_is_skipped_reported_and_rolled_back(same_images, tmp_path):
    result = train([f"data={same_images}", f"outdir={tmp_path}", "run_name=nan", *TINY, "batch=8", "kimg=0.4",
                    "tick_kimg=0.1", "snap=1", "inject_nan_steps=[3,20,21]", "nan_rollback=2"])
    assert "non-finite gradients at step 3: step skipped (1 in a row)" in result.stdout
    assert "rolled back to" in result.stdout
    last = stats(tmp_path / "nan")[-1]
    assert last["nonfinite_steps"] == 3 and last["rollbacks"] == 1
    ckpt = load_checkpoint(RunDir(tmp_path / "nan").latest())
    assert all(torch.isfinite(v).all() for v in ckpt["G"].values())
    events = EventAccumulator(str(tmp_path / "nan"))
    events.Reload()
    assert events.Scalars("Faults/nonfinite_steps")[-1].value == 3


def test_fine_tuning_from_an_official_pickle_at_another_resolution(tmp_path):
    """NVIDIA's --resume semantics: G, D and G_ema from the pickle (G_ema kept, no EMA ramp-up), ADA over 100 kimg;
    the transfer report names what starts random, and freezing such a layer is warned about."""
    fx = Fixture("uncond32")
    G, D = fx.networks()
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(1.0)  # G_ema differs from G, as in a real snapshot
    pkl = write_nvidia_pickle(tmp_path / "official.pkl", G, D, fx.meta["G_kwargs"], fx.meta["D_kwargs"], G_ema=G_ema)
    data = make_dataset(tmp_path / "d", identical=False)
    arch = ["z_dim=64", "w_dim=64", "map_layers=2", "channel_base=512", "channel_max=64", "mbstd_group=4",
            "workers=1", "batch=4", "kimg=0.008", "tick_kimg=0.004"]
    result = train([f"data={data}", f"outdir={tmp_path}", "run_name=ft", "resolution=16", f"resume={pkl}",
                    "freezed=1", *arch])
    assert "G: copied 48/48 tensors; source tensors left behind: 16 of blocks above this resolution, 0 other" \
        in result.stdout  # every 16x16 G tensor is in the 32x32 one
    assert "D: start random (not in the source): b16.fromrgb.weight, b16.fromrgb.bias" in result.stdout
    assert "ada_kimg 100, ema_rampup 0" in result.stdout
    assert "WARNING: freezed=1 freezes D layers that start from random weights and stay random: b16.fromrgb" \
        in result.stderr
    ckpt = load_checkpoint(RunDir(tmp_path / "ft").latest())
    assert ckpt["G_kwargs"]["img_resolution"] == 16 and ckpt["config"]["ada_kimg"] == 100
    # two steps of EMA with a 10 kimg half-life: G_ema is still the pickle's G_ema, not its G
    w = "synthesis.b16.conv1.weight"
    assert torch.allclose(ckpt["G_ema"][w], G_ema.state_dict()[w], atol=0.02)
    assert not torch.allclose(ckpt["G_ema"][w], G.state_dict()[w], atol=0.5)


@pytest.mark.parametrize("change,match", [
    (["channel_base=128", "channel_max=16"], "tensors differ in shape .*Set channel_base=512 channel_max=64"),
    (["map_layers=1"], "its mapping network has 2 layers, the config's 1.*Set map_layers=2"),
])
def test_a_mismatched_transfer_is_refused_in_one_line(tmp_path, change, match):
    fx = Fixture("uncond32")
    pkl = write_nvidia_pickle(tmp_path / "official.pkl", *fx.networks(), fx.meta["G_kwargs"], fx.meta["D_kwargs"])
    data = make_dataset(tmp_path / "d", identical=False)
    args = [f"data={data}", f"outdir={tmp_path}", "resolution=16", f"resume={pkl}", "z_dim=64", "w_dim=64",
            "map_layers=2", "channel_base=512", "channel_max=64", "workers=1", "batch=4", "kimg=0.004", *change]
    bad = train([*args, "run_name=bad"], check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert re.search(match, bad.stderr) and "transfer_partial=true" in bad.stderr, bad.stderr
    partial = train([*args, "run_name=partial", "transfer_partial=true"])
    assert "start random (other shape)" in partial.stdout or "unused source tensors" in partial.stdout


def test_a_missing_resume_file_names_the_key_and_the_way_out(tmp_path, same_images):
    result = train([f"data={same_images}", f"outdir={tmp_path}", "resume=nowhere/ffhq.pkl", *TINY], check=False)
    assert result.returncode == 2, result.stderr
    assert "nowhere/ffhq.pkl: no such file (config key 'resume'" in result.stderr and "resume=none" in result.stderr


@pytest.mark.parametrize("overrides,match", [
    (["data=x", "batchsize=4"], "unknown config key(s) batchsize"),
    (["data=x", "batch=four"], "'batch' must be int"),
    (["batch=4"], "'data' is required"),
    (["data=x", "resolution=48"], "power of two"),
    (["data=x", "aug=sometimes"], "aug 'sometimes'"),
    (["data=x", "compile_mode=max"], "compile_mode 'max' must be default or reduce-overhead"),
    (["data=x", "compile_helper_nice=-5"], "compile_helper_nice -5 must be a nice increment from 0 to 19"),
    (["data=x", "compile_memory_budget=0"], "compile_memory_budget 0.0 must be in (0, 1]"),
])
def test_bad_config_fails_cleanly(overrides, match):
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_bad_config_on_the_command_line_lists_valid_keys(tmp_path):
    result = train(["data=x", "batchsize=4"], check=False)
    assert result.returncode == 2 and "Valid keys: data, outdir" in result.stderr
    assert "did you mean batch_gpu?" in result.stderr or "did you mean batch?" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data: [unclosed\n")
    result = train(["--config", str(cfg_file)], check=False)
    assert result.returncode == 2 and "invalid YAML" in result.stderr


def test_flags_and_overrides_in_any_order(same_images, tmp_path):
    """slurm/train.sh appends run_name= after the user's arguments, which may end in a flag such as --debug."""
    result = train(["--dry-run", f"data={same_images}", "--debug", f"outdir={tmp_path}", *TINY, "--config",
                    str(REPO / "configs" / "textures64.yaml"), "resume=none", "resolution=16", "run_name=late"])
    assert f"new run {tmp_path / 'late'} from random weights" in result.stdout, result.stdout


def test_yaml_config_and_overrides(tmp_path):
    cfg_file = tmp_path / "textures.yaml"
    cfg_file.write_text("data: d\nbatch: 16\nglr: 0.002\n")
    cfg = load_config(str(cfg_file), ["batch=64", "betas=[0.0, 0.9]"])
    assert cfg.batch == 64 and cfg.glr == 0.002 and cfg.betas == [0.0, 0.9] and cfg.run_name == "textures"
    for preset in (REPO / "configs").glob("*.yaml"):
        load_config(str(preset), [])


def test_wrong_dataset_resolution(same_images, tmp_path):
    result = train([f"data={same_images}", f"outdir={tmp_path}", "resolution=32"], check=False)
    assert result.returncode == 2 and "the dataset is 16x16 but 32x32 is needed" in result.stderr


def test_the_dry_run_is_the_trainers_own_start_up_plan(same_images, tmp_path):
    """`--dry-run` prints the plan the trainer starts from (stylegan.train.startup): what the trainer refuses, the
    dry run refuses with the same line, before any process starts. Two cases used to pass the dry run and then fail
    in every rank: `cond: true` on a dataset without labels, and an architecture other than the run's snapshot's."""
    args = [f"data={same_images}", f"outdir={tmp_path}", "run_name=r", *TINY, "batch=4", "kimg=0.004",
            "tick_kimg=0.004"]
    plan = train([*args, "--dry-run"])
    assert "config OK: new run" in plan.stdout and "batch 4 x 1 x 1" in plan.stdout, plan.stdout
    assert not (tmp_path / "r").exists(), "the dry run wrote something"
    train(args)
    assert "config OK: resumes" in train([*args, "kimg=0.008", "--dry-run"]).stdout
    for change, match in ((["cond=true"], "cond: true but the dataset has no labels"),
                          (["channel_max=16"], "G architecture does not fit the config (channel_max: config 16 vs "
                                               "checkpoint 32)")):
        for dry in (["--dry-run"], []):
            result = train([*args, *change, *dry], check=False)
            assert result.returncode == 2 and match in result.stderr, (dry, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_run_folder_that_is_a_file_is_refused_before_start(same_images, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    for dry in (["--dry-run"], []):
        result = train([f"data={same_images}", f"outdir={tmp_path / 'taken'}", *TINY, *dry], check=False)
        assert result.returncode == 2 and "taken: is a file, not a folder" in result.stderr, result.stderr


def test_a_finished_run_resubmitted_trains_nothing_and_says_so(same_images, tmp_path):
    args = [f"data={same_images}", f"outdir={tmp_path}", "run_name=done", *TINY, "batch=4", "kimg=0.008",
            "tick_kimg=0.004"]
    train(args)
    snapshots = RunDir(tmp_path / "done").snapshots()
    again = train(args)
    assert "run complete: " in again.stdout and "nothing to train" in again.stdout, again.stdout
    assert RunDir(tmp_path / "done").snapshots() == snapshots, "a finished run trained on"
    assert "training done" not in again.stdout and "resumed from" not in again.stdout


def test_a_run_stopped_before_its_first_snapshot_starts_again(same_images, tmp_path):
    """The first tick writes stats.jsonl just before the first snapshot; a start that died between the two (a kill,
    a full disk) left a folder the new-run guard took for another run's, so every requeue failed."""
    args = [f"data={same_images}", f"outdir={tmp_path}", "run_name=early", *TINY, "batch=4", "tick_kimg=0.004",
            "kimg=0.008"]
    train(args)
    run = RunDir(tmp_path / "early")
    ticks = [row["tick"] for row in stats(run.path)]
    shutil.rmtree(run.checkpoints)  # what such a start leaves: its log, config, statistics, events, no snapshot
    for fakes in run.path.glob("fakes*.png"):
        fakes.unlink()
    result = train(args)
    assert "starting again: the earlier start of this run wrote no snapshot" in result.stdout
    assert [row["tick"] for row in stats(run.path)] == ticks and run.latest() is not None  # the old ticks dropped


def test_one_training_per_run_folder_and_a_dead_owners_claim_is_taken_over(same_images, tmp_path):
    """A second training of a folder in use stops in one line naming the owner (the dry run too); once the owner is
    gone (SIGKILL: no release), the next training takes the folder over at once. A claim from another host is
    respected, unless it is this Slurm job's own (a requeue)."""
    args = [f"data={same_images}", f"outdir={tmp_path}", "run_name=shared", *TINY, "batch=4", "tick_kimg=0.004"]
    first = subprocess.Popen([sys.executable, "-m", "jobs.train", *args, "kimg=100"], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = RunDir(tmp_path / "shared")
    deadline = time.time() + 120
    while not (run.log.is_file() and "training shared:" in run.log.read_text()):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.2)
    for extra in ([], ["--dry-run"]):
        second = train([*args, "kimg=0.008", *extra], check=False)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
        assert re.match(rf"error: {re.escape(str(run.path))}: in use by a training on \S+ \(pid {first.pid}, since ",
                        lines[0]), lines[0]
    first.kill()
    first.communicate()
    assert (run.path / ".owner").is_file()  # a killed owner releases nothing
    kimg = (run.snapshots()[-1][0] if run.latest() else 0) / 1000 + 0.008
    train([*args, f"kimg={kimg}"])  # taken over: it resumes the killed run's snapshot, or starts the folder again
    assert not (run.path / ".owner").exists() and run.snapshots()[-1][0] >= round(kimg * 1000)
    kimg = run.snapshots()[-1][0] / 1000

    (run.path / ".owner").write_text(f"gpu-node-17 4242 99 {time.time():.0f} job=555\n")  # alive on another host
    refused = train([*args, f"kimg={kimg + 0.004}"], check=False)
    assert refused.returncode == 2 and "on gpu-node-17 (pid 4242, since" in refused.stderr, refused.stderr
    assert "Slurm job 555" in refused.stderr
    train([*args, f"kimg={kimg + 0.004}"], env={"SLURM_JOB_ID": "555"})  # the same job requeued: its own claim
    assert run.snapshots()[-1][0] >= round(kimg * 1000) + 4
