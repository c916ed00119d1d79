"""Compute a metric for one generator against a preprocessed dataset, with real statistics cached per dataset.

Metric names: `fid50k_full`, `kid50k_full` (50k generated vs all real images), `fid<N>k` / `kid<N>k` (N thousand
generated); with NVIDIA's VGG16, `pr50k3_full` (precision and recall, 3 nearest neighbours, all reals; two results,
`pr50k3_full_precision` and `pr50k3_full_recall`, as NVIDIA's) and `ppl2_wend` (perceptual path length in W at the
path ends, 50k samples; `ppl<N>k_wend` for N thousand); and the weight-free `swd` and `diversity` (generated over
real, stylegan.metrics.diversity). Generation and feature extraction are split over ranks and gathered.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stylegan.data.reader import eval_pipeline, load_dataset_info, make_loader, named_errors, verify_shards
from stylegan.distributed import gather_lists
from stylegan.errors import UserError
from stylegan.fileio import write_bytes_atomic
from stylegan.generate import images_from_z, one_hot, padded
from stylegan.metrics import distances, diversity, ppl, swd
from stylegan.metrics.detector import Detector, find_detector
from stylegan.metrics.vgg import find_vgg16
from stylegan.models.stylegan2 import Generator
from stylegan.progress import Progress
from stylegan.seeds import seed_latents

SWD_IMAGES = 2048
SWD_MAX_DESCRIPTORS = 32768  # per pyramid level; a random subset keeps the cache small


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # fid | kid | pr | ppl | swd | div
    num_gen: int

    @property
    def detector(self) -> str | None:
        """The feature network it needs: NVIDIA's Inception, their VGG16, or none."""
        return {"fid": "inception", "kid": "inception", "pr": "vgg16", "ppl": "vgg16"}.get(self.kind)

    @property
    def weight_free(self) -> bool:
        return self.detector is None

    @property
    def results(self) -> list[str]:
        """The names its values are recorded under: precision and recall are two, as NVIDIA's."""
        return [f"{self.name}_precision", f"{self.name}_recall"] if self.kind == "pr" else [self.name]


def parse_metric(name: str) -> MetricSpec:
    if name == "swd":
        return MetricSpec(name, "swd", SWD_IMAGES)
    if name == "diversity":
        return MetricSpec(name, "div", diversity.IMAGES)
    if name == "ppl2_wend":
        return MetricSpec(name, "ppl", 50000)
    if m := re.fullmatch(r"(fid|kid)([1-9]\d*)k(_full)?|pr([1-9]\d*)k3_full|ppl([1-9]\d*)k_wend", name):
        kind = m.group(1) or ("pr" if m.group(4) else "ppl")
        return MetricSpec(name, kind, int(m.group(2) or m.group(4) or m.group(5)) * 1000)
    raise UserError(f"unknown metric '{name}': use fid50k_full, kid50k_full, fid<N>k, kid<N>k, pr50k3_full, "
                    "ppl2_wend, swd or diversity")


def detector_for(specs: list[MetricSpec], inception: str | None, vgg16: str | None, device: torch.device
                 ) -> dict[str, Detector]:
    """The detectors the metrics need, by name (MetricSpec.detector): only those are looked for."""
    needed = {s.detector for s in specs}
    found = {"inception": lambda: find_detector(inception), "vgg16": lambda: find_vgg16(vgg16)}
    return {name: Detector(find(), device) for name, find in found.items() if name in needed}


# ----------------------------------------------------------------------------------------------------------------
# Features of real and generated images.

def _extract(spec: MetricSpec, detector: Detector | None, seed: int) -> Callable[[torch.Tensor], object]:
    if spec.kind == "swd":
        gen = torch.Generator().manual_seed(seed)
        return lambda imgs: swd.patch_descriptors(imgs.cpu(), gen)
    if spec.kind == "div":
        return diversity.descriptors
    return detector  # features stay on the device until the last batch (_on_host)


def _on_host(chunks: list) -> list:
    """One rank's per-batch results on the host, copied after the last batch: a copy per batch made the host wait
    for the GPU every batch, and the GPU then waited while the host prepared the next batch."""
    return [c.cpu() if isinstance(c, torch.Tensor) else c for c in chunks]


def _combine(spec: MetricSpec, chunks: list) -> object:
    if spec.kind == "div":
        return torch.cat(chunks)
    if spec.kind != "swd":
        return torch.cat(chunks).numpy()
    levels = [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]
    gen = torch.Generator().manual_seed(0)
    return [lvl[torch.randperm(len(lvl), generator=gen)[:SWD_MAX_DESCRIPTORS]] for lvl in levels]


def _progress(spec: MetricSpec, what: str, total: int, rank: int, world: int) -> Progress:
    """Progress lines of one rank's share of a metric's images, printed by rank 0."""
    return Progress(total, f"{spec.name}: {what}" + (f" (rank {rank} of {world})" if world > 1 else ""),
                    enabled=rank == 0)


