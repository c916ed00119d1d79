"""Import NVIDIA's StyleGAN2 network pickles without running them: the PyTorch ones (stylegan2-ada-pytorch,
stylegan3 `--cfg=stylegan2`, read here) and the TensorFlow ones (StyleGAN2 config-e/f, StyleGAN2-ADA TF; read by
stylegan.formats.tf_pickle), both through stylegan.formats.safe_pickle.

A PyTorch network is pickled as `torch_utils.persistence._reconstruct_persistent_obj(meta)` with source code in
`meta['module_src']`, which NVIDIA's loader executes and we never do: it becomes a record from which tensors and
constructor arguments are read.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from stylegan.errors import UserError
from stylegan.formats.safe_pickle import Budget, PersistentRecord, TFNetworkRecord, plain, unpickle
from stylegan.formats.tf_pickle import read_tf_networks
from stylegan.formats.tf_records import is_stylegan1
from stylegan.formats.tf_stylegan1 import read_stylegan1_networks


def _tensors(record: PersistentRecord, budget: Budget, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Flatten a module record into a state dict: parameters, buffers, then submodules, official names."""
    budget.visit(depth)
    state = record.state
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        members = state.get(group) or {}
        if not isinstance(members, dict):
            raise UserError(f"{budget.path}: {prefix}{group} is a {type(members).__name__}, not a mapping")
        for name, t in members.items():
            if t is None:
                continue
            if type(t) not in (torch.Tensor, torch.nn.Parameter) or t.__dict__:
                raise UserError(f"{budget.path}: {prefix}{name} is a {type(t).__name__} where a plain tensor belongs")
            out[prefix + str(name)] = budget.copy(t)
    modules = state.get("_modules") or {}
    if not isinstance(modules, dict):
        raise UserError(f"{budget.path}: {prefix}_modules is a {type(modules).__name__}, not a mapping")
    for name, sub in modules.items():
        if isinstance(sub, PersistentRecord):
            out.update(_tensors(sub, budget, f"{prefix}{name}.", depth + 1))
        elif sub is not None:
            raise UserError(f"{budget.path}: submodule '{prefix}{name}' is not a StyleGAN network module")
    return out


# Constructor arguments of the official classes that change nothing in the function the network computes.
_NO_EFFECT = {"fp16_channels_last", "channels_last", "fused_modconv_default", "freeze_layers"}


def _check_default(path: Path, net: str, key: str, value: Any, default: Any) -> None:
    if value != default:
        raise UserError(f"{path}: {net} uses {key}={value!r}; only {default!r} is supported")


def generator_kwargs(path: Path, kw: dict) -> dict:
    kw = dict(kw)
    kw.update(kw.pop("synthesis_kwargs", None) or {})
    mapping = kw.get("mapping_kwargs") or {}
    _check_default(path, "G", "mapping_kwargs.activation", mapping.pop("activation", "lrelu"), "lrelu")
    _check_default(path, "G", "resample_filter", kw.pop("resample_filter", [1, 3, 3, 1]), [1, 3, 3, 1])
    return {k: v for k, v in kw.items() if k not in _NO_EFFECT}


def discriminator_kwargs(path: Path, kw: dict) -> dict:
    kw = dict(kw)
    block = {k: v for k, v in (kw.pop("block_kwargs", None) or {}).items() if k not in _NO_EFFECT}
    _check_default(path, "D", "block_kwargs.activation", block.pop("activation", "lrelu"), "lrelu")
    _check_default(path, "D", "resample_filter", block.pop("resample_filter", [1, 3, 3, 1]), [1, 3, 3, 1])
    if block:
        raise UserError(f"{path}: D has unsupported block_kwargs {sorted(block)}")
    epilogue = kw.get("epilogue_kwargs") or {}
    _check_default(path, "D", "epilogue_kwargs.activation", epilogue.pop("activation", "lrelu"), "lrelu")
    return {k: v for k, v in kw.items() if k not in _NO_EFFECT}


def _read_pytorch(path: Path, data: dict, budget: Budget) -> dict:
    ckpt: dict[str, Any] = {"format": 1, "source": str(path)}
    for name in ("G", "D", "G_ema"):
        record = data.get(name)
        if record is None:
            continue
        if not isinstance(record, PersistentRecord):
            raise UserError(f"{path}: entry '{name}' is not a persistent network object")
        tensors = _tensors(record, budget)
        if any(k.startswith("synthesis.input.") for k in tensors):
            raise UserError(f"{path}: this is a StyleGAN3 (alias-free) network; only StyleGAN2 is supported")
        init_kwargs = record.state.get("_init_kwargs", record.state.get("init_kwargs"))
        if not isinstance(init_kwargs, dict):
            raise UserError(f"{path}: network '{name}' has no constructor arguments (init_kwargs)")
        kwargs = plain(init_kwargs, budget)
        ckpt.setdefault("D_kwargs" if name == "D" else "G_kwargs",
                        (discriminator_kwargs if name == "D" else generator_kwargs)(path, kwargs))
        ckpt[name] = tensors
    if "G_ema" not in ckpt:
        ckpt["G_ema"] = ckpt["G"]
    augment = data.get("augment_pipe")
    if isinstance(augment, PersistentRecord):
        p = (augment.state.get("_buffers") or {}).get("p")
        if isinstance(p, torch.Tensor) and p.numel() == 1:
            ckpt["augment"] = {"p": float(p)}
    if isinstance(data.get("training_set_kwargs"), dict):
        ckpt["training_set_kwargs"] = plain(data["training_set_kwargs"], budget)
    return ckpt


def load_nvidia_pickle(path: str | Path) -> dict:
    """Read an NVIDIA network pickle (PyTorch or TensorFlow) into our checkpoint layout: G_kwargs, D_kwargs, G, D,
    G_ema (and augment, training_set_kwargs where the file has them)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = unpickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, MemoryError, RecursionError, OverflowError, UnicodeDecodeError) as e:
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"{path}: cannot read as an NVIDIA network pickle: {detail}") from None
    budget = Budget(path, 2 * path.stat().st_size + (1 << 20))
    if isinstance(data, tuple) and data and all(isinstance(n, TFNetworkRecord) for n in data):
        return (read_stylegan1_networks if is_stylegan1(data) else read_tf_networks)(path, data, budget)
    if not isinstance(data, dict) or not isinstance(data.get("G_ema", data.get("G")), PersistentRecord):
        raise UserError(f"{path}: not an NVIDIA network pickle (expected a dict with 'G', 'D', 'G_ema', or "
                        "TensorFlow's (G, D, Gs))")
    return _read_pytorch(path, data, budget)
