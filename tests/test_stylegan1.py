"""NVIDIA's StyleGAN (2018) networks: imported safely from TF pickles, NVIDIA's pictures and scores, in every job
that takes a network file.

The fixtures hold the variables and outputs of networks NVIDIA's TF code built (tests/fixtures/README.md); the tests
write them as NVIDIA's 2018 code pickles them (benchmarks/nvidia_pickles.py), with build source that would leave a
marker file if anything ran it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.nvidia_pickles import (
    tf_stylegan1_networks,
    tf_stylegan1_variables,
    write_stylegan1_pickle,
    write_tf_pickle,
)
from benchmarks.stylegan1_reference import compare
from stylegan.errors import UserError
from stylegan.formats.checkpoint import load_any, load_checkpoint
from stylegan.formats.nvidia_pickle import load_nvidia_pickle
from stylegan.formats.transfer import fine_tune
from stylegan.rundir import RunDir
from tests.conftest import FIXTURES, REPO, TINY_SG1, run_job, sg1_networks
from tests.image_folder import random_dataset


def reference(res: int) -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / f"stylegan1_official_{res}.npz"))


def write(tmp_path: Path, ref: dict, name: str = "sg1.pkl", protocol: int = 3, change=None) -> tuple[Path, Path]:
    meta = json.loads(bytes(ref["meta_json"]).decode())
    marker = tmp_path / f"{name}.build_src_ran"
    nets = tf_stylegan1_networks({k: v for k, v in ref.items() if k.startswith(("Gs/", "D/"))}, meta["G"],
                                 meta["D"], module_src=f"import pathlib; pathlib.Path({str(marker)!r}).touch()")
    if change:
        change(nets)
    return write_tf_pickle(tmp_path / name, nets, protocol=protocol), marker


@pytest.mark.parametrize("res", [32, 128])
def test_nvidia_networks_give_nvidias_pictures_scores_and_lod_blends(tmp_path, res):
    """32x32: up/down-sampling by separate ops; 128x128: NVIDIA's fused convolutions."""
    ref = reference(res)
    path, marker = write(tmp_path, ref)
    diff = compare(path, ref)
    assert diff["uint8 psi 0.7: max"] <= 1 and diff["uint8 psi 1: max"] <= 1, diff
    assert diff["uint8 psi 0.7: share off by one"] < 1e-3 and diff["uint8 psi 1: share off by one"] < 1e-3, diff
    assert diff["ws"] < 1e-5 and max(diff["float psi 0.7"], diff["style mixing"], diff["G at lod 1.3"]) < 2e-4, diff
    assert max(diff["D scores"], diff["D on fakes"], diff["D at lod 1.3"]) < 1e-5, diff
    assert not marker.exists(), "the pickle's build source ran"


@pytest.mark.parametrize("protocol,numpy_spelling", [(2, b"numpy.core"), (3, b"numpy._core"), (5, None)])
def test_pickle_protocols_and_both_numpy_spellings_load(tmp_path, protocol, numpy_spelling):
    ref = reference(32)
    path, _ = write(tmp_path, ref, protocol=protocol)
    if numpy_spelling is not None:  # text GLOBAL opcodes: the module name can be respelt in place
        data = path.read_bytes().replace(b"numpy._core.", b"numpy.core.").replace(b"numpy.core.", numpy_spelling + b".")
        path.write_bytes(data)
        assert numpy_spelling + b".multiarray" in data
    ckpt = load_nvidia_pickle(path)
    assert ckpt["family"] == "stylegan1" and ckpt["G_kwargs"]["img_resolution"] == 32
    assert np.array_equal(ckpt["G_ema"]["synthesis.b4.layer0.const"].numpy(),
                          ref["Gs/G_synthesis/4x4/Const/const"][0])
    assert np.array_equal(ckpt["G_ema"]["synthesis.b32.torgb.weight"].numpy(),
                          ref["Gs/G_synthesis/ToRGB_lod0/weight"].transpose(3, 2, 0, 1))  # lod 0 = the top resolution
    assert float(ckpt["D"]["lod"]) == float(ref["D/lod"])


class Evil:
    def __reduce__(self):
        import os
        return os.system, ("touch /tmp/stylegan1-evil-ran",)


def _vars(nets, i: int, component: str | None = None) -> list:
    net = nets[i] if component is None else nets[i].state["components"][component]
    return net.state["variables"]


