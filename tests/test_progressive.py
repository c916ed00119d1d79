"""StyleGAN (2018)'s progressive growing: NVIDIA's schedule, its reals at a fractional level of detail, a run
through a fade that a requeue in the middle of it continues at the same lod, and the same run on two ranks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan.errors import UserError
from stylegan.formats.checkpoint import load_checkpoint
from stylegan.rundir import RunDir
from stylegan.train.config import load_config
from stylegan.train.progressive import reals_at_lod, stage_at
from tests.conftest import run_job
from tests.image_folder import preprocess_folder, random_dataset

FFHQ_2018 = ["data=x", "family=stylegan1", "resolution=64", "lod_initial_resolution=8", "batch=32",
             "batch_per_res={4: 512, 8: 256, 16: 128, 32: 64, 64: 32}", "glr=0.001", "dlr=0.001"]


def test_the_schedule_is_nvidias():
    """NVIDIA's FFHQ schedule at 64x64 from 8x8: 600 kimg per resolution, 600 of fade, full resolution from 3600
    kimg; minibatch by resolution (8 GPUs' table) rounded to the GPU count."""
    cfg = load_config(None, FFHQ_2018)
    expected = {0: (3, 8, 256), 599: (3, 8, 256), 900: (2.5, 16, 128), 1200: (2, 16, 128), 2100: (1.5, 32, 64),
                3000: (1, 32, 64), 3300: (0.5, 64, 32), 3600: (0, 64, 32), 9000: (0, 64, 32)}
    for kimg, (lod, res, batch) in expected.items():
        stage = stage_at(cfg, kimg * 1000, world=1)
        assert (stage.lod, stage.resolution, stage.batch) == (lod, res, batch), kimg
    assert stage_at(cfg, 0, world=3).batch == 255
    assert not stage_at(cfg, 900_000, 1).same_level(stage_at(cfg, 1_200_000, 1))  # the fade ended: reset Adam
    assert stage_at(cfg, 900_000, 1).same_level(stage_at(cfg, 1_100_000, 1))
    off = load_config(None, ["data=x", "family=stylegan1", "resolution=64", "batch=32"])
    assert stage_at(off, 0, 1) == stage_at(off, 10 ** 9, 1) and stage_at(off, 0, 1).lod == 0


def nvidia_reals(uint8: np.ndarray, lod: float) -> np.ndarray:
    """NVIDIA's recipe written from its description: dataset_tool stores level k as rint of the float 2x2 means
    taken k times; process_reals maps to [-1, 1], blends with the 2x2 means by lod's fraction, tiles up."""
    img = uint8.astype(np.float32)
    for _ in range(int(np.floor(lod))):
        img = (img[:, :, 0::2, 0::2] + img[:, :, 0::2, 1::2] + img[:, :, 1::2, 0::2] + img[:, :, 1::2, 1::2]) * 0.25
    x = np.rint(img).clip(0, 255).astype(np.float32) * (2 / 255) - 1
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), keepdims=True)
    y = np.tile(y, (1, 1, 1, 2, 1, 2)).reshape(n, c, h, w)
    x = x + (y - x) * (lod - np.floor(lod))
    f = 2 ** int(np.floor(lod))
    return np.tile(x.reshape(n, c, h, 1, w, 1), (1, 1, 1, f, 1, f)).reshape(n, c, h * f, w * f)


@pytest.mark.parametrize("lod", [0.0, 0.3, 1.0, 1.75, 2.5, 3.0])
def test_reals_at_a_level_of_detail_are_nvidias(lod):
    uint8 = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    ours = reals_at_lod(torch.from_numpy(uint8).float() / 127.5 - 1, lod).numpy()
    assert np.abs(ours - nvidia_reals(uint8, lod)).max() < 1e-6


def test_progressive_growing_needs_the_2018_networks_and_sane_tables():
    with pytest.raises(UserError, match="family=stylegan1"):
        load_config(None, ["data=x", "lod_initial_resolution=8"])
    with pytest.raises(UserError, match="power of two from 4 to resolution 64"):
        load_config(None, ["data=x", "family=stylegan1", "resolution=64", "lod_initial_resolution=128"])
    with pytest.raises(UserError, match="batch_per_res must map resolutions to positive numbers"):
        load_config(None, ["data=x", "family=stylegan1", "lod_initial_resolution=8", "batch_per_res={8: 0}"])


