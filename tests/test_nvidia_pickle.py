"""Import of NVIDIA pickles (PyTorch and TensorFlow): the right tensors, no code executed, hostile files refused."""

import os
import pickle
import pickletools
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.nvidia_pickles import tf_networks, write_nvidia_pickle, write_tf_pickle
from stylegan.errors import UserError
from stylegan.formats.checkpoint import build_discriminator, build_generator, load_checkpoint
from stylegan.formats.nvidia_pickle import load_nvidia_pickle
from tests.conftest import Fixture, run_job
from tests.image_folder import preprocess_folder


@pytest.fixture
def official_pickle(fixture, tmp_path):
    G, D = fixture.networks()
    marker = tmp_path / "module_src_ran"
    src = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    path = write_nvidia_pickle(tmp_path / "network.pkl", G, D, fixture.meta["G_kwargs"], fixture.meta["D_kwargs"],
                               augment_p=0.25, module_src=src)
    return path, marker


@torch.no_grad()
def assert_official_outputs(fixture, path) -> dict:
    """The networks of an imported file give the official reference's images and D logits; returns the file."""
    ckpt = load_nvidia_pickle(path)
    G, D = build_generator(ckpt, "G_ema", path).eval(), build_discriminator(ckpt, path).eval()
    img = G(fixture.tensor("z"), fixture.tensor("c"), truncation_psi=0.7, noise_mode="const")
    assert (img - fixture.tensor("img_psi07_const")).abs().max() <= 1e-4
    assert (D(fixture.tensor("d_input"), fixture.tensor("c")) - fixture.tensor("d_logits")).abs().max() <= 1e-4
    assert ckpt["G_kwargs"]["channel_base"] == fixture.meta["G_kwargs"]["channel_base"]  # TF: 2 * fmap_base
    return ckpt


def test_imported_networks_give_official_outputs(fixture, official_pickle):
    path, marker = official_pickle
    assert assert_official_outputs(fixture, path)["augment"]["p"] == pytest.approx(0.25)
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


def test_convert_job_writes_our_checkpoint(fixture, official_pickle, tmp_path):
    path, _ = official_pickle
    dest = tmp_path / "converted.pt"
    result = run_job("convert", "--source", str(path), "--dest", str(dest))
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
    result = run_job("convert", "--source", str(src), "--dest", str(tmp_path / "out.pt"), check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0] and str(src) in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.pt").exists()
    debug = run_job("convert", "--source", str(src), "--dest", str(tmp_path / "out.pt"), "--debug", check=False)
    assert "Traceback" in debug.stderr


# ----------------------------------------------------------------------------------------------------------------
# Export: our networks as the TF records NVIDIA's PyTorch loader converts (benchmarks/export_reference.py runs that
# loader and gen_images.py on such a file as an outside program)

# The static_kwargs NVIDIA's legacy.convert_tf_generator / convert_tf_discriminator know: any other is an error there
NVIDIA_G_KWARGS = {"latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
                   "label_fmaps", "mapping_fmaps", "mapping_nonlinearity", "mapping_lrmul", "w_avg_beta", "fmap_base",
                   "fmap_max", "num_fp16_res", "conv_clamp", "architecture", "resample_kernel", "use_noise",
                   "nonlinearity", "truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure"}
NVIDIA_D_KWARGS = {"label_size", "resolution", "num_channels", "architecture", "fmap_base", "fmap_max",
                   "num_fp16_res", "conv_clamp", "mapping_fmaps", "nonlinearity", "resample_kernel", "freeze_layers",
                   "mapping_layers", "mapping_lrmul", "mbstd_group_size", "mbstd_num_features", "structure"}


class _TFNetwork(dict):
    """What NVIDIA's loader makes of a TF network record: an EasyDict whose attributes BUILD fills."""