def _replace(nets, i: int, component: str, name: str, value: np.ndarray) -> None:
    variables = _vars(nets, i, component)
    variables[[k for k, _ in variables].index(name)] = (name, value)


@pytest.mark.parametrize("change,match", [
    (lambda n: _vars(n, 1).append(("4x4/Dense1/weight2", Evil())), "refusing to load global 'posix.system'"),
    (lambda n: _replace(n, 2, "synthesis", "4x4/Const/const", np.zeros((1, 7, 4, 4), np.float32)),
     "synthesis.b4.layer0.const is [7, 4, 4] where its arguments give [32, 4, 4]"),
    (lambda n: n[0].state["static_kwargs"].update(resolution=1 << 40), "resolution=1099511627776"),
    (lambda n: n[2].state["static_kwargs"].update(fmap_base="wide"), "fmap_base='wide'"),
    (lambda n: n[1].state["static_kwargs"].update(blur_filter=[1, 3, 1]), "blur_filter=[1, 3, 1]"),
    (lambda n: n[0].state["static_kwargs"].update(use_pixel_norm=True), "use_pixel_norm=True"),
    (lambda n: n[0].state["static_kwargs"].update(my_new_trick=1), "arguments no StyleGAN (2018) network has"),
    (lambda n: _vars(n, 2, "mapping").append(("Dense9/weight", np.zeros((4, 4), np.float32))),
     "variables no StyleGAN (2018) generator of its arguments has (mapping/Dense9/weight)"),
    (lambda n: n[1].state.update(version="3"), "version '3'"),
])
def test_hostile_and_malformed_files_are_refused_by_name_with_nothing_run(tmp_path, change, match):
    path, marker = write(tmp_path, reference(32), change=change)
    with pytest.raises(UserError, match=re.escape(match)) as info:
        load_nvidia_pickle(path)
    assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not marker.exists() and not Path("/tmp/stylegan1-evil-ran").exists()


