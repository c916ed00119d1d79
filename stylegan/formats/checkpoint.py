"""Checkpoints: network files loadable with `torch.load(weights_only=True)` (where they live: stylegan.rundir).

A checkpoint is a plain dict of tensors and Python values (no pickled classes): a training snapshot holds every key
of TrainingSnapshot below; an imported NVIDIA network or an export holds format, G_kwargs and some of G, D, G_ema,
D_kwargs, and `family` 'stylegan1' for StyleGAN (2018) networks (absent: StyleGAN2). Files are written atomically,
so a snapshot under its final name is always complete. Loading checks a file before it costs memory or builds
anything: every network is first built on the meta device from its arguments and its tensors' shapes compared with
the file's, so absurd arguments in a small file are refused, not allocated; state dicts must hold tensors, and finite
ones.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import IO, Any, TypedDict

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as st_save
from torch import nn

from stylegan.errors import UserError
from stylegan.fileio import atomic_write, write_bytes_atomic, write_text_atomic
from stylegan.formats.nvidia_pickle import load_nvidia_pickle
from stylegan.models import FAMILIES

FORMAT = 1


class TrainingSnapshot(TypedDict):
    format: int                          # FORMAT
    G_kwargs: dict                       # constructor arguments of Generator (and of G_ema)
    D_kwargs: dict                       # constructor arguments of Discriminator
    G: dict[str, torch.Tensor]           # state dicts, official parameter names
    D: dict[str, torch.Tensor]
    G_ema: dict[str, torch.Tensor]
    G_opt: dict                          # optimizer state dicts
    D_opt: dict
    augment: dict                        # {"p": ADA probability}
    progress: dict                       # cur_nimg, cur_tick, batch_idx, resumes
    faults: dict                         # non-finite steps, rollbacks
    pl_mean: torch.Tensor                # path-length running mean
    ada_signs: torch.Tensor              # ADA's sign sum and count since its last update
    rng: dict                            # torch, cuda, numpy, python generator states
    config: dict                         # the resolved training config


def torch_load(path: str | Path, what: str) -> Any:
    """`torch.load(weights_only=True)`, with any failure as one line naming the file (never torch's advice to load
    with weights_only=False: that would run whatever the file holds)."""
    try:
        with warnings.catch_warnings():  # torch warns of foreign pickle protocols before it refuses them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated zips and foreign pickles
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in first or "Weights only load failed" in first:
            first = "it holds objects that a weights-only load refuses"
        raise UserError(f"{path}: corrupt or not {what} ({first[:200]})") from None


class _KeepsWriteErrors:
    """A file for torch.save that remembers the OSError of a failed write: torch's serializer reports it as a
    RuntimeError about stream positions, which would hide a full disk."""

    def __init__(self, f: IO[bytes]):
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    with atomic_write(path) as f:
        out = _KeepsWriteErrors(f)
        try:
            torch.save(ckpt, out)
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None  # atomic_write names the file


def load_checkpoint(path: str | Path) -> dict:
    """Our `.pt` checkpoint; raises UserError naming the file when it is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    ckpt = torch_load(path, "a stylegan checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "G_kwargs" not in ckpt:
        raise UserError(f"{path}: not a stylegan checkpoint of format {FORMAT} (convert NVIDIA .pkl files with "
                        "`python -m jobs.convert`)")
    return ckpt


def load_any(path: str | Path, missing: str = "") -> dict:
    """A checkpoint dict from our `.pt`, an exported `.safetensors` (G_ema only) or an NVIDIA `.pkl`. `missing`:
    what to tell the user when the file does not exist (which setting names it, the alternatives)."""
    path = Path(path)
    loaders = {".pkl": load_nvidia_pickle, ".safetensors": load_safetensors, ".pt": load_checkpoint}
    if path.suffix not in loaders:
        raise UserError(f"{path}: unknown network file type '{path.suffix}' (use .pt, .safetensors or .pkl)")
    if not path.is_file():
        raise UserError(f"{path}: no such file" + (f" ({missing})" if missing else ""))
    return loaders[path.suffix](path)


def is_finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in the tensor: min and max carry a NaN through and show an infinity, in one vectorised
    pass (`isfinite().all()` is many times slower on a CPU, where every network file is checked)."""
    return not t.is_floating_point() or t.numel() == 0 or all(bool(m.isfinite()) for m in torch.aminmax(t))


def check_state(path: str | Path, name: str, state: Any) -> dict[str, torch.Tensor]:
    """`state` is a state dict of finite tensors; else one UserError naming the file and the network."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{path}: '{name}' is not a state dict of tensors (a damaged or foreign file)")
    bad = [k for k, v in state.items() if not is_finite(v)]
    if bad:
        raise UserError(f"{path}: {name} has non-finite values (NaN or inf) in {', '.join(bad[:3])}: the network "
                        "diverged before this file was written; use an earlier snapshot")
    return state


