"""Import NVIDIA StyleGAN2 pickles (stylegan2-ada-pytorch, stylegan3 `--cfg=stylegan2`) without running them.

NVIDIA pickles embed source code: each network is reduced to `torch_utils.persistence._reconstruct_persistent_obj
(meta)` whose `meta['module_src']` would be executed on load. We never execute it and never import the pickle's
modules: a restricted unpickler admits only the handful of globals such a file needs, turns every persistent object
into a plain record, and we read tensors and constructor arguments out of those records.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylegan.errors import UserError


class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` becomes here: the meta dict, with module_src never executed."""

    def __init__(self, meta: dict):
        self.meta = meta

    @property
    def state(self) -> dict:
        return self.meta.get("state") or {}


class _AttrDict(dict):
    """Stands in for dnnlib.util.EasyDict (a dict with attribute access); only its items matter."""


def _load_storage(data: bytes) -> Any:
    # Tensors in a plain pickle carry their storage as bytes in torch.save format: load those with torch's own
    # restricted loader, so no code path here unpickles arbitrary objects.
    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(subtype: type, shape: tuple, dtype: bytes) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing numpy array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): _AttrDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.startswith("dnnlib.tflib"):
            raise pickle.UnpicklingError("this is a TensorFlow StyleGAN pickle; only PyTorch pickles "
                                         "(stylegan2-ada-pytorch, stylegan3) can be imported")
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}': it is not part of a StyleGAN "
                                     "network pickle (the file may be malicious)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("unexpected persistent id: not a plain NVIDIA network pickle")


def _tensors(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a module record into a state dict: parameters, buffers, then submodules, official names."""
    state = record.state
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if t is not None:
                out[prefix + name] = t.detach().clone()
    for name, sub in (state.get("_modules") or {}).items():
        if isinstance(sub, PersistentRecord):
            out.update(_tensors(sub, prefix + name + "."))
        elif sub is not None:
            raise pickle.UnpicklingError(f"submodule '{prefix}{name}' is not a StyleGAN network module")
    return out


def _plain(value: Any) -> Any:
    """EasyDicts and tuples to plain dicts and lists (what our checkpoints store)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# Constructor arguments of the official classes that change nothing in the function the network computes.
_NO_EFFECT = {"fp16_channels_last", "channels_last", "fused_modconv_default", "freeze_layers"}


def _check_default(path: Path, net: str, key: str, value: Any, default: Any) -> None:
    if _plain(value) != default:
        raise UserError(f"{path}: {net} uses {key}={value!r}; only {default!r} is supported")


def generator_kwargs(path: Path, init_kwargs: dict) -> dict:
    kw = _plain(init_kwargs)
    kw.update(kw.pop("synthesis_kwargs", {}))
    mapping = kw.get("mapping_kwargs", {})
    _check_default(path, "G", "mapping_kwargs.activation", mapping.pop("activation", "lrelu"), "lrelu")
    _check_default(path, "G", "resample_filter", kw.pop("resample_filter", [1, 3, 3, 1]), [1, 3, 3, 1])
    return {k: v for k, v in kw.items() if k not in _NO_EFFECT}


def discriminator_kwargs(path: Path, init_kwargs: dict) -> dict:
    kw = _plain(init_kwargs)
    block = {k: v for k, v in kw.pop("block_kwargs", {}).items() if k not in _NO_EFFECT}
    _check_default(path, "D", "block_kwargs.activation", block.pop("activation", "lrelu"), "lrelu")
    _check_default(path, "D", "resample_filter", block.pop("resample_filter", [1, 3, 3, 1]), [1, 3, 3, 1])
    if block:
        raise UserError(f"{path}: D has unsupported block_kwargs {sorted(block)}")
    epilogue = kw.get("epilogue_kwargs", {})
    _check_default(path, "D", "epilogue_kwargs.activation", epilogue.pop("activation", "lrelu"), "lrelu")
    return {k: v for k, v in kw.items() if k not in _NO_EFFECT}


def load_nvidia_pickle(path: str | Path) -> dict:
    """Read an NVIDIA snapshot pickle into our checkpoint layout (G_kwargs, D_kwargs, G, D, G_ema, augment)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _RestrictedUnpickler(f).load()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            RuntimeError) as e:
        raise UserError(f"{path}: cannot read as an NVIDIA StyleGAN2 pickle: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("G_ema", data.get("G")), PersistentRecord):
        raise UserError(f"{path}: not an NVIDIA network pickle (expected a dict with 'G', 'D', 'G_ema')")

    ckpt: dict[str, Any] = {"format": 1, "source": str(path)}
    for name in ("G", "D", "G_ema"):
        record = data.get(name)
        if record is None:
            continue
        if not isinstance(record, PersistentRecord):
            raise UserError(f"{path}: entry '{name}' is not a persistent network object")
        tensors = _tensors(record)
        if any(k.startswith("synthesis.input.") for k in tensors):
            raise UserError(f"{path}: this is a StyleGAN3 (alias-free) network; only StyleGAN2 is supported")
        init_kwargs = record.state.get("_init_kwargs", record.state.get("init_kwargs"))
        if init_kwargs is None:
            raise UserError(f"{path}: network '{name}' has no constructor arguments (init_kwargs)")
        kw_key = "D_kwargs" if name == "D" else "G_kwargs"
        kwargs = (discriminator_kwargs if name == "D" else generator_kwargs)(path, init_kwargs)
        ckpt.setdefault(kw_key, kwargs)
        ckpt[name] = tensors
    if "G_ema" not in ckpt:
        ckpt["G_ema"] = ckpt["G"]
    augment = data.get("augment_pipe")
    if isinstance(augment, PersistentRecord):
        p = (augment.state.get("_buffers") or {}).get("p")
        if p is not None:
            ckpt["augment"] = {"p": float(p)}
    if isinstance(data.get("training_set_kwargs"), dict):
        ckpt["training_set_kwargs"] = _plain(data["training_set_kwargs"])
    return ckpt
