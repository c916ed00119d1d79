"""Import of NVIDIA pickles: the right tensors, no code executed, hostile files refused."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from stylegan.checkpoint import build_discriminator, build_generator, load_checkpoint
from stylegan.errors import UserError
from stylegan.nvidia_pickle import load_nvidia_pickle
from tests.conftest import REPO
from tests.nvidia_pickles import write_nvidia_pickle


@pytest.fixture
def official_pickle(fixture, tmp_path):
    G, D = fixture.networks()
    marker = tmp_path / "module_src_ran"
    src = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    path = write_nvidia_pickle(tmp_path / "network.pkl", G, D, fixture.meta["G_kwargs"], fixture.meta["D_kwargs"],
                               augment_p=0.25, module_src=src)
    return path, marker


@torch.no_grad()
def test_imported_networks_give_official_outputs(fixture, official_pickle):
    path, marker = official_pickle
    ckpt = load_nvidia_pickle(path)
    G, D = build_generator(ckpt, "G_ema", path).eval(), build_discriminator(ckpt, path).eval()
    img = G(fixture.tensor("z"), fixture.tensor("c"), truncation_psi=0.7, noise_mode="const")
    assert (img - fixture.tensor("img_psi07_const")).abs().max() <= 1e-4
    assert (D(fixture.tensor("d_input"), fixture.tensor("c")) - fixture.tensor("d_logits")).abs().max() <= 1e-4
    assert ckpt["augment"]["p"] == pytest.approx(0.25)
    assert ckpt["G_kwargs"]["channel_base"] == fixture.meta["G_kwargs"]["channel_base"]
    assert not marker.exists(), "module_src was executed"


def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": Evil(), "D": Evil(), "G_ema": Evil()}))
    with pytest.raises(UserError, match="refusing to load global .*system"):
        load_nvidia_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (b"", "cannot read"),
    (b"\x80\x04garbage", "cannot read"),
    (pickle.dumps({"G": 1}), "not an NVIDIA network pickle"),
    (pickle.dumps([1, 2, 3]), "not an NVIDIA network pickle"),
])
def test_bad_pickles_give_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match) as info:
        load_nvidia_pickle(path)
    assert str(path) in str(info.value)


def test_missing_pickle(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_nvidia_pickle(tmp_path / "absent.pkl")


def run_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_convert_job_writes_our_checkpoint(fixture, official_pickle, tmp_path):
    path, _ = official_pickle
    dest = tmp_path / "converted.pt"
    result = run_job("jobs.convert", "--source", str(path), "--dest", str(dest))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    ckpt = load_checkpoint(dest)  # weights_only=True inside
    G = build_generator(ckpt, "G_ema", dest).eval()
    with torch.no_grad():
        img = G.synthesis(fixture.tensor("ws"), noise_mode="const")
    assert (img - fixture.tensor("img_const")).abs().max() <= 1e-4


@pytest.mark.parametrize("make,match", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"not a pickle"), "cannot read"),
])
def test_convert_job_bad_input_one_line_no_traceback(tmp_path, make, match):
    src = tmp_path / "in.pkl"
    make(src)
    result = run_job("jobs.convert", "--source", str(src), "--dest", str(tmp_path / "out.pt"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0] and str(src) in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.pt").exists()
    debug = run_job("jobs.convert", "--source", str(src), "--dest", str(tmp_path / "out.pt"), "--debug")
    assert "Traceback" in debug.stderr