def network_classes(ckpt: dict, path: str | Path = "<checkpoint>") -> tuple[type, type]:
    family = ckpt.get("family", "stylegan2")
    if family not in FAMILIES:
        raise UserError(f"{path}: network family {family!r:.40} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[family]


def build_network(ckpt: dict, which: str, path: str | Path = "<checkpoint>") -> nn.Module:
    """The network `which` (G, G_ema or D) of a checkpoint: its arguments are checked on the meta device against
    the tensors' shapes first, then it is made on the CPU with those tensors."""
    G_cls, D_cls = network_classes(ckpt, path)
    kwargs_key, cls = ("D_kwargs", D_cls) if which == "D" else ("G_kwargs", G_cls)
    if which not in ckpt or kwargs_key not in ckpt:
        raise UserError(f"{path}: has no discriminator (a generator-only export cannot resume training)"
                        if which == "D" else f"{path}: has no '{which}' network")
    state = check_state(path, which, ckpt[which])
    kwargs = ckpt[kwargs_key]
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in cls(**kwargs).state_dict().items()}
    except Exception as e:  # any argument error: TypeError, ValueError, OverflowError, ZeroDivisionError...
        raise UserError(f"{path}: bad {kwargs_key} ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    found = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != found:
        diff = sorted(k for k in shapes.keys() | found.keys() if shapes.get(k) != found.get(k))
        detail = ", ".join(f"{k} {list(found[k]) if k in found else 'missing'} (arguments: "
                           f"{list(shapes[k]) if k in shapes else 'none'})" for k in diff[:3])
        raise UserError(f"{path}: {which} does not fit its architecture arguments: {detail}")
    with torch.device("meta"):
        net = cls(**kwargs)
    net = net.to_empty(device="cpu")  # every tensor is then overwritten from the file
    net.load_state_dict(state, strict=True)
    return net


def build_generator(ckpt: dict, which: str = "G_ema", path: str | Path = "<checkpoint>") -> nn.Module:
    return build_network(ckpt, which, path)


def build_discriminator(ckpt: dict, path: str | Path = "<checkpoint>") -> nn.Module:
    return build_network(ckpt, "D", path)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """G_ema of any supported network file, in eval mode, ready to sample."""
    ckpt = load_any(path, missing="--checkpoint: a .pt snapshot, an NVIDIA .pkl or an exported .safetensors")
    return build_generator(ckpt, "G_ema", path).eval().requires_grad_(False).to(device)


def load_training_snapshot(path: Path, family: str, G_kwargs: dict, D_kwargs: dict) -> dict:
    """A snapshot this run can resume from: same network family and architecture, every part of the training state,
    finite networks. Anything else is a UserError that says how to get past it (move the file away: the run then
    resumes from the snapshot before it)."""
    ckpt = load_checkpoint(path)
    if (found := ckpt.get("family", "stylegan2")) != family:
        raise UserError(f"{path}: holds {found!r:.40} networks and the config builds {family} ones: set "
                        f"family={found:.40} to resume this run, or start a new run (another run_name)")
    check_same_architecture(path, "G", G_kwargs, ckpt["G_kwargs"])
    check_same_architecture(path, "D", D_kwargs, ckpt.get("D_kwargs"))
    missing = [k for k in TrainingSnapshot.__annotations__ if k not in ckpt]
    if missing:
        raise UserError(f"{path}: cannot resume from it: it lacks {', '.join(missing)} (not a training snapshot); "
                        f"move it out of {path.parent} to resume from the one before it")
    for name in ("G", "D", "G_ema"):
        check_state(path, name, ckpt[name])
    return ckpt


def restore(path: Path, targets: dict[str, Any], ckpt: dict) -> None:
    """load_state_dict of each target (network or optimizer) from ckpt[name], as one UserError if one does not fit."""
    for name, target in targets.items():
        try:
            target.load_state_dict(ckpt[name])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            raise UserError(f"{path}: cannot resume from it: its {name} does not fit ({' '.join(str(e).split())[:200]}"
                            f"); move it out of {path.parent} to resume from the one before it") from None


def non_finite_networks(ckpt: dict) -> list[str]:
    return [n for n in ("G", "D", "G_ema") if not all(is_finite(v) for v in ckpt.get(n, {}).values())]


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
    family = ckpt.get("family", "stylegan2")
    meta = {"format": str(FORMAT), "family": family, "G_kwargs": json.dumps(ckpt["G_kwargs"])}
    write_bytes_atomic(dest, st_save(tensors, metadata=meta))
    write_text_atomic(dest.with_suffix(".json"), json.dumps({"family": family, "G_kwargs": ckpt["G_kwargs"]},
                                                            indent=2) + "\n")
    return dest


def load_safetensors(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if "G_kwargs" in meta:
            kwargs, family = json.loads(meta["G_kwargs"]), meta.get("family", "stylegan2")
        elif path.with_suffix(".json").is_file():
            sidecar = json.loads(path.with_suffix(".json").read_text())
            kwargs, family = sidecar["G_kwargs"], sidecar.get("family", "stylegan2")
        else:
            raise UserError(f"{path}: no G_kwargs in its metadata and no {path.with_suffix('.json').name} beside it")
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: corrupt safetensors file or metadata ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None
    if not isinstance(kwargs, dict):
        raise UserError(f"{path}: its G_kwargs metadata is not a mapping of constructor arguments")
    return {"format": FORMAT, "family": family, "G_kwargs": kwargs, "G_ema": tensors}


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
