"""Metrics and the evaluation job: Fréchet distance numerics, FID/SWD behaviour, caching, the snapshot watcher."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stylegan.distributed import DistEnv
from stylegan.errors import UserError
from stylegan.evaluation import RunEvaluator
from stylegan.formats.checkpoint import save_checkpoint
from stylegan.metrics import distances, diversity, ppl, swd
from stylegan.metrics.compute import MetricSpec, fake_features, parse_metric, real_features
from stylegan.metrics.detector import WEIGHTS, Detector
from stylegan.metrics.inception import FIDInceptionV3
from stylegan.models.stylegan2 import Generator
from stylegan.rundir import RunDir
from tests.conftest import REPO, tiny_discriminator_kwargs, tiny_generator_kwargs
from tests.image_folder import preprocess_folder
from tests.tensorboard_server import served_steps


def test_frechet_distance_closed_form_and_scipy():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    d1, d2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.square(mu1 - mu2).sum() + (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum()
    assert distances.frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-10)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + np.eye(8), b @ b.T + np.eye(8)
    assert distances.frechet_distance(mu1[:1].repeat(8), s1, mu2[:1].repeat(8), s2) == pytest.approx(
        distances.frechet_distance_scipy(mu1[:1].repeat(8), s1, mu2[:1].repeat(8), s2), rel=1e-6)
    assert abs(distances.frechet_distance(mu1, np.diag(d1), mu1, np.diag(d1))) < 1e-9
    singular = np.zeros((8, 8))  # fewer samples than features: must not fail or go complex
    assert np.isfinite(distances.frechet_distance(np.zeros(8), singular, np.ones(8), s2))


def test_fid_covariance_divides_by_n_as_nvidias():
    mean, cov = distances.gaussian_stats(np.array([[0.0, 0.0], [2.0, 4.0]]))
    assert np.allclose(mean, [1, 2]) and np.allclose(cov, [[1, 2], [2, 4]])  # N - 1 would give [[2, 4], [4, 8]]


def test_fid_kid_swd_separate_distributions():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2000, 16))
    b = rng.normal(size=(2000, 16))
    c = rng.normal(loc=1.0, size=(2000, 16))
    fid = lambda x, y: distances.frechet_distance(*distances.gaussian_stats(x), *distances.gaussian_stats(y))  # noqa: E731
    assert fid(a, a) == pytest.approx(0, abs=1e-8)
    assert fid(a, b) < 0.2 < 10 < fid(a, c)
    assert abs(distances.kernel_inception_distance(a, b)) < 0.01 < distances.kernel_inception_distance(a, c)
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(256, 3, 8, 8), size=32, mode="bilinear") * 255
    noise = torch.rand(128, 3, 32, 32) * 255
    da, db = swd.patch_descriptors(smooth[:128].byte(), gen), swd.patch_descriptors(smooth[128:].byte(), gen)
    dn = swd.patch_descriptors(noise.byte(), gen)
    assert swd.swd(da, db) < 0.4 * swd.swd(da, dn)  # measured 21 vs 79 with 16k patches per set


def test_the_detector_sees_whole_batches_and_the_padding_is_dropped(detector_file):
    """A last batch of another size would have cuDNN's benchmark mode time every convolution again: the generator and
    the detector see whole batches, and only the wanted rows come back, in seed order."""
    det = Detector(detector_file, torch.device("cpu"))
    sizes = []

    def recording(imgs: torch.Tensor) -> torch.Tensor:
        sizes.append(len(imgs))
        return det(imgs)

    G = Generator(**tiny_generator_kwargs()).eval()
    spec = parse_metric("fid1k")
    features = {}
    for num in (8, 10):
        torch.manual_seed(0)  # the same noise for the batches both calls share
        features[num] = fake_features(G, spec, num, recording, torch.device("cpu"), batch=4)
    assert sizes == [4, 4] + [4, 4, 4] and len(features[10]) == 10
    assert np.array_equal(features[10][:8], features[8])
    assert not np.array_equal(features[10][8], features[10][9])  # rows of their own, not the padding's copy


def make_data(root: Path, count: int, kind: str, start: int = 0) -> Path:
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        if kind == "smooth":
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((16, 16), Image.BILINEAR)
        else:
            img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        img.save(src / f"{i:04d}.png")
    return preprocess_folder(src, root / "data")


def test_fid_on_real_sets_and_the_statistics_cache(detector_file, tmp_path):
    det = Detector(detector_file, torch.device("cpu"))
    spec = parse_metric("fid1k")
    halves = [make_data(tmp_path / f"h{i}", 300, "smooth", start=1000 * i) for i in range(2)]
    noise = make_data(tmp_path / "noise", 300, "noise")
    feats = [real_features(d, spec, det, torch.device("cpu"))[0] for d in (*halves, noise)]
    fid = lambda x, y: distances.frechet_distance(*distances.gaussian_stats(x), *distances.gaussian_stats(y))  # noqa: E731
    assert fid(feats[0], feats[0]) == pytest.approx(0, abs=1e-6)
    assert fid(feats[0], feats[1]) < 0.2 * fid(feats[0], feats[2])
    again, cached = real_features(halves[0], spec, det, torch.device("cpu"))
    assert cached and np.array_equal(again, feats[0])
    # A run trained with x-flips is scored against the reals and their flips (NVIDIA's --mirror=1 dataset): a cache
    # of its own, every real row, and as many rows again of the flipped images.
    mirrored, cached = real_features(halves[0], spec, det, torch.device("cpu"), mirror=True)
    assert not cached and len(mirrored) == 2 * len(feats[0])
    rows = {r.tobytes() for r in mirrored}
    assert all(r.tobytes() in rows for r in feats[0]) and len(rows - {r.tobytes() for r in feats[0]}) > 250
    assert len(list(halves[0].glob("stats-fid-*.pt"))) == 2
    # Rebuild the dataset in place with one image more (the stats cache stays in the folder): no stale reuse.
    for p in halves[0].iterdir():
        if not p.name.startswith("stats-"):
            p.unlink()
    make_data(tmp_path / "h0", 1, "smooth", start=5000)
    assert list(halves[0].glob("stats-fid-*.pt"))
    changed, cached = real_features(halves[0], spec, det, torch.device("cpu"))
    assert not cached and len(changed) == 301


def snapshot_name(kimg: int) -> str:
    return RunDir(".").snapshot(kimg * 1000).name


def write_snapshot(ckpt_dir: Path, G: Generator, kimg: int) -> None:
    save_checkpoint(ckpt_dir / snapshot_name(kimg), {
        "format": 1, "G_kwargs": tiny_generator_kwargs(), "D_kwargs": tiny_discriminator_kwargs(),
        "G": G.state_dict(), "G_ema": G.state_dict(), "progress": {"cur_nimg": kimg * 1000}})


def run_with_snapshots(path: Path, data: Path, kimgs: list[int], last_kimg: int | None = None) -> RunDir:
    """A run folder as training leaves it: config.yaml (the data, the run's length) and a snapshot at each kimg."""
    run = RunDir(path)
    run.checkpoints.mkdir(parents=True)
    run.config.write_text(f"data: {data}\nkimg: {max(kimgs) if last_kimg is None else last_kimg}\n")
    G = Generator(**tiny_generator_kwargs())
    for kimg in kimgs:
        write_snapshot(run.checkpoints, G, kimg)
    return run


def test_watcher_follows_a_training_run_and_two_evaluators_never_repeat(tmp_path):
    """Both watchers start before the run folder exists (submitted with the training job), wait for it, then
    score each snapshot once between them."""
    data = make_data(tmp_path / "d", 64, "smooth")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "jobs.evaluate", "--run", str(run), "--metrics", "swd", "--watch", "--poll", "0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"evaluator{i}.log" for i in range(2)]
    evaluators = [subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
                  for log in logs]
    deadline = time.time() + 120
    while not all("waiting for training to start" in log.read_text() for log in logs):
        assert time.time() < deadline and all(p.poll() is None for p in evaluators), [log.read_text() for log in logs]
        time.sleep(0.2)
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    G = Generator(**tiny_generator_kwargs())
    write_snapshot(ckpts, G, 0)
    (ckpts / ".tmp-1a2b-network-snapshot-000009.000.pt").write_bytes(b"half a file")  # never to be read
    (run / "config.yaml").write_text(f"data: {data}\nkimg: 3\n")  # the trainer writes it once it has started
    time.sleep(2)
    (ckpts / snapshot_name(1)).write_bytes(b"corrupt snapshot")
    for kimg in (2, 3):  # the "training run" goes on writing snapshots
        with torch.no_grad():
            G.mapping.fc0.weight.add_(0.5)
        write_snapshot(ckpts, G, kimg)
        time.sleep(1.5)
    for p in evaluators:
        p.wait(timeout=300)
    outputs = [log.read_text() for log in logs]
    assert all(p.returncode == 0 for p in evaluators), outputs
    rows = [json.loads(line) for line in (run / "metric-swd.jsonl").read_text().splitlines()]
    assert sorted(r["snapshot"] for r in rows) == [snapshot_name(k) for k in (0, 2, 3)]  # once each
    assert all(np.isfinite(r["value"]) and r["metric"] == "swd" for r in rows)
    assert "skipping corrupt snapshot" in "".join(outputs) and snapshot_name(1) in "".join(outputs)
    events = EventAccumulator(str(run))
    events.Reload()
    steps = sorted(e.step for e in events.Scalars("Metrics/swd"))
    assert steps == [0, 2000, 3000]  # the snapshots' image counts
    assert not list(run.glob(".lock-*"))


def test_a_corrupt_newest_snapshot_does_not_stop_the_watcher(tmp_path, capsys):
    """The watcher read the newest snapshot to learn whether training had finished, and died on a corrupt one."""
    data = make_data(tmp_path / "d", 32, "smooth")
    run = run_with_snapshots(tmp_path / "run", data, [0], last_kimg=1)
    (run.checkpoints / snapshot_name(1)).write_bytes(b"corrupt snapshot")
    evaluator = RunEvaluator(run.path, ["swd"], None, None, DistEnv(0, 1, 0, torch.device("cpu")))
    evaluator.run(watch=True, poll_s=0.1)
    assert [r["snapshot"] for r in run.results("swd")] == [snapshot_name(0)]
    assert f"skipping corrupt snapshot: {run.checkpoints / snapshot_name(1)}" in capsys.readouterr().out


def test_tensorboard_shows_every_result_whatever_order_they_were_scored_in(tmp_path):
    """Scored newest first, the results were written to TensorBoard with falling steps, and TensorBoard kept only the
    last one written. Each evaluation now writes the whole curve, in order, to a new event file (and removes its
    last): TensorBoard's own server shows every point."""
    data = make_data(tmp_path / "d", 32, "smooth")
    run = run_with_snapshots(tmp_path / "run", data, [0, 2, 4])
    RunEvaluator(run.path, ["swd"], None, None, DistEnv(0, 1, 0, torch.device("cpu"))).run(watch=False)
    assert [r["kimg"] for r in run.results("swd")] == [4, 2, 0]  # newest first
    assert len(list(run.path.glob("events.out.tfevents.*.eval"))) == 1
    assert served_steps(run.path, "Metrics/swd", want=3) == [0, 2000, 4000]


def test_one_network_scores_every_snapshot_as_a_fresh_one_would(tmp_path):
    """The evaluator builds (and compiles) one network and copies each snapshot's weights into it; each snapshot
    still scores what an evaluator that reads only that snapshot gives, and a corrupt one between them is skipped."""
    data = make_data(tmp_path / "d", 32, "smooth")
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    G = Generator(**tiny_generator_kwargs())
    run = run_with_snapshots(tmp_path / "run", data, [], last_kimg=3)
    alone = {}
    for kimg in (0, 2, 3):
        with torch.no_grad():
            G.mapping.fc0.weight.add_(0.5)
        write_snapshot(run.checkpoints, G, kimg)
        single = run_with_snapshots(tmp_path / f"alone{kimg}", data, [], last_kimg=kimg)
        write_snapshot(single.checkpoints, G, kimg)
        RunEvaluator(single.path, ["swd"], None, None, env).run(watch=False)
        alone[kimg] = single.results("swd")[0]["value"]
    (run.checkpoints / snapshot_name(1)).write_bytes(b"corrupt snapshot")
    evaluator = RunEvaluator(run.path, ["swd"], None, None, env)
    evaluator.run(watch=False)
    assert {round(r["kimg"]): r["value"] for r in run.results("swd")} == alone
    assert len(set(alone.values())) == 3
    assert evaluator.generator(run.checkpoints / snapshot_name(0)) is evaluator.generator(
        run.checkpoints / snapshot_name(3))


def test_score_only_the_latest_or_every_nth_snapshot(tmp_path):
    data = make_data(tmp_path / "d", 32, "smooth")
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    runs = {}
    for name, select in (("latest", dict(latest=True)), ("every2", dict(every=2))):
        run = runs[name] = run_with_snapshots(tmp_path / name, data, list(range(5)))
        RunEvaluator(run.path, ["swd"], None, None, env, **select).run(watch=True, poll_s=0.1)
    assert [r["snapshot"] for r in runs["latest"].results("swd")] == [snapshot_name(4)]
    assert sorted(r["snapshot"] for r in runs["every2"].results("swd")) == [snapshot_name(k) for k in (0, 2, 4)]
    with pytest.raises(UserError, match="--every 0"):
        RunEvaluator(runs["latest"].path, ["swd"], None, None, env, every=0)


def test_garbled_empty_and_folder_locks_neither_crash_nor_hide_a_snapshot(tmp_path, capsys):
    data = make_data(tmp_path / "d", 32, "smooth")
    run = run_with_snapshots(tmp_path / "run", data, [0, 1, 2])
    snaps = [p for _, p in run.snapshots()]
    run.claim_path(snaps[0], "swd").write_bytes(b"\xff\xfe\x00garbage")
    run.claim_path(snaps[1], "swd").write_bytes(b"")  # its writer died before writing the owner line
    for lock in (run.claim_path(p, "swd") for p in snaps[:2]):
        os.utime(lock, (time.time() - 60, time.time() - 60))
    run.claim_path(snaps[2], "swd").mkdir()
    RunEvaluator(run.path, ["swd"], None, None, DistEnv(0, 1, 0, torch.device("cpu"))).run(watch=True, poll_s=0.1)
    assert sorted(r["snapshot"] for r in run.results("swd")) == [snaps[0].name, snaps[1].name]
    assert "a folder where a lock file belongs; remove it" in capsys.readouterr().out


def test_a_killed_evaluators_claim_is_taken_over(tmp_path):
    """A lock left by an evaluator that was killed used to make reruns skip the snapshot in silence for an hour."""
    data = make_data(tmp_path / "d", 32, "smooth")
    run = run_with_snapshots(tmp_path / "run", data, [0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = run.claim_path(run.latest(), "swd")
    start = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    lock.write_text(f"{os.uname().nodename} {dead.stdout.strip()} {start} 0\n")  # a pid that no longer runs
    cmd = [sys.executable, "-m", "jobs.evaluate", "--run", str(run.path), "--metrics", "swd,diversity"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and len(run.results("swd")) == 1, result.stdout + result.stderr
    assert 0 < run.results("diversity")[0]["value"] < 2
    assert not lock.exists()
    lock.write_text(f"{os.uname().nodename} {os.getpid()} {start} 0\n")  # this live process holds it
    result = subprocess.run([*cmd[:-1], "swd"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and len(run.results("swd")) == 1  # already done: nothing to claim


def test_fid_without_detector_fails_at_start_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: somewhere\n")
    result = subprocess.run([sys.executable, "-m", "jobs.evaluate", "--run", str(run), "--metrics", "fid50k_full"],
                            cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "STYLEGAN_CACHE": str(tmp_path / "empty")})
    assert result.returncode == 2 and "no Inception detector in" in result.stderr
    assert "jobs.fetch_weights" in result.stderr
    assert str(tmp_path / "empty") in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_pytorch_fid_format_weights_load_into_our_inception(tmp_path):
    """pytorch-fid's state-dict format, read by our network: random weights saved and reloaded give the features
    of the network that saved them; a file under the published name must carry the published hash."""
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    for m in net.modules():  # every tensor random and scale-preserving, so the features depend on the image
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, (lo, hi) in ((m.weight, (0.8, 1.2)), (m.bias, (-0.1, 0.1)), (m.running_mean, (-0.1, 0.1)),
                                (m.running_var, (0.8, 1.2))):
                t.data.uniform_(lo, hi)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "my-inception.pth"
    torch.save(state, path)
    imgs = torch.randint(0, 256, (3, 3, 40, 56), dtype=torch.uint8)
    det = Detector(path, torch.device("cpu"))
    feats = det(imgs)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(feats, net(imgs), atol=1e-5)
    assert (feats[0] - feats[1]).abs().max() > 0.01  # measured 0.16: the features depend on the image
    published = tmp_path / WEIGHTS["pytorch-fid"].name
    published.write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="does not match the expected 6726825d"):
        Detector(published, torch.device("cpu"))
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="neither a TorchScript detector nor pytorch-fid"):
        Detector(tmp_path / "other.pth", torch.device("cpu"))


def test_fetch_weights_checks_hashes_and_writes_atomically(detector_file, tmp_path):
    """The real download path (urllib) on file:// URLs: a site mirror holding NVIDIA's file and a damaged
    pytorch-fid file. The good one lands in the cache, the damaged one is refused and leaves nothing behind."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / WEIGHTS["nvidia"].name).write_bytes(detector_file.read_bytes())
    (mirror / WEIGHTS["pytorch-fid"].name).write_bytes(b"not the published weights")
    cache = tmp_path / "cache"
    env = {**os.environ, "STYLEGAN_CACHE": str(cache)}
    fetch = lambda *a: subprocess.run([sys.executable, "-m", "jobs.fetch_weights", "--mirror", mirror.as_uri(), *a],  # noqa: E731
                                      cwd=REPO, capture_output=True, text=True, env=env)
    result = fetch()
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "does not match the expected 6726825d; nothing written" in result.stderr
    assert sorted(p.name for p in cache.iterdir()) == [WEIGHTS["nvidia"].name]
    assert (cache / WEIGHTS["nvidia"].name).read_bytes() == detector_file.read_bytes()
    assert hashlib.sha256(detector_file.read_bytes()).hexdigest() in result.stdout
    assert "present" in fetch("--which", "nvidia").stdout
    missing = subprocess.run([sys.executable, "-m", "jobs.fetch_weights", "--which", "nvidia", "--force",
                              "--mirror", (tmp_path / "nowhere").as_uri()], cwd=REPO, capture_output=True,
                             text=True, env=env)
    assert missing.returncode == 2 and "download failed" in missing.stderr
    assert (cache / WEIGHTS["nvidia"].name).read_bytes() == detector_file.read_bytes()  # the old copy survives


def test_two_ranks_compute_the_same_metrics_as_one(detector_file, vgg_file, tmp_path):
    """torchrun with 2 gloo ranks: generation, real features and fake features split over ranks and gathered; FID
    with the Inception stand-in, precision/recall and path length with the VGG16 stand-in."""
    data = make_data(tmp_path / "d", 120, "smooth")
    G = Generator(**tiny_generator_kwargs())
    write_snapshot(tmp_path, G, 0)
    cmd = ["-m", "jobs.evaluate", "--checkpoint", str(tmp_path / snapshot_name(0)), "--data", str(data),
           "--metrics", "fid1k,pr1k3_full,ppl1k_wend", "--detector", str(detector_file), "--vgg", str(vgg_file),
           "--batch", "48"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    values = []
    for launcher in ([sys.executable], [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc-per-node=2"]):
        for stats in data.glob("stats-*"):
            stats.unlink()  # both runs compute the real statistics themselves
        result = subprocess.run([*launcher, *cmd], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert len(rows) == 4 and not any(r["real_stats_cached"] for r in rows)  # printed once, by rank 0
        values.append({r["metric"]: r["value"] for r in rows})
    assert list(values[0]) == ["fid1k", "pr1k3_full_precision", "pr1k3_full_recall", "ppl1k_wend"]
    assert values[0]["fid1k"] > 0 and values[0]["ppl1k_wend"] > 0
    assert 0 <= values[0]["pr1k3_full_precision"] <= 1 and 0 <= values[0]["pr1k3_full_recall"] <= 1
    assert values[1] == pytest.approx(values[0], rel=1e-4)


def test_diversity_sees_a_collapse_that_colour_hides():
    """One motif in many colours (the collapse seen on the GPU) scores near 0; varied images near 1."""
    rng = np.random.default_rng(0)
    varied = torch.from_numpy(rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8))
    motif = torch.from_numpy(rng.integers(0, 256, (1, 1, 32, 32))).float()
    colours = torch.from_numpy(rng.uniform(0.2, 1.0, (200, 3, 1, 1)))
    collapsed = (motif * colours + 30 * torch.from_numpy(rng.uniform(0, 1, (200, 3, 1, 1)))).clamp(0, 255)
    real = diversity.descriptors(varied[:100])
    assert diversity.diversity_ratio(real, diversity.descriptors(varied[100:])) == pytest.approx(1.0, abs=0.05)
    assert diversity.diversity_ratio(real, diversity.descriptors(collapsed.to(torch.uint8))) < 0.2
    assert parse_metric("diversity") == MetricSpec("diversity", "div", 1000) and parse_metric("diversity").weight_free


def test_metric_names():
    assert parse_metric("fid50k_full") == MetricSpec("fid50k_full", "fid", 50000)
    assert parse_metric("kid10k").kind == "kid"
    pr = parse_metric("pr50k3_full")
    assert pr == MetricSpec("pr50k3_full", "pr", 50000) and pr.detector == "vgg16"
    assert pr.results == ["pr50k3_full_precision", "pr50k3_full_recall"]  # NVIDIA's result names
    assert parse_metric("ppl2_wend") == MetricSpec("ppl2_wend", "ppl", 50000)
    assert parse_metric("ppl1k_wend").num_gen == 1000 and parse_metric("fid1k").detector == "inception"
    for name in ("lpips", "pr50k", "ppl2_zfull", "fid0k", "kid0k_full", "pr0k3_full", "ppl0k_wend"):  # 0k: no images
        with pytest.raises(Exception, match="unknown metric"):
            parse_metric(name)


def test_sigterm_ends_a_waiting_watcher_in_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "jobs.evaluate", "--run", str(tmp_path / "not-yet"), "--watch",
                             "--poll", "0.2", "--metrics", "swd"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the watcher's first line: it is running and waiting
    assert "waiting for training to start" in line, line + proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and stderr.strip().startswith("stopped on SIGTERM: "), stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_precision_recall_tells_collapse_from_a_matching_set():
    """Kynkäänniemi's precision/recall on made-up features: a second sample of the same distribution scores high on
    both, a collapse onto a few reals keeps precision and loses recall, a distant set has neither."""
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(600, 8, generator=gen)
    same = torch.randn(600, 8, generator=gen)
    collapsed = real[:15].repeat(40, 1) + 0.01 * torch.randn(600, 8, generator=gen)
    p, r = distances.precision_recall(real, same, rows=128)
    assert p > 0.7 and r > 0.7, (p, r)
    p, r = distances.precision_recall(real, collapsed, rows=128)
    assert p > 0.95 and r < 0.2, (p, r)
    assert distances.precision_recall(real, same + 100) == (0.0, 0.0)


def test_path_length_is_zero_when_w_changes_nothing(vgg_file):
    """With every style affine zeroed the image ignores w: PPL 0. The network's own weights give a positive PPL,
    and the half-precision flags it turns off for the measurement are restored."""
    detector = Detector(vgg_file, torch.device("cpu"))
    G = Generator(**tiny_generator_kwargs())
    G.synthesis.b16.use_fp16 = True  # float32 on the CPU all the same; the flag must come back
    assert ppl.path_length(G, detector, 64, torch.device("cpu"), batch=32) > 0
    assert G.synthesis.b16.use_fp16
    with torch.no_grad():
        for name, p in G.synthesis.named_parameters():
            if "affine.weight" in name:
                p.zero_()
    assert ppl.path_length(G, detector, 64, torch.device("cpu"), batch=32) == 0


def test_precision_and_recall_are_two_results_of_one_evaluation(vgg_file, tmp_path):
    data = make_data(tmp_path / "d", 32, "smooth")
    run = run_with_snapshots(tmp_path / "run", data, [0])
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    for _ in range(2):  # the second pass finds the results and scores nothing again
        RunEvaluator(run.path, ["pr1k3_full"], None, None, env, vgg_path=str(vgg_file)).run(watch=False)
    rows = [run.results(n) for n in ("pr1k3_full_precision", "pr1k3_full_recall")]
    assert [len(r) for r in rows] == [1, 1] and rows[0][0]["detector_sha256"] == hashlib.sha256(
        vgg_file.read_bytes()).hexdigest()
    events = EventAccumulator(str(run.path))
    events.Reload()
    assert {t for t in events.Tags()["scalars"]} == {"Metrics/pr1k3_full_precision", "Metrics/pr1k3_full_recall"}
