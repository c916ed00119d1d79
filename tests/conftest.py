"""Shared test helpers: the official reference fixtures and networks built from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan.formats.checkpoint import save_checkpoint
from stylegan.models import stylegan1
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # shipped with the repository: README.md there says how they were made
FIXTURE_NAMES = ["uncond32", "cond16"]
# The network of the CPU training tests (16x16, a few channels); each test file adds its schedule. No augmentation:
# the tests that check it (N ranks = 1 rank, exact resume, the demo) ask for ADA; elsewhere it only costs CPU time.
TINY_TRAIN = ["resolution=16", "z_dim=32", "w_dim=32", "channel_base=256", "channel_max=32", "map_layers=2",
              "mbstd_group=2", "workers=1", "aug=noaug"]


def run_job(name: str, *args: str, check: bool = True, env: dict | None = None, timeout: float = 600,
            nproc: int = 1, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python -m jobs.<name> args...` as a user runs it (under torchrun when nproc > 1), output captured; with
    `check`, a non-zero exit fails the test with the output's end. One thread, so runs sum floats alike."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] \
        if nproc > 1 else [sys.executable]
    result = subprocess.run([*launcher, "-m", f"jobs.{name}", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


class Fixture:
    """One official reference file: weights, inputs and outputs of NVIDIA's networks."""

    def __init__(self, name: str):
        self.path = FIXTURES / f"stylegan2_official_{name}.npz"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: reference fixture missing from the checkout")
        self.data = np.load(self.path)
        self.meta = json.loads(bytes(self["meta_json"]).decode())

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.data.files:
            raise KeyError(f"{self.path}: key '{key}' missing from the fixture")
        return self.data[key]

    def tensor(self, key: str) -> torch.Tensor:
        return torch.from_numpy(self[key])

    def state(self, net: str) -> dict[str, torch.Tensor]:
        prefix = net + "."
        return {k[len(prefix):]: torch.from_numpy(self.data[k]) for k in self.data.files if k.startswith(prefix)}

    def networks(self) -> tuple[Generator, Discriminator]:
        G = Generator(**self.meta["G_kwargs"])
        D = Discriminator(**self.meta["D_kwargs"])
        G.load_state_dict(self.state("G"), strict=True)
        D.load_state_dict(self.state("D"), strict=True)
        return G.eval(), D.eval()


@pytest.fixture(params=FIXTURE_NAMES)
def fixture(request) -> Fixture:
    return Fixture(request.param)


def tiny_generator_kwargs(resolution: int = 16, c_dim: int = 0) -> dict:
    return dict(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=resolution, img_channels=3,
                mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16, num_fp16_res=0)


def tiny_discriminator_kwargs(resolution: int = 16, c_dim: int = 0) -> dict:
    return dict(c_dim=c_dim, img_resolution=resolution, img_channels=3, channel_base=128, channel_max=16,
                num_fp16_res=0, epilogue_kwargs=dict(mbstd_group_size=2))


TINY_SG1 = ["family=stylegan1", "z_dim=32", "w_dim=32", "channel_base=256", "channel_max=32", "map_layers=2",
            "mbstd_group=2"]


def sg1_networks(resolution: int, lod: float = 0.0) -> tuple:
    """Our StyleGAN (2018) G and D of TINY_SG1's widths with random weights and buffers, at level of detail `lod`."""
    cfg = load_config(None, ["data=x", f"resolution={resolution}", *TINY_SG1])
    G_kwargs, D_kwargs = cfg.generator_kwargs(0), cfg.discriminator_kwargs(0)
    G, D = stylegan1.Generator(**G_kwargs), stylegan1.Discriminator(**D_kwargs)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        G.synthesis.lod.fill_(lod)
        D.lod.fill_(lod)
    return G, D, G_kwargs, D_kwargs


def tiny_g(seed: int = 0) -> Generator:
    """A generator of tiny_generator_kwargs with random weights and noise that counts."""
    torch.manual_seed(seed)
    G = Generator(**tiny_generator_kwargs()).eval()
    with torch.no_grad():  # noise strengths start at zero: give the noise maps something to do
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G


def write_tiny_network(path: Path) -> Path:
    G = tiny_g()
    save_checkpoint(path, {"format": 1, "G_kwargs": tiny_generator_kwargs(),
                           "D_kwargs": tiny_discriminator_kwargs(), "G_ema": G.state_dict()})
    return path


class TinyVGG(torch.nn.Module):
    """NVIDIA's vgg16.pt calls: NCHW in [0, 255] (uint8 or float); with return_lpips, rows whose squared distance
    is the LPIPS distance (features unit-normalised over channels at each pixel, averaged over pixels), with
    return_features, pooled features (precision/recall)."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, padding=1),
                                          torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)])

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = img.to(torch.float32) / 127.5 - 1
        rows: list[torch.Tensor] = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            f = x / (x.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
            rows.append(f.flatten(1) / (f.shape[2] * f.shape[3]) ** 0.5)
        if return_lpips:
            return torch.cat(rows, dim=1)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class TinyDetector(torch.nn.Module):
    """NVIDIA's Inception call signature: uint8 NCHW in, features out with return_features=True."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 32, 3, stride=2)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = torch.relu(self.conv(img.to(torch.float32) / 255))
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def scripted(folder: Path, name: str, network: type[torch.nn.Module]) -> Path:
    """A TorchScript file of `network` with seeded random weights, frozen as NVIDIA's files are."""
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(network().requires_grad_(False)), str(folder / name))
    return folder / name


@pytest.fixture
def recorded_graphs(monkeypatch) -> list[str]:
    """The graphs torch.compile traces during the test, recorded instead of compiled (Inductor cannot compile these
    networks' graphs on a CPU) and then run as traced: each one's code and its inputs' shapes, dtypes and which of
    them need gradients."""
    graphs: list[str] = []

    def record(gm: torch.fx.GraphModule, inputs: list) -> object:
        graphs.append(gm.code + repr([(tuple(x.shape), x.dtype, x.requires_grad) for x in inputs
                                      if isinstance(x, torch.Tensor)]))
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: compile_(*args, **{**kwargs, "backend": record}))
    torch._dynamo.reset()  # nothing another test compiled in this process is reused
    return graphs


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory) -> Path:
    return scripted(tmp_path_factory.mktemp("cache"), "inception-2015-12-05.pt", TinyDetector)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    return scripted(tmp_path_factory.mktemp("vgg"), "vgg16.pt", TinyVGG)