def real_features(data_dir: Path, spec: MetricSpec, detector: Detector | None, device: torch.device,
                  rank: int = 0, world: int = 1, batch: int = 64, mirror: bool = False) -> tuple[object, bool]:
    """Features (or SWD descriptors) of the real set, cached next to the dataset. Returns (features, cached).
    `mirror`: the detector metrics see every real image and its x-flip, as NVIDIA's metrics see the dataset of a
    run trained with --mirror=1 (the set the generator learned).

    The cache key covers dataset.json (which lists every shard's sha256), the detector's sha256, the metric kind
    and the mirroring, so a changed dataset or detector never reuses stale statistics."""
    mirror = mirror and not spec.weight_free
    info_bytes = (data_dir / "dataset.json").read_bytes()
    info = json.loads(info_bytes)
    key_src = info_bytes + (detector.sha256 if detector else "none").encode() + spec.kind.encode() + \
        (b"mirror" if mirror else b"")
    key = hashlib.sha256(key_src).hexdigest()[:16]
    path = data_dir / f"stats-{spec.kind}-{key}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)["features"]
        return (stored.numpy() if isinstance(stored, torch.Tensor) else stored), True
    limit = spec.num_gen if spec.weight_free else None
    extract = _extract(spec, detector, seed=rank)
    verify_shards(data_dir, info)  # statistics of damaged shards would be cached for good
    chunks, seen = [], 0
    total = min(limit or info["total_images"], info["total_images"])
    progress = _progress(spec, "reals", -(-total // world), rank, world)  # this rank's share, about
    for imgs, _ in named_errors(make_loader(eval_pipeline(data_dir, rank=rank, world=world), batch_size=batch,
                                            workers=2)):
        if limit is not None and seen >= limit // world:
            break
        imgs = imgs.to(device)
        chunks.append(extract(imgs))
        if mirror:
            chunks.append(extract(imgs.flip(3)))
        seen += len(imgs)
        progress.update(len(imgs))
    progress.close()
    features = _combine(spec, gather_lists(_on_host(chunks)))
    if rank == 0:
        buf = io.BytesIO()
        stored = torch.from_numpy(features) if isinstance(features, np.ndarray) else features
        torch.save({"features": stored, "metric": spec.kind}, buf)
        write_bytes_atomic(path, buf.getvalue())
    return features, False


@torch.no_grad()
def fake_features(G: Generator, spec: MetricSpec, num: int, detector: Detector | None, device: torch.device,
                  rank: int = 0, world: int = 1, batch: int = 64) -> object:
    """Features of `num` generated images (psi 1, random noise, as the official metrics); sample i uses latent
    RandomState(i), so results do not depend on the number of ranks."""
    extract = _extract(spec, detector, seed=1000 + rank)
    indices = list(range(rank, num, world))
    chunks = []
    progress = _progress(spec, "fakes", len(indices), rank, world)
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        z = seed_latents(idx, G.z_dim).to(device, non_blocking=True)  # no wait for the GPU's queue (see _on_host)
        c = one_hot(torch.tensor(idx).to(device, non_blocking=True) % max(G.c_dim, 1), G.c_dim)
        # whole batches for the generator and the detector: a last batch of another size would be a new graph to
        # compile, and would have cuDNN's benchmark mode time every convolution again
        imgs = images_from_z(G, padded(z, batch), padded(c, batch), noise_mode="random").permute(0, 3, 1, 2)
        # the padding's rows are dropped: after the detector, or before SWD's and diversity's per-image descriptors
        chunks.append(extract(imgs)[:len(idx)] if spec.detector else extract(imgs[:len(idx)]))
        progress.update(len(idx))
    progress.close()
    return _combine(spec, gather_lists(_on_host(chunks)))


def compute_metric(G: Generator, data_dir: Path, spec: MetricSpec, detector: Detector | None,
                   device: torch.device, rank: int = 0, world: int = 1, batch: int = 64, mirror: bool = False
                   ) -> tuple[dict[str, float], bool]:
    """({result name: value}, real statistics came from the cache). Every rank calls it; every rank gets the
    values. `detector`: the one MetricSpec.detector names. `mirror`: the run trained on x-flipped reals too (see
    real_features)."""
    info = load_dataset_info(data_dir, G.img_resolution)
    if spec.kind == "ppl":
        return {spec.name: ppl.path_length(G, detector, spec.num_gen, device, rank, world, batch)}, False
    real, cached = real_features(data_dir, spec, detector, device, rank, world, batch, mirror)
    num_gen = min(spec.num_gen, info["total_images"]) if spec.weight_free else spec.num_gen
    fake = fake_features(G, spec, num_gen, detector, device, rank, world, batch)
    if spec.kind == "pr":
        values = distances.precision_recall(torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device))
    elif spec.kind == "swd":
        values = (swd.swd(real, fake),)
    elif spec.kind == "div":
        values = (diversity.diversity_ratio(real, fake),)
    elif spec.kind == "kid":
        values = (distances.kernel_inception_distance(real, fake, device=device),)
    else:
        values = (distances.frechet_distance(*distances.gaussian_stats(real, device),
                                             *distances.gaussian_stats(fake, device)),)
    return dict(zip(spec.results, values, strict=True)), cached
