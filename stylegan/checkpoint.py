"""Snapshots: one `network-snapshot-<kimg:06d>.pt` per snapshot, loadable with `torch.load(weights_only=True)`.

A checkpoint is a plain dict of tensors and Python values (no pickled classes):
    format       1
    G_kwargs     constructor arguments of Generator (and of G_ema)
    D_kwargs     constructor arguments of Discriminator
    G, D, G_ema  state dicts (official parameter names)
    G_opt, D_opt optimizer state dicts                       (training snapshots only)
    augment      {'p': float, ...}                           (training snapshots, imported pickles)
    progress     {'cur_nimg': int, 'cur_tick': int, ...}     (training snapshots only)
    rng          {'torch', 'cuda', 'numpy', 'python'}        (training snapshots only)
    config       the full resolved training config           (training snapshots only)
Files are written atomically, so a snapshot under its final name is always complete.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as st_save
from torch import nn

from stylegan.errors import UserError
from stylegan.fileio import atomic_write, write_bytes_atomic, write_text_atomic
from stylegan.networks import Discriminator, Generator
from stylegan.nvidia_pickle import load_nvidia_pickle

FORMAT = 1
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d{6,})\.pt$")


def snapshot_name(kimg: int) -> str:
    return f"network-snapshot-{kimg:06d}.pt"


def list_snapshots(directory: str | Path) -> list[tuple[int, Path]]:
    """Complete snapshots in `directory` as (kimg, path), oldest first. Temp files of unfinished writes never
    match the name pattern, so they are never listed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := SNAPSHOT_RE.match(p.name))]
    return sorted(found)


def latest_snapshot(directory: str | Path) -> Path | None:
    snaps = list_snapshots(directory)
    return snaps[-1][1] if snaps else None


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    with atomic_write(path) as f:
        torch.save(ckpt, f)


def load_checkpoint(path: str | Path) -> dict:
    """Our `.pt` checkpoint; raises UserError naming the file when it is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated zips and foreign pickles
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: corrupt or not a stylegan checkpoint ({first_line})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "G_kwargs" not in ckpt:
        raise UserError(f"{path}: not a stylegan checkpoint of format {FORMAT} (convert NVIDIA .pkl files with "
                        "`python -m jobs.convert`)")
    return ckpt


def load_any(path: str | Path) -> dict:
    """A checkpoint dict from our `.pt`, an exported `.safetensors` (G_ema only) or an NVIDIA `.pkl`."""
    path = Path(path)
    if path.suffix == ".pkl":
        return load_nvidia_pickle(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix == ".pt":
        return load_checkpoint(path)
    raise UserError(f"{path}: unknown network file type '{path.suffix}' (use .pt, .safetensors or .pkl)")


def _load_into(module: nn.Module, state: dict, path: str | Path, name: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"{path}: {name} does not fit its architecture arguments: {detail}") from None


def build_generator(ckpt: dict, which: str = "G_ema", path: str | Path = "<checkpoint>") -> Generator:
    try:
        G = Generator(**ckpt["G_kwargs"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: bad G_kwargs: {e}") from None
    if which not in ckpt:
        raise UserError(f"{path}: has no '{which}' network")
    _load_into(G, ckpt[which], path, which)
    return G


def build_discriminator(ckpt: dict, path: str | Path = "<checkpoint>") -> Discriminator:
    if "D" not in ckpt or "D_kwargs" not in ckpt:
        raise UserError(f"{path}: has no discriminator (a generator-only export cannot resume training)")
    try:
        D = Discriminator(**ckpt["D_kwargs"])
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: bad D_kwargs: {e}") from None
    _load_into(D, ckpt["D"], path, "D")
    return D


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """G_ema of any supported network file, in eval mode, ready to sample."""
    return build_generator(load_any(path), "G_ema", path).eval().requires_grad_(False).to(device)


def check_same_architecture(path: str | Path, name: str, expected: dict, found: dict) -> None:
    """Refuse to resume a run from a checkpoint built with other constructor arguments."""
    diff = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    if diff:
        detail = ", ".join(f"{k}: config {expected.get(k)!r} vs checkpoint {found.get(k)!r}" for k in diff)
        raise UserError(f"{path}: {name} architecture does not fit the config ({detail})")


def export_safetensors(ckpt: dict, dest: str | Path) -> Path:
    """G_ema alone as `.safetensors`, plus `<dest>.json` with its constructor arguments, for sharing."""
    dest = Path(dest)
    tensors = {k: v.contiguous() for k, v in ckpt["G_ema"].items()}
    meta = {"format": str(FORMAT), "G_kwargs": json.dumps(ckpt["G_kwargs"])}
    write_bytes_atomic(dest, st_save(tensors, metadata=meta))
    write_text_atomic(dest.with_suffix(".json"), json.dumps({"G_kwargs": ckpt["G_kwargs"]}, indent=2) + "\n")
    return dest


def load_safetensors(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: corrupt safetensors file ({e})") from None
    if "G_kwargs" in meta:
        kwargs = json.loads(meta["G_kwargs"])
    elif path.with_suffix(".json").is_file():
        kwargs = json.loads(path.with_suffix(".json").read_text())["G_kwargs"]
    else:
        raise UserError(f"{path}: no G_kwargs in its metadata and no {path.with_suffix('.json').name} beside it")
    return {"format": FORMAT, "G_kwargs": kwargs, "G_ema": tensors}


# ----------------------------------------------------------------------------------------------------------------
# RNG state, stored as tensors and plain values so it survives weights_only loading.

def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1])],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, state = rng["python"]
    random.setstate((version, tuple(state), None))
