"""Compute a metric for one generator against a preprocessed dataset, with real statistics cached per dataset.

Metric names: `fid50k_full`, `kid50k_full` (50k generated vs all real images), `fid<N>k` / `kid<N>k` (N thousand
generated), and the weight-free `swd` and `diversity` (generated over real, stylegan.metrics.diversity).
Generation and feature extraction are split over ranks and gathered.
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
from stylegan.generate import images_from_z, one_hot
from stylegan.metrics import distances, diversity, swd
from stylegan.metrics.detector import Detector, find_detector
from stylegan.models.stylegan2 import Generator
from stylegan.progress import Progress
from stylegan.seeds import seed_latents

SWD_IMAGES = 2048
SWD_MAX_DESCRIPTORS = 32768  # per pyramid level; a random subset keeps the cache small


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # fid | kid | swd | div
    num_gen: int

    @property
    def weight_free(self) -> bool:
        return self.kind in ("swd", "div")


def parse_metric(name: str) -> MetricSpec:
    if name == "swd":
        return MetricSpec(name, "swd", SWD_IMAGES)
    if name == "diversity":
        return MetricSpec(name, "div", diversity.IMAGES)
    m = re.fullmatch(r"(fid|kid)(\d+)k(_full)?", name)
    if not m:
        raise UserError(f"unknown metric '{name}': use fid50k_full, kid50k_full, fid<N>k, kid<N>k, swd or diversity")
    return MetricSpec(name, m.group(1), int(m.group(2)) * 1000)


def detector_for(specs: list[MetricSpec], explicit: str | None, device: torch.device) -> Detector | None:
    """The detector the metrics need: None when all are weight-free, so no weights are looked for."""
    return Detector(find_detector(explicit), device) if not all(s.weight_free for s in specs) else None


# ----------------------------------------------------------------------------------------------------------------
# Features of real and generated images.

def _extract(spec: MetricSpec, detector: Detector | None, seed: int) -> Callable[[torch.Tensor], object]:
    if spec.kind == "swd":
        gen = torch.Generator().manual_seed(seed)
        return lambda imgs: swd.patch_descriptors(imgs.cpu(), gen)
    if spec.kind == "div":
        return lambda imgs: diversity.descriptors(imgs).cpu()
    return lambda imgs: detector(imgs).cpu().numpy()


def _combine(spec: MetricSpec, chunks: list) -> object:
    if spec.kind == "div":
        return torch.cat(chunks)
    if spec.kind != "swd":
        return np.concatenate(chunks)
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
    features = _combine(spec, gather_lists(chunks))
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
        z = seed_latents(idx, G.z_dim).to(device)
        c = one_hot(torch.tensor(idx, device=device) % max(G.c_dim, 1), G.c_dim)
        imgs = images_from_z(G, z, c, noise_mode="random", pad_to=batch).permute(0, 3, 1, 2)
        chunks.append(extract(imgs))
        progress.update(len(idx))
    progress.close()
    return _combine(spec, gather_lists(chunks))


def compute_metric(G: Generator, data_dir: Path, spec: MetricSpec, detector: Detector | None,
                   device: torch.device, rank: int = 0, world: int = 1, batch: int = 64, mirror: bool = False
                   ) -> tuple[float, bool]:
    """(value, real statistics came from the cache). Every rank calls it; every rank gets the value. `mirror`:
    the run trained on x-flipped reals too (see real_features)."""
    info = load_dataset_info(data_dir, G.img_resolution)
    real, cached = real_features(data_dir, spec, detector, device, rank, world, batch, mirror)
    num_gen = min(spec.num_gen, info["total_images"]) if spec.weight_free else spec.num_gen
    fake = fake_features(G, spec, num_gen, detector, device, rank, world, batch)
    if spec.kind == "swd":
        return swd.swd(real, fake), cached
    if spec.kind == "div":
        return diversity.diversity_ratio(real, fake), cached
    if spec.kind == "kid":
        return distances.kernel_inception_distance(real, fake), cached
    return distances.frechet_distance(*distances.gaussian_stats(real), *distances.gaussian_stats(fake)), cached
