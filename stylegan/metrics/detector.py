"""The feature detectors, loaded from local files only (compute nodes have no internet): Inception for FID/KID,
and NVIDIA's VGG16 (stylegan.metrics.vgg) for precision/recall and path length.

Two formats: NVIDIA's TorchScript `inception-2015-12-05.pt` (the official StyleGAN2 metrics' detector, called as
`detector(uint8 NCHW, return_features=True)`), and pytorch-fid's state dict `pt_inception-2015-12-05-6726825d.pth`
run by our own network (`inception.FIDInceptionV3`). `python -m jobs.fetch_weights` puts them in the cache.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from stylegan.errors import UserError
from stylegan.fileio import cache_dir, sha256_file, sha256_matches
from stylegan.formats.checkpoint import torch_load
from stylegan.metrics.inception import load_fid_inception


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    sha256: str | None  # a full hash or a prefix (torch.hub's file-name convention); None where none is published


# In the order they are looked for in the cache: the official metrics' detector first.
WEIGHTS = {
    "nvidia": WeightFile("inception-2015-12-05.pt",
                         "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                         "inception-2015-12-05.pt", None),
    "pytorch-fid": WeightFile("pt_inception-2015-12-05-6726825d.pth",
                              "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                              "pt_inception-2015-12-05-6726825d.pth", "6726825d"),
}


def check_sha256(digest: str, expected: str | None, source: str) -> None:
    if not sha256_matches(digest, expected):
        raise UserError(f"{source}: sha256 {digest[:16]}... does not match the expected {expected}; the file is "
                        f"damaged or not the published one: fetch it again")


def cached_detector() -> Path | None:
    return next((cache_dir() / w.name for w in WEIGHTS.values() if (cache_dir() / w.name).is_file()), None)


def find_detector(explicit: str | None) -> Path:
    if explicit:
        if not Path(explicit).is_file():
            raise UserError(f"--detector {explicit}: no such file")
        return Path(explicit)
    if found := cached_detector():
        return found
    raise UserError(f"no Inception detector in {cache_dir()}: run `python -m jobs.fetch_weights` on a machine with "
                    f"internet (puts {' or '.join(w.name for w in WEIGHTS.values())} there), set STYLEGAN_CACHE "
                    f"or pass --detector PATH; swd needs no weights")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in z.namelist())


class Detector:
    """uint8 NCHW images in, float32 features out ([N, 2048] Inception, [N, 4096] VGG16), with TF32 off as the
    official metrics."""

    def __init__(self, path: Path, device: torch.device):
        self.sha256 = sha256_file(path)
        known = {w.name: w.sha256 for w in WEIGHTS.values()}
        check_sha256(self.sha256, known.get(path.name), str(path))
        self.torchscript = _is_torchscript(path)
        fix = "get them again with `python -m jobs.fetch_weights --force`"
        try:
            if self.torchscript:
                self.module = torch.jit.load(str(path), map_location=device).eval()
            else:
                self.module = load_fid_inception(torch_load(path, "Inception weights"), str(path)).to(device)
        except UserError as e:
            raise UserError(f"{e}; {fix}") from None
        except Exception as e:  # torch.jit.load and load_state_dict raise many types for damaged files
            raise UserError(f"{path}: neither a TorchScript detector nor pytorch-fid Inception weights "
                            f"({type(e).__name__}: {' '.join(str(e).split())[:150]}); {fix}") from None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images, return_features=True) if self.torchscript else self._run(images)

    def lpips(self, images: torch.Tensor) -> torch.Tensor:
        """NVIDIA's VGG16 only: float NCHW images in [0, 255] (at most 256x256) -> rows whose squared distance is the
        LPIPS distance."""
        return self._run(images, resize_images=False, return_lpips=True)

    @torch.no_grad()
    def _run(self, images: torch.Tensor, **kwargs: bool) -> torch.Tensor:
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            return self.module(images, **kwargs).to(torch.float32)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
