"""The sample job: pixels equal to the network's, grids, walks, style mixing, task splits, kill + rerun."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.nvidia_pickles import write_nvidia_pickle
from stylegan.formats.checkpoint import load_generator, save_checkpoint
from stylegan.generate import compile_synthesis
from stylegan.imagefiles import LABEL_HEIGHT, to_uint8
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.rundir import RunDir
from stylegan.sampling import SampleOptions, seed_path, start_writer_server, write_seed_pngs
from stylegan.seeds import seed_latents
from tests.conftest import REPO, run_job, tiny_discriminator_kwargs, tiny_generator_kwargs


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> tuple[Path, Generator]:
    torch.manual_seed(3)
    G, D = Generator(**tiny_generator_kwargs()).eval(), Discriminator(**tiny_discriminator_kwargs())
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.3)
        G.mapping.w_avg.normal_()
    path = tmp_path_factory.mktemp("net") / "net.pt"
    save_checkpoint(path, {"format": 1, "G_kwargs": tiny_generator_kwargs(), "D_kwargs": tiny_discriminator_kwargs(),
                           "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()})
    return path, G


@torch.no_grad()
def expected(G: Generator, seeds: list[int], psi: float = 1.0) -> np.ndarray:
    img = G(seed_latents(seeds, G.z_dim), None, truncation_psi=psi, noise_mode="const")
    return to_uint8(img).numpy()


def sample(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_job("sample", *args, check=check, env=env, timeout=300)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_seed_pngs_equal_the_network(network, tmp_path):
    """In NVIDIA's spellings (--network, --truncation-psi); a seed listed twice is one file, and counted once."""
    path, G = network
    result = sample("--network", str(path), "--outdir", str(tmp_path), "--seeds", "0-2,1500,1", "--truncation-psi",
                    "0.7", "--workers", "1")
    assert "wrote 4 seeds of 4 to" in result.stdout, result.stdout
    assert re.search(r"start-up: [\d.]+ s Python and imports, [\d.]+ s loading the network", result.stdout)
    ref = expected(G, [0, 1, 2, 1500], psi=0.7)
    for seed, img in zip([0, 1, 2, 1500], ref, strict=True):
        assert close(read(seed_path(tmp_path, seed)), img)
    assert seed_path(tmp_path, 1500) == tmp_path / "0001" / "seed1500.png"
    lines = [json.loads(x) for x in (tmp_path / "manifest-0000.jsonl").read_text().splitlines()]
    assert [x["seed"] for x in lines] == [0, 1, 2, 1500] and lines[0]["psi"] == 0.7
    assert len(lines[0]["checkpoint_sha256"]) == 64


def test_png_writers_fork_from_a_server_that_has_imported_torch():
    """Writers fork from a server that imported the sampling code, torch included, once; from a bare forkserver
    each writer would import torch itself, in every sampling call."""
    with start_writer_server().Pool(1) as pool:
        server = pool.apply(os.getppid)
    assert server != os.getpid() and "libtorch" in Path(f"/proc/{server}/maps").read_text()


def test_compiling_up_front_traces_the_graph_that_sampling_then_runs(network, tmp_path, recorded_graphs):
    """`compile_synthesis(G, batch)` compiles at once, so that a job can say what compiling cost, and what it
    compiles is the graph that sampling runs, the padded last batch included: nothing is compiled again.
    torch.compile records the graphs here instead of compiling them."""
    graphs = recorded_graphs
    path, G_ref = network
    G = load_generator(path, torch.device("cpu"))
    opts = SampleOptions(batch=4, device="cpu", fixed_batch=True)
    compile_synthesis(G, opts.batch, opts.noise_mode)
    assert len(graphs) == 1
    write_seed_pngs(G, list(range(6)), tmp_path, opts, workers=1)
    assert len(graphs) == 1
    for seed, img in zip(range(6), expected(G_ref, list(range(6))), strict=True):
        assert close(read(seed_path(tmp_path, seed)), img)


def test_nvidia_pickle_gives_the_same_pictures(network, tmp_path):
    path, G = network
    pkl = write_nvidia_pickle(tmp_path / "net.pkl", G, Discriminator(**tiny_discriminator_kwargs()),
                              tiny_generator_kwargs(), tiny_discriminator_kwargs())
    sample("--checkpoint", str(pkl), "--outdir", str(tmp_path / "o"), "--seeds", "5,6", "--workers", "0")
    for seed, img in zip([5, 6], expected(G, [5, 6]), strict=True):
        assert close(read(seed_path(tmp_path / "o", seed)), img)


