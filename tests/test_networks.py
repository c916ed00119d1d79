"""Our networks against NVIDIA's official outputs (tests/fixtures), and the features around them."""

import subprocess
import sys

import pytest
import torch

from stylegan.imagefiles import to_uint8
from stylegan.models.stylegan2 import Discriminator, Generator
from tests.conftest import REPO, tiny_generator_kwargs

TOL = 1e-4


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def test_mapping_matches_official(fixture):
    G, _ = fixture.networks()
    z, c = fixture.tensor("z"), fixture.tensor("c")
    assert max_err(G.mapping(z, c), fixture.tensor("ws")) <= TOL
    assert max_err(G.mapping(z, c, truncation_psi=0.7), fixture.tensor("ws_psi07")) <= TOL


@pytest.mark.parametrize("fused", [True, False])
@torch.no_grad()
def test_synthesis_matches_official(fixture, fused):
    G, _ = fixture.networks()
    for ws_key, img_key in (("ws", "img_const"), ("ws_psi07", "img_psi07_const")):
        img = G.synthesis(fixture.tensor(ws_key), noise_mode="const", fused_modconv=fused)
        assert img.shape == fixture[img_key].shape
        assert max_err(img, fixture.tensor(img_key)) <= TOL


@torch.no_grad()
def test_full_generator_call_and_uint8_pictures_match(fixture):
    G, _ = fixture.networks()
    img = G(fixture.tensor("z"), fixture.tensor("c"), truncation_psi=0.7, noise_mode="const")
    ours, official = to_uint8(img).int(), to_uint8(fixture.tensor("img_psi07_const")).int()
    assert (ours - official).abs().max().item() <= 1


@torch.no_grad()
def test_discriminator_matches_official(fixture):
    _, D = fixture.networks()
    c = fixture.tensor("c")
    assert max_err(D(fixture.tensor("d_input"), c), fixture.tensor("d_logits")) <= TOL
    assert max_err(D(fixture.tensor("img_const"), c), fixture.tensor("d_logits_fake")) <= TOL


def test_official_parameter_names_and_buffers(fixture):
    G, D = fixture.networks()
    assert set(G.state_dict()) == set(fixture.state("G"))
    assert set(D.state_dict()) == set(fixture.state("D"))
    for name in ("mapping.fc0.weight", "mapping.w_avg", "synthesis.b4.const", "synthesis.b8.conv0.affine.weight",
                 "synthesis.b8.conv0.noise_const", "synthesis.b8.torgb.weight"):
        assert name in G.state_dict()
    for name in ("b4.fc.weight", "b4.out.weight", "b4.conv.weight", "b8.skip.weight"):
        assert name in D.state_dict()


@pytest.mark.parametrize("res,cbase,layers,g_params,d_params", [
    (1024, 32768, 8, 30_370_060, 29_012_513),  # official config-f
    (64, 16384, 2, 22_243_608, 23_407_361),
])
def test_parameter_counts_equal_official(res, cbase, layers, g_params, d_params):
    with torch.device("meta"):
        G = Generator(512, 0, 512, res, mapping_kwargs=dict(num_layers=layers), channel_base=cbase)
        D = Discriminator(0, res, channel_base=cbase)
    assert sum(p.numel() for p in G.parameters()) == g_params
    assert sum(p.numel() for p in D.parameters()) == d_params


@torch.no_grad()
def test_truncation_cutoff_only_touches_first_layers(fixture):
    G, _ = fixture.networks()
    z, c = fixture.tensor("z"), fixture.tensor("c")
    full, cut = G.mapping(z, c), G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.equal(cut[:, 3:], full[:, 3:])
    assert torch.allclose(cut[:, :3], G.mapping.w_avg.lerp(full[:, :3], 0.5))


@torch.no_grad()
def test_noise_modes():
    torch.manual_seed(0)
    G = Generator(**tiny_generator_kwargs()).eval()
    for layer in G.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.fill_(0.5)
    z = torch.randn(2, G.z_dim)
    assert torch.equal(G(z, None, noise_mode="const"), G(z, None, noise_mode="const"))
    assert torch.equal(G(z, None, noise_mode="none"), G(z, None, noise_mode="none"))
    assert not torch.equal(G(z, None, noise_mode="random"), G(z, None, noise_mode="random"))
    assert not torch.equal(G(z, None, noise_mode="const"), G(z, None, noise_mode="none"))


@torch.no_grad()
def test_w_avg_tracks_mapping_output():
    G = Generator(**tiny_generator_kwargs())
    z = torch.randn(8, G.z_dim)
    G.mapping(z, None, update_emas=True)
    expected = G.mapping(z, None)[:, 0].mean(0) * (1 - 0.998)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)


@torch.no_grad()
def test_per_layer_ws_allow_style_mixing():
    G = Generator(**tiny_generator_kwargs()).eval()
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    mixed = ws[:1].clone()
    mixed[:, 4:] = ws[1:, 4:]
    a, b, m = G.synthesis(ws[:1], noise_mode="const"), G.synthesis(ws[1:], noise_mode="const"), \
        G.synthesis(mixed, noise_mode="const")
    assert not torch.allclose(m, a) and not torch.allclose(m, b)


@pytest.mark.parametrize("arch", ["orig", "skip", "resnet"])
def test_generator_architectures_train_step(arch):
    G = Generator(**tiny_generator_kwargs(), architecture=arch).train()
    img = G(torch.randn(2, G.z_dim), None)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    img.square().mean().backward()
    assert all(p.grad is not None for n, p in G.named_parameters() if "noise_strength" not in n)


def test_networks_built_on_the_meta_device_leave_torch_dynamo_unimported():
    """A network file's shapes are checked on networks built on the meta device (stylegan.formats.checkpoint). Out-of-
    place arithmetic there imports torch._dynamo, about a second of every loading job's start on a CPU, so the
    networks' constructors of both families do none."""
    code = ("import sys, torch\n"
            "from stylegan.models import stylegan1, stylegan2\n"
            "with torch.device('meta'):\n"
            "    for family in (stylegan1, stylegan2):\n"
            "        family.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3)\n"
            "        family.Discriminator(c_dim=0, img_resolution=16, img_channels=3)\n"
            "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
