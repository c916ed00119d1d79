"""Transfer across resolutions, and seeds -> latents exactly as NVIDIA's gen_images.py."""

import numpy as np
import pytest
import torch

from stylegan.checkpoint import load_any
from stylegan.errors import UserError
from stylegan.networks import Discriminator, Generator
from stylegan.seeds import MAX_SEED, parse_seeds, seed_latents
from stylegan.transfer import transfer_weights
from tests.conftest import Fixture
from tests.nvidia_pickles import write_nvidia_pickle


def test_transfer_from_higher_resolution_pickle(tmp_path):
    fx = Fixture("uncond32")
    G32, D32 = fx.networks()
    path = write_nvidia_pickle(tmp_path / "net32.pkl", G32, D32, fx.meta["G_kwargs"], fx.meta["D_kwargs"])
    ckpt = load_any(path)
    G16 = Generator(**{**fx.meta["G_kwargs"], "img_resolution": 16})
    D16 = Discriminator(**{**fx.meta["D_kwargs"], "img_resolution": 16})
    g_report = transfer_weights(ckpt["G_ema"], G16, "G", str(path))
    d_report = transfer_weights(ckpt["D"], D16, "D", str(path))
    assert g_report.fraction == 1.0 and not g_report.kept  # every 16x16 G tensor exists in the 32x32 network
    assert torch.equal(G16.synthesis.b16.conv1.weight, G32.synthesis.b16.conv1.weight)
    assert torch.equal(G16.mapping.w_avg, G32.mapping.w_avg)
    assert "b16.fromrgb.weight (absent)" in d_report.kept  # the 32x32 D reads RGB at b32 only
    assert torch.equal(D16.b4.fc.weight, D32.b4.fc.weight)
    assert "copied" in d_report.summary() and "kept initial values" in d_report.summary()


def test_transfer_refuses_when_too_little_matches():
    src = Generator(16, 0, 16, 16, mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32)
    dst = Generator(16, 0, 16, 16, mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16)
    before = dst.synthesis.b8.conv0.weight.clone()
    with pytest.raises(UserError, match="only .* of G's tensors match"):
        transfer_weights(src.state_dict(), dst, "G", "src.pkl", min_fraction=0.9)
    assert torch.equal(dst.synthesis.b8.conv0.weight, before)
    report = transfer_weights(src.state_dict(), dst, "G", "src.pkl", min_fraction=0.0)
    assert "mapping.fc0.weight" in report.copied


def test_seed_latents_equal_numpy_randomstate():
    # an odd z_dim leaves a cached Gaussian in the RandomState: the next seed must not use it
    for z_dim in (512, 513):
        z = seed_latents([0, 7, MAX_SEED, 7], z_dim)
        for row, seed in zip(z, [0, 7, MAX_SEED, 7], strict=True):
            assert np.array_equal(row.numpy(), np.random.RandomState(seed).randn(1, z_dim)[0].astype(np.float32))


def test_parse_seeds():
    assert parse_seeds("0,5,10-13") == [0, 5, 10, 11, 12, 13]
    assert parse_seeds("42") == [42]
    assert len(parse_seeds("0-49999")) == 50000


@pytest.mark.parametrize("spec,match", [
    ("5-1", "end is below the start"),
    ("abc", "bad seed 'abc'"),
    ("-3", "non-negative"),
    ("1,,2", "bad seed ''"),
    (str(2 ** 32), "at most 4294967295"),
])
def test_bad_seed_specs(spec, match):
    with pytest.raises(UserError, match=match):
        parse_seeds(spec)