def test_two_tasks_write_the_union_without_duplicates(network, tmp_path):
    path, _ = network
    for task in (0, 1):
        sample("--checkpoint", str(path), "--outdir", str(tmp_path), "--seeds", "10-30", "--workers", "1",
               env={"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "2"})
    per_task = [{json.loads(x)["seed"] for x in (tmp_path / f"manifest-{t:04d}.jsonl").read_text().splitlines()}
                for t in (0, 1)]
    assert not per_task[0] & per_task[1] and per_task[0] | per_task[1] == set(range(10, 31))
    assert sorted(p.name for p in tmp_path.rglob("seed*.png")) == [f"seed{s:04d}.png" for s in range(10, 31)]


@pytest.mark.parametrize("signum,whole_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_stop_signal_ends_sampling_in_one_line_and_a_rerun_finishes(network, tmp_path, signum, whole_group):
    """Ctrl-C reaches the whole process group, the PNG writers too (they leave it to the sampler); a scheduler's
    SIGTERM reaches the sampler alone. Either way: one line, exit 128 + signal, complete files, a rerun finishes."""
    args = [sys.executable, "-m", "jobs.sample", "--checkpoint", str(network[0]), "--outdir", str(tmp_path),
            "--seeds", "0-1999", "--batch", "4", "--workers", "2"]
    # started as from a terminal: a shell running this suite in the background starts it with SIGINT ignored, and
    # a job leaves an ignored signal ignored
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.rglob("seed*.png"))) < 40:
        time.sleep(0.02)
    os.killpg(proc.pid, signum) if whole_group else proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith(f"stopped on {name}: "), stderr
    written = list(tmp_path.rglob("seed*.png"))
    assert 40 <= len(written) < 2000 and not list(tmp_path.rglob(".tmp-*"))
    for p in written:
        Image.open(p).load()
    assert subprocess.run(args, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    assert len(list(tmp_path.rglob("seed*.png"))) == 2000


def test_killed_and_rerun_ends_complete_with_nothing_rewritten(network, tmp_path):
    path, _ = network
    args = [sys.executable, "-m", "jobs.sample", "--checkpoint", str(path), "--outdir", str(tmp_path),
            "--seeds", "0-599", "--batch", "4", "--workers", "1"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.rglob("seed*.png"))) < 40:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("seed*.png")}
    assert 40 <= len(before) < 600
    for p in before:
        Image.open(p).load()  # every file under its final name is complete
    # A file renamed into place whose data a power loss dropped (per-seed files skip fsync): must be redone.
    lost = sorted(before)[0]
    lost.write_bytes(lost.read_bytes()[:100])
    del before[lost]
    rerun = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} of 600 seeds already written" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(list(tmp_path.rglob("seed*.png"))) == 600
    Image.open(lost).load()