TINY_GROWING = ["family=stylegan1", "resolution=16", "z_dim=32", "w_dim=32", "channel_base=256", "channel_max=32",
                "map_layers=2", "mbstd_group=2", "workers=1", "aug=noaug", "mirror=false", "r1_gamma=10",
                "r1_interval=1", "pl_weight=0", "lod_initial_resolution=8", "lod_training_kimg=0.032",
                "lod_transition_kimg=0.032", "batch=8", "batch_per_res={8: 16}", "tick_kimg=0.001", "snap=1"]


def lods(run: Path) -> dict[float, tuple[float, int]]:
    """(lod, batch) of each tick by kimg."""
    rows = (json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines())
    return {r["kimg"]: (r["lod"], r["batch"]) for r in rows}


def test_a_run_grows_through_a_fade_and_a_requeue_inside_it_resumes_at_the_same_lod(tmp_path):
    """From 8x8 (batch 16) through the fade to 16x16 (batch 8): the tick lines and stats carry the lod, Adam's state
    is reset where the fade starts and ends, and a run stopped inside the fade (at a snapshot) continues with the
    lods and batches of the run that was never stopped."""
    data = random_dataset(tmp_path, 16, 16)
    common = [f"data={data}", f"outdir={tmp_path}", *TINY_GROWING]
    run_job("train", *common, "run_name=straight", "kimg=0.08")
    run_job("train", *common, "run_name=requeued", "kimg=0.056")
    stopped = load_checkpoint(RunDir(tmp_path / "requeued").latest())
    assert 0 < float(stopped["G"]["synthesis.lod"]) < 1  # saved inside the fade
    run_job("train", *common, "run_name=requeued", "kimg=0.08")
    straight, requeued = lods(tmp_path / "straight"), lods(tmp_path / "requeued")
    assert straight[0.016] == (1, 16) and 0 < straight[0.064][0] < 1 and straight[0.08] == (0, 8)
    assert requeued == straight
    log = (tmp_path / "straight" / "log.txt").read_text()
    assert "lod 1, 8x8, batch 16" in log and "16x16 fading in, batch 8" in log and log.count("Adam state reset") == 2
    assert "resumed from" in (tmp_path / "requeued" / "log.txt").read_text()
    rows = [json.loads(x) for x in (tmp_path / "requeued" / "stats.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r[k]) for r in rows for k in ("loss_G", "loss_D", "r1_penalty"))


def test_two_ranks_grow_as_one_rank_with_the_same_rounds(tmp_path):
    """StyleGAN (2018) growing under torchrun (2 gloo processes): the same lods and batches tick by tick as one
    process running the same rounds, and the same losses wherever both start a tick from the same state: the first
    tick, and the fade's first tick resumed from the one process's snapshot where the fade starts, whose first step
    resets Adam's moments after a resume too (every image of the set is one image, so each rank's reals are the
    same). Later ticks of the two runs are not compared: each tick multiplies a change of float order in the
    gradients' sums (threads, kernels) about tenfold, 1e-7 to 1e-2 in four ticks."""
    src = tmp_path / "img"
    src.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for i in range(16):
        Image.fromarray(image).save(src / f"{i}.png")
    data = preprocess_folder(src, tmp_path / "data", 16)
    common = [f"data={data}", f"outdir={tmp_path}", *TINY_GROWING, "batch_gpu=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = run_job("train", *common, "kimg=0.08", "run_name=two", nproc=2, env=env)
    run_job("train", *common, "kimg=0.08", "run_name=one", env=env)
    fade = RunDir(tmp_path / "fade")
    fade.checkpoints.mkdir(parents=True)
    shutil.copy(RunDir(tmp_path / "one").snapshot(48), fade.snapshot(48))
    run_job("train", *common, "kimg=0.056", "run_name=fade", nproc=2, env=env)
    assert "2 process(es)" in two.stdout
    assert lods(tmp_path / "two") == lods(tmp_path / "one")
    rows = {name: [json.loads(x) for x in (tmp_path / name / "stats.jsonl").read_text().splitlines()]
            for name in ("one", "two", "fade")}
    assert len(rows["one"]) == len(rows["two"]) >= 6 and any(0 < r["lod"] < 1 for r in rows["two"])  # a fade
    in_fade = next(r for r in rows["one"] if r["kimg"] == rows["fade"][0]["kimg"])
    assert 0 < rows["fade"][0]["lod"] == in_fade["lod"] < 1
    for a, b in ((rows["one"][0], rows["two"][0]), (in_fade, rows["fade"][0])):
        for key in ("loss_G", "loss_D", "r1_penalty"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["kimg"], key)