def test_sample_convert_and_evaluate_take_the_network_file(tmp_path):
    """The seed's first step: NVIDIA's network sampled at psi 0.7 with stored noise gives NVIDIA's pixels (seed 0's
    latent is the fixture's first); converted to .pt and .safetensors it gives the same files; walks, style mixing
    and SWD run on it; an export to NVIDIA's PyTorch tools (StyleGAN2 only) is refused in one line; fine-tuning it
    with a StyleGAN2 config is refused in one line that names the fix."""
    ref = reference(32)
    net, _ = write(tmp_path, ref)
    out = tmp_path / "seeds"
    run_job("sample", "--network", str(net), "--outdir", str(out), "--seeds", "0", "--trunc", "0.7", "--workers", "1")
    png = np.asarray(Image.open(out / "0000" / "seed0000.png"), np.int16)
    assert np.abs(png - ref["img_psi07_uint8"][0]).max() <= 1
    for dest in ("sg1.pt", "sg1.safetensors"):
        run_job("convert", "--source", str(net), "--dest", str(tmp_path / dest))
        again = tmp_path / f"seeds-{dest}"
        run_job("sample", "--network", str(tmp_path / dest), "--outdir", str(again), "--seeds", "0", "--trunc",
                "0.7", "--workers", "1")
        assert np.array_equal(np.asarray(Image.open(again / "0000" / "seed0000.png")), png)
    refused = run_job("convert", "--source", str(net), "--dest", str(tmp_path / "export.pkl"), check=False)
    assert refused.returncode == 2 and "StyleGAN2 networks only" in refused.stderr, refused.stderr
    assert not (tmp_path / "export.pkl").exists()
    run_job("sample", "--network", str(net), "--outdir", str(tmp_path / "walk"), "--walk", "1,2,1", "--frames", "2",
            "--trunc", "0.8", "--workers", "1")
    run_job("sample", "--network", str(net), "--outdir", str(tmp_path / "mix"), "--style-mix", "1,2", "3,4",
            "--workers", "1")
    assert list((tmp_path / "walk").glob("*.gif")) and list((tmp_path / "mix").glob("*.png"))
    data = random_dataset(tmp_path, 8, 32)
    result = run_job("evaluate", "--network", str(net), "--data", str(data), "--metrics", "swd")
    assert json.loads(result.stdout.strip().splitlines()[-1])["value"] > 0
    refused = run_job("train", f"data={data}", f"outdir={tmp_path}", "resolution=32", f"resume={net}", check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "set family=stylegan1" in refused.stderr


def test_fine_tuning_copies_rgb_layers_by_resolution_and_starts_at_full_resolution(tmp_path):
    """NVIDIA names RGB layers by lod relative to the network's own resolution: a 128x128 network's ToRGB_lod2 is
    the one at 32x32, which a 32x32 network calls ToRGB_lod0. The transfer must take the former (checked by value
    against the TF variables in the file), keep the mapping, dlatent_avg and stored noise, and start at lod 0 even
    from a source saved mid-fade."""
    G, D, G_kwargs, D_kwargs = sg1_networks(128, lod=1.5)
    tf = tf_stylegan1_variables(G, D)
    path = write_stylegan1_pickle(tmp_path / "sg1-128.pkl", G, D, G_kwargs, D_kwargs)
    G32, D32, G32_kwargs, D32_kwargs = sg1_networks(32)
    G32_ema = copy.deepcopy(G32)
    reports, warnings, starts_random = fine_tune(load_any(path), str(path), G32, G32_ema, D32, G32_kwargs,
                                                 D32_kwargs, partial=False)
    assert not warnings and not starts_random
    n = len(G32.state_dict()) - 1  # all but the lod
    assert reports[0].startswith(f"G: copied {n}/{n} tensors; source tensors left behind: 28 of blocks above")

    def tf_conv(name: str) -> torch.Tensor:
        return torch.from_numpy(tf[name]).permute(3, 2, 0, 1)

    for net in (G32, G32_ema):
        assert torch.equal(net.synthesis.b32.torgb.weight, tf_conv("Gs/G_synthesis/ToRGB_lod2/weight"))
        assert torch.equal(net.synthesis.b8.torgb.weight, tf_conv("Gs/G_synthesis/ToRGB_lod4/weight"))
        assert torch.equal(net.mapping.w_avg, torch.from_numpy(tf["Gs/dlatent_avg"]))
        assert torch.equal(net.synthesis.b32.layer1.noise_const, torch.from_numpy(tf["Gs/G_synthesis/noise7"])[0, 0])
        assert float(net.synthesis.lod) == 0.0
    assert torch.equal(D32.b32.fromrgb.weight, tf_conv("D/FromRGB_lod2/weight"))
    assert torch.equal(D32.b16.conv1.weight, tf_conv("D/16x16/Conv1_down/weight")) and float(D32.lod) == 0.0


def test_the_preset_fine_tunes_a_stylegan_2018_file_resumes_and_samples(tmp_path):
    """configs/stylegan1-textures64.yaml (tiny widths) from an NVIDIA-format 2018 pickle: every phase's losses
    finite (G, D, R1 in D's step), snapshots of the 2018 family that a longer run resumes and `sample` reads."""
    G, D, G_kwargs, D_kwargs = sg1_networks(32)
    source = write_stylegan1_pickle(tmp_path / "sg1.pkl", G, D, G_kwargs, D_kwargs)
    data = random_dataset(tmp_path, 16, 16)
    args = ["--config", str(REPO / "configs" / "stylegan1-textures64.yaml"), f"data={data}", f"outdir={tmp_path}",
            "run_name=ft", "resolution=16", f"resume={source}", *TINY_SG1, "batch=8", "workers=1",
            "tick_kimg=0.008", "snap=1", "grid_size=2"]
    run_job("train", *args, "kimg=0.016")
    run = tmp_path / "ft"
    rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r[k]) for r in rows for k in ("loss_G", "loss_D", "r1_penalty"))
    assert "fine-tuning from" in (run / "log.txt").read_text()
    snapshot = load_checkpoint(RunDir(run).latest())
    assert snapshot["family"] == "stylegan1" and float(snapshot["G"]["synthesis.lod"]) == 0.0
    moved = snapshot["G"]["synthesis.b16.torgb.weight"] - G.synthesis.b16.torgb.weight.detach()
    assert float(moved.abs().max()) > 0  # it trained
    run_job("train", *args, "kimg=0.032")
    assert "resumed from" in (run / "log.txt").read_text() and RunDir(run).latest().name.endswith("000.032.pt")
    run_job("sample", "--network", str(RunDir(run).latest()), "--outdir", str(tmp_path / "seeds"), "--seeds", "0-1",
            "--trunc", "0.7", "--workers", "1")
    assert len(list((tmp_path / "seeds").rglob("seed*.png"))) == 2