def test_grid_tiles_exactly_the_seed_images(network, tmp_path):
    path, G = network
    sample("--checkpoint", str(path), "--outdir", str(tmp_path), "--grid", "3x2", "--seeds", "0-7")
    ref = expected(G, list(range(8)))
    sheets = [read(tmp_path / f"grid{n:04d}.png") for n in (0, 1)]
    assert sheets[0].shape == (32, 48, 3)
    for i in range(8):
        r, c = divmod(i % 6, 3)
        assert close(sheets[i // 6][r * 16:(r + 1) * 16, c * 16:(c + 1) * 16], ref[i])
    assert (sheets[1][16:, :] == 255).all() and (sheets[1][:16, 32:] == 255).all()
    sample("--checkpoint", str(path), "--outdir", str(tmp_path / "lab"), "--grid", "3x2", "--seeds", "0-5",
           "--grid-labels")
    labelled = read(tmp_path / "lab" / "grid0000.png")
    assert labelled.shape == (2 * (16 + LABEL_HEIGHT), 48, 3)
    assert close(labelled[16 + LABEL_HEIGHT: 32 + LABEL_HEIGHT, 16:32], ref[4])
    assert (labelled[16:16 + LABEL_HEIGHT] < 128).any()  # the caption text is drawn


@pytest.mark.parametrize("space", ["w", "z"])
def test_walk_frames_gif_and_mp4(network, tmp_path, space):
    path, G = network
    result = sample("--checkpoint", str(path), "--outdir", str(tmp_path), "--walk", "200,1000,200", "--frames", "4",
                    "--space", space, "--trunc", "0.8")
    assert f"wrote 9 frames (walk/frame0000.png ...) and walk.gif and walk.mp4 to {tmp_path}" in result.stdout
    frames = sorted((tmp_path / "walk").glob("frame*.png"))
    assert len(frames) == 2 * 4 + 1
    ends = expected(G, [200, 1000], psi=0.8)
    assert close(read(frames[0]), ends[0]) and close(read(frames[4]), ends[1]) and close(read(frames[-1]), ends[0])
    assert not close(read(frames[2]), ends[0])
    assert Image.open(tmp_path / "walk.gif").n_frames == 9
    assert sum(1 for _ in imageio.get_reader(tmp_path / "walk.mp4")) == 9


def test_style_mix_figure(network, tmp_path):
    path, G = network
    last = G.num_ws - 1
    sample("--checkpoint", str(path), "--outdir", str(tmp_path), "--style-mix", "1,2", "7,8,9",
           "--layers", f"0-{last}")
    fig = read(tmp_path / "style-mix.png")
    assert fig.shape == (3 * 16, 4 * 16, 3)
    ref = dict(zip([1, 2, 7, 8, 9], expected(G, [1, 2, 7, 8, 9]), strict=True))
    assert close(fig[:16, 16:32], ref[7]) and close(fig[16:32, :16], ref[1])
    assert close(fig[32:48, 48:64], ref[9])  # every layer taken from the column seed: its image


@pytest.mark.parametrize("args,match", [
    (["--seeds", "5-1"], "end is below the start"),
    (["--seeds", "abc"], "bad seed 'abc'"),
    (["--seeds", "-4"], "non-negative"),
    (["--seeds", "4294967296"], "at most"),
    (["--walk", "7"], "at least two seeds"),
    (["--grid", "0x3", "--seeds", "1-4"], "--grid"),
    (["--grid", "banana", "--seeds", "1-4"], "COLSxROWS"),
    (["--style-mix", "1", "2", "--layers", "0-99"], "style layers"),
    (["--style-mix", "1", "2", "--layers", "coarse"], "--layers: bad style layer 'coarse'"),
    (["--style-mix", "1", "2", "--layers", "6-0"], "--layers: bad style layer range"),
    (["--seeds", "200,1000,200", "--frames", "10"], "--frames: frames belong to a latent walk, whose seeds --walk "
                                                    "takes: write --walk 200,1000,200 --frames 10"),
])
def test_bad_input_one_line(network, tmp_path, args, match):
    result = sample("--checkpoint", str(network[0]), "--outdir", str(tmp_path), *args, check=False)
    assert result.returncode == 2 and match in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_run_folder_stands_for_its_newest_snapshot(network, tmp_path):
    """--network (NVIDIA's spelling) takes a run folder: its newest snapshot, the same pixels as the file itself."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(network[0], RunDir(run).snapshot(4000))
    sample("--network", str(run), "--outdir", str(tmp_path / "a"), "--seeds", "3", "--workers", "0")
    sample("--checkpoint", str(network[0]), "--outdir", str(tmp_path / "b"), "--seeds", "3", "--workers", "0")
    assert np.array_equal(read(seed_path(tmp_path / "a", 3)), read(seed_path(tmp_path / "b", 3)))
    empty = sample("--network", str(tmp_path / "b"), "--outdir", str(tmp_path / "c"), "--seeds", "3", check=False)
    assert empty.returncode == 2 and "a folder with no snapshot" in empty.stderr, empty.stderr


@pytest.mark.parametrize("mode", [["--seeds", "0-3", "--workers", "1"], ["--grid", "2x2", "--seeds", "0-3"]])
def test_an_outdir_under_a_file_is_one_line(network, tmp_path, mode):
    (tmp_path / "taken").write_text("a file")
    result = sample("--checkpoint", str(network[0]), "--outdir", str(tmp_path / "taken" / "out"), *mode, check=False)
    assert result.returncode == 2 and "taken: is a file, not a folder; choose another --outdir" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_checkpoint(tmp_path):
    result = sample("--checkpoint", str(tmp_path / "nope.pt"), "--outdir", str(tmp_path), "--seeds", "1",
                    check=False)
    assert result.returncode == 2 and "nope.pt: no such file (--checkpoint" in result.stderr