class _AsNVIDIALoads(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("dnnlib.tflib.network", "Network"):
            return _TFNetwork
        return super().find_class(module, name)


def _tf_params(record, prefix=""):
    out = {prefix + name: value for name, value in record.variables}
    for name, sub in record.components.items():
        out.update(_tf_params(sub, f"{prefix}{name}/"))
    return out


def test_convert_exports_a_pickle_nvidia_s_loader_reads(fixture, official_pickle, tmp_path):
    """`convert --dest x.pkl`: (G, D, Gs) TF records with nothing to run, naming only NVIDIA's record class and
    numpy's array classes (numpy 1 spelling); arguments only NVIDIA's converter knows, all on the top records (the
    only ones it reads); our importer reads the same tensors back and they give the official outputs."""
    path, _ = official_pickle
    ours, dest = tmp_path / "ours.pt", tmp_path / "export.pkl"
    run_job("convert", "--source", str(path), "--dest", str(ours))
    result = run_job("convert", "--source", str(ours), "--dest", str(dest))
    assert f"wrote {dest}" in result.stdout
    ops = list(pickletools.genops(dest.read_bytes()))
    assert (ops[0][0].name, ops[0][1]) == ("PROTO", 3)
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} == {
        "dnnlib.tflib.network Network", "numpy ndarray", "numpy dtype", "numpy.core.multiarray _reconstruct"}
    with open(dest, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 reads numpy 1's spelling, with a warning
        records = _AsNVIDIALoads(f).load()
    assert isinstance(records, tuple) and len(records) == 3 and all(isinstance(r, _TFNetwork) for r in records)
    tf_G, tf_D, tf_Gs = records
    for record, known in ((tf_G, NVIDIA_G_KWARGS), (tf_D, NVIDIA_D_KWARGS), (tf_Gs, NVIDIA_G_KWARGS)):
        assert record.version == 4 and record.build_module_src == "" and set(record.static_kwargs) <= known
    G_kwargs = fixture.meta["G_kwargs"]
    assert tf_G.static_kwargs["fmap_base"] * 2 == G_kwargs["channel_base"]
    assert tf_Gs.static_kwargs["label_size"] == tf_D.static_kwargs["label_size"] == G_kwargs["c_dim"]
    # absent, NVIDIA's converter would take the whole batch as one group
    assert tf_D.static_kwargs["mbstd_group_size"] == fixture.meta["D_kwargs"].get("epilogue_kwargs", {}).get(
        "mbstd_group_size", 4)
    params = _tf_params(tf_Gs)
    assert params["synthesis/4x4/Const/const"].shape[0] == 1 and "dlatent_avg" in params
    ckpt = assert_official_outputs(fixture, dest)
    source = load_checkpoint(ours)
    for net in ("G", "D", "G_ema"):
        assert ckpt[net].keys() == source[net].keys()
        assert all(torch.equal(ckpt[net][k], source[net][k]) for k in source[net]), net


def test_convert_to_pkl_needs_d(fixture, official_pickle, tmp_path):
    path, _ = official_pickle
    run_job("convert", "--source", str(path), "--dest", str(tmp_path / "g.safetensors"))
    result = run_job("convert", "--source", str(tmp_path / "g.safetensors"), "--dest", str(tmp_path / "g.pkl"),
                     check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "has no G, D" in result.stderr and "not from a generator-only .safetensors" in result.stderr
    assert not (tmp_path / "g.pkl").exists()


# ----------------------------------------------------------------------------------------------------------------
# TensorFlow pickles (StyleGAN2 config-e/f, StyleGAN2-ADA TF), from known weights (benchmarks/nvidia_pickles.py)

@pytest.fixture
def tf_pickle(fixture, tmp_path):
    G, D = fixture.networks()
    marker = tmp_path / "build_src_ran"
    src = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    nets = tf_networks(G, D, fixture.meta["G_kwargs"], fixture.meta["D_kwargs"], module_src=src)
    return write_tf_pickle(tmp_path / "network-tf.pkl", nets), marker


def test_tf_pickles_give_the_networks_they_were_made_from(fixture, tf_pickle):
    path, marker = tf_pickle
    assert_official_outputs(fixture, path)
    assert not marker.exists(), "build_module_src was executed"


def test_tf_pickles_keep_their_precision_settings(tmp_path):
    """StyleGAN2-ADA TF networks carry num_fp16_res and conv_clamp: the import keeps them (config-e/f: none)."""
    fx = Fixture("uncond32")
    G, D = fx.networks()
    G_kw, D_kw = (dict(fx.meta[k], num_fp16_res=2, conv_clamp=256) for k in ("G_kwargs", "D_kwargs"))
    ckpt = load_nvidia_pickle(write_tf_pickle(tmp_path / "ada.pkl", tf_networks(G, D, G_kw, D_kw)))
    assert (ckpt["G_kwargs"]["num_fp16_res"], ckpt["G_kwargs"]["conv_clamp"]) == (2, 256.0)
    assert (ckpt["D_kwargs"]["num_fp16_res"], ckpt["D_kwargs"]["conv_clamp"]) == (2, 256.0)
    G_kw, D_kw = (dict(fx.meta[k], num_fp16_res=0, conv_clamp=None) for k in ("G_kwargs", "D_kwargs"))
    ckpt = load_nvidia_pickle(write_tf_pickle(tmp_path / "f.pkl", tf_networks(G, D, G_kw, D_kw)))
    assert (ckpt["G_kwargs"]["num_fp16_res"], ckpt["G_kwargs"]["conv_clamp"]) == (0, None)
    assert (ckpt["D_kwargs"]["num_fp16_res"], ckpt["D_kwargs"]["conv_clamp"]) == (0, None)


def test_tf_and_pytorch_pickles_of_one_network_sample_the_same_pngs(tmp_path):
    fx = Fixture("uncond32")
    G, D = fx.networks()
    pt = write_nvidia_pickle(tmp_path / "pt.pkl", G, D, fx.meta["G_kwargs"], fx.meta["D_kwargs"])
    tf = write_tf_pickle(tmp_path / "tf.pkl", tf_networks(G, D, fx.meta["G_kwargs"], fx.meta["D_kwargs"]))
    for net in (pt, tf):
        result = run_job("sample", "--checkpoint", str(net), "--outdir", str(tmp_path / net.stem), "--seeds",
                         "0-7", "--trunc", "0.7", "--workers", "1")
        assert result.returncode == 0, result.stderr
    for seed in range(8):
        a, b = (np.asarray(Image.open(tmp_path / d / "0000" / f"seed{seed:04d}.png"), np.int16) for d in ("pt", "tf"))
        assert np.abs(a - b).max() <= 1


def test_tf_pickle_converts_and_fine_tunes(tmp_path):
    fx = Fixture("uncond32")
    G, D = fx.networks()
    tf = write_tf_pickle(tmp_path / "tf.pkl", tf_networks(G, D, fx.meta["G_kwargs"], fx.meta["D_kwargs"]))
    converted = run_job("convert", "--source", str(tf), "--dest", str(tmp_path / "tf.pt"))
    assert converted.returncode == 0 and "32x32" in converted.stdout, converted.stderr
    data = preprocess_folder(make_images(tmp_path / "img"), tmp_path / "data", 32)
    result = run_job("train", f"data={data}", f"outdir={tmp_path}", "run_name=ft", "resolution=32", f"resume={tf}",
                     "z_dim=64", "w_dim=64", "map_layers=2", "channel_base=512", "channel_max=64", "workers=1",
                     "batch=4", "kimg=0.008", "tick_kimg=0.004")
    assert "G: copied 64/64 tensors; source tensors left behind: 0 of blocks above this resolution, 0 other" \
        in result.stdout and "D: copied" in result.stdout and "start random" not in result.stdout


def make_images(folder, count: int = 8):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def tf_variant(tmp_path, change) -> tuple:
    fx = Fixture("uncond32")
    G, D = fx.networks()
    nets = tf_networks(G, D, fx.meta["G_kwargs"], fx.meta["D_kwargs"])
    change(nets)
    return write_tf_pickle(tmp_path / "variant.pkl", nets)


class Evil:
    def __reduce__(self):
        return os.system, ("touch /tmp/stylegan-evil-ran",)


@pytest.mark.parametrize("change,match", [
    (lambda n: n[2].state["components"]["synthesis"].state.update(
        build_func_name="training.networks_stylegan.G_synthesis"), "arguments no StyleGAN (2018) network has"),
    (lambda n: n[0].state["components"]["synthesis"].state["variables"].append(("64x64/Extra/weight", np.zeros(3))),
     "variables no StyleGAN2 generator has (synthesis/64x64/Extra/weight)"),
    (lambda n: n[1].state["static_kwargs"].update(my_new_trick=True),
     "arguments no StyleGAN2 network has (my_new_trick)"),
    (lambda n: n[0].state["static_kwargs"].update(fmap_decay=0.5), "fmap_decay=0.5"),
    (lambda n: n[1].state["variables"].append(("Output/weight2", Evil())),
     "refusing to load global 'posix.system'"),
    (lambda n: n[0].state.update(version=3), "version 3"),
    (lambda n: n[1].state["static_kwargs"].update(conv_clamp="high"), "conv_clamp='high'"),
])
def test_tf_pickles_that_do_not_fit_are_refused_by_name(tmp_path, change, match):
    path = tf_variant(tmp_path, change)
    with pytest.raises(UserError, match=re.escape(match)) as info:
        load_nvidia_pickle(path)
    assert str(path) in str(info.value) and not Path("/tmp/stylegan-evil-ran").exists()
