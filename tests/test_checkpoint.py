"""Checkpoint files: weights_only round trip, atomic writes under SIGKILL, exports, corrupt files."""

import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from stylegan.errors import UserError
from stylegan.formats.checkpoint import (
    build_discriminator,
    build_generator,
    capture_rng,
    check_same_architecture,
    export_safetensors,
    is_finite,
    load_any,
    load_checkpoint,
    load_generator,
    restore_rng,
    save_checkpoint,
)
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.rundir import RunDir
from tests.conftest import REPO, tiny_discriminator_kwargs, tiny_generator_kwargs


def training_checkpoint(kimg: int = 0) -> dict:
    torch.manual_seed(kimg)
    G, D = Generator(**tiny_generator_kwargs()), Discriminator(**tiny_discriminator_kwargs())
    opt = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99))
    G(torch.randn(2, 16), None).mean().backward()
    opt.step()
    return {"format": 1, "G_kwargs": tiny_generator_kwargs(), "D_kwargs": tiny_discriminator_kwargs(),
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(), "G_opt": opt.state_dict(),
            "augment": {"p": 0.1}, "progress": {"cur_nimg": kimg * 1000, "cur_tick": 3},
            "rng": capture_rng(), "config": {"batch": 4, "lr": 0.0025, "name": "run"}}


def test_round_trip_with_weights_only(tmp_path):
    ckpt = training_checkpoint(4)
    path = tmp_path / "network-snapshot-000004.000.pt"
    save_checkpoint(path, ckpt)
    back = torch.load(path, weights_only=True)
    assert back["progress"] == ckpt["progress"] and back["config"] == ckpt["config"]
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(back[key][k], v) for k, v in ckpt[key].items())
    assert back["G_opt"]["state"][0]["exp_avg_sq"].equal(ckpt["G_opt"]["state"][0]["exp_avg_sq"])
    build_generator(back, "G", path)
    build_discriminator(back, path)


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": capture_rng()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restore_rng(torch.load(path, weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_sigkill_during_write_never_leaves_a_partial_snapshot(tmp_path):
    old = training_checkpoint(1)
    run = RunDir(tmp_path)
    path = run.snapshot(1000)
    save_checkpoint(path, old)
    # A writer process that is SIGKILLed after writing every byte of the temp file but before the rename.
    code = (
        "import os, signal, sys, torch\n"
        "from stylegan.formats.checkpoint import save_checkpoint\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"save_checkpoint({str(path)!r}, {{'format': 1, 'G_kwargs': {{}}, 'big': torch.ones(1 << 20)}})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert result.returncode == -9
    assert [p for p in run.checkpoints.iterdir() if p.name.startswith(".tmp-")], "the killed writer left no temp"
    assert run.snapshots() == [(1000, path)]
    assert load_checkpoint(path)["progress"] == old["progress"]


@pytest.mark.parametrize("content,match", [
    (None, "no such checkpoint"),
    (b"", "corrupt"),
    (b"random bytes" * 10, "corrupt"),
])
def test_bad_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "snap.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "snap.pt"
    save_checkpoint(path, training_checkpoint())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(path)


def test_checkpoint_with_pickled_class_is_refused(tmp_path):
    path = tmp_path / "snap.pt"
    torch.save({"format": 1, "G_kwargs": {}, "obj": random.Random()}, path)
    with pytest.raises(UserError, match="corrupt or not a stylegan checkpoint"):
        load_checkpoint(path)


def test_architecture_mismatch_is_reported(tmp_path):
    ckpt = training_checkpoint()
    ckpt["G_kwargs"] = {**ckpt["G_kwargs"], "channel_max": 32}
    with pytest.raises(UserError, match="does not fit"):
        build_generator(ckpt, "G", tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"channel_max: config 16 vs checkpoint 32"):
        check_same_architecture("x.pt", "G", tiny_generator_kwargs(), ckpt["G_kwargs"])


def test_safetensors_export_gives_the_same_images(tmp_path):
    ckpt = training_checkpoint()
    dest = export_safetensors(ckpt, tmp_path / "g.safetensors")
    assert (tmp_path / "g.json").is_file()
    G1, G2 = build_generator(ckpt, "G_ema").eval(), load_generator(dest)
    z = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(G1(z, None, noise_mode="const"), G2(z, None, noise_mode="const"))
    assert set(load_any(dest)) == {"format", "family", "G_kwargs", "G_ema"} and load_any(dest)["family"] == "stylegan2"
    with pytest.raises(UserError, match="has no discriminator"):
        build_discriminator(load_any(dest), dest)


def test_unknown_network_suffix(tmp_path):
    with pytest.raises(UserError, match="unknown network file type"):
        load_any(tmp_path / "net.h5")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_is_finite_finds_one_nan_or_infinity_anywhere(dtype):
    t = torch.randn(3, 1000).to(dtype)
    assert is_finite(t) and is_finite(t[0, 0]) and is_finite(torch.zeros(0, dtype=dtype))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for where in ((0, 0), (1, 517), (2, 999)):
            u = t.clone()
            u[where] = bad
            assert not is_finite(u) and not is_finite(u[where])
    assert is_finite(torch.tensor([1, 2])) and is_finite(torch.tensor([True]))
