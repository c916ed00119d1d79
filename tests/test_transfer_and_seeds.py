"""Transfer across resolutions, and seeds -> latents exactly as NVIDIA's gen_images.py."""

import numpy as np
import pytest
import torch

from benchmarks.nvidia_pickles import write_nvidia_pickle
from stylegan.errors import UserError
from stylegan.formats.checkpoint import load_any
from stylegan.formats.transfer import config_fix, transfer_weights
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.seeds import MAX_SEED, parse_seeds, seed_latents
from stylegan.train.config import load_config
from tests.conftest import REPO, Fixture


def test_transfer_from_higher_resolution_pickle(tmp_path):
    fx = Fixture("uncond32")
    G32, D32 = fx.networks()
    path = write_nvidia_pickle(tmp_path / "net32.pkl", G32, D32, fx.meta["G_kwargs"], fx.meta["D_kwargs"])
    ckpt = load_any(path)
    G16 = Generator(**{**fx.meta["G_kwargs"], "img_resolution": 16})
    D16 = Discriminator(**{**fx.meta["D_kwargs"], "img_resolution": 16})
    g_report = transfer_weights(ckpt["G_ema"], G16, "G", str(path))
    d_report = transfer_weights(ckpt["D"], D16, "D", str(path))
    assert not g_report.random and not g_report.mismatched and not g_report.unused  # all of G16 is in G32
    assert g_report.above == len([k for k in ckpt["G_ema"] if ".b32." in k and "resample_filter" not in k])
    assert torch.equal(G16.synthesis.b16.conv1.weight, G32.synthesis.b16.conv1.weight)
    assert torch.equal(G16.mapping.w_avg, G32.mapping.w_avg)
    assert d_report.random == ["b16.fromrgb.weight", "b16.fromrgb.bias"]  # the 32x32 D reads RGB at b32 only
    assert d_report.not_copied() == d_report.random and not d_report.unused
    assert torch.equal(D16.b4.fc.weight, D32.b4.fc.weight)
    assert "start random (not in the source): b16.fromrgb.weight, b16.fromrgb.bias" in d_report.summary()


def tiny_G(channel_base: int = 256, map_layers: int = 2) -> Generator:
    return Generator(16, 0, 16, 16, mapping_kwargs=dict(num_layers=map_layers), channel_base=channel_base,
                     channel_max=32)


def test_channel_mismatch_is_refused_untouched_unless_partial():
    src, dst = tiny_G(256), tiny_G(128)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    fix = config_fix({"z_dim": 16, "w_dim": 16, "channel_base": 256, "channel_max": 32},
                     {"z_dim": 16, "w_dim": 16, "channel_base": 128, "channel_max": 32})
    assert fix == "channel_base=256"
    with pytest.raises(UserError, match=r"src.pkl: G does not fit the config: \d+ tensors differ in shape \(.*\]"
                       r" there, .*Set channel_base=256 \(the source's values\), or set transfer_partial=true"):
        transfer_weights(src.state_dict(), dst, "G", "src.pkl", fix=fix)
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())
    report = transfer_weights(src.state_dict(), dst, "G", "src.pkl", partial=True)
    assert "mapping.fc0.weight" in report.copied and report.mismatched
    assert torch.equal(dst.mapping.fc1.weight, src.mapping.fc1.weight)


def test_mapping_depth_mismatch_is_refused_with_the_fix():
    """An 8-layer mapping network into a 2-layer one copied fc0, fc1 and the 8-layer w_avg and called it 100%."""
    src, dst = tiny_G(map_layers=8), tiny_G(map_layers=2)
    fix = config_fix({"z_dim": 16, "mapping_kwargs": {"num_layers": 8}},
                     {"z_dim": 16, "mapping_kwargs": {"num_layers": 2}})
    with pytest.raises(UserError, match=r"its mapping network has 8 layers, the config's 2; 12 of its tensors have no "
                       r"place here \(mapping.fc2.weight, .*Set map_layers=8 \(the source's values\)"):
        transfer_weights(src.state_dict(), dst, "G", "src.pkl", fix=fix)
    report = transfer_weights(src.state_dict(), dst, "G", "src.pkl", partial=True)
    assert len(report.unused) == 12 and "mapping.fc7.bias" in report.unused


def test_textures_preset_takes_every_tensor_of_an_ffhq_config_f_network():
    """configs/textures64.yaml fine-tunes NVIDIA's FFHQ config-f (1024x1024, channel_base 32768, 8 mapping
    layers): every tensor a 64x64 network can take comes over; only D's RGB input at 64 starts random, and the
    preset freezes nothing."""
    cfg = load_config(str(REPO / "configs" / "textures64.yaml"), ["data=x"]).resolved()
    ffhq_G = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, mapping_kwargs=dict(num_layers=8),
                  channel_base=32768, channel_max=512)
    ffhq_D = dict(c_dim=0, img_resolution=1024, channel_base=32768, channel_max=512)
    G, D = Generator(**cfg.generator_kwargs(0)), Discriminator(**cfg.discriminator_kwargs(0))
    g = transfer_weights(Generator(**ffhq_G).state_dict(), G, "G", "ffhq.pkl",
                         fix=config_fix(ffhq_G, cfg.generator_kwargs(0)))
    d = transfer_weights(Discriminator(**ffhq_D).state_dict(), D, "D", "ffhq.pkl",
                         fix=config_fix(ffhq_D, cfg.discriminator_kwargs(0)))
    assert not g.random and not g.mismatched and not g.unused and g.above > 0
    assert d.random == ["b64.fromrgb.weight", "b64.fromrgb.bias"] and not d.mismatched and not d.unused
    assert cfg.freezed == 0 and cfg.fine_tuning and cfg.ada_kimg == 100 and cfg.ema_rampup == 0


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
