"""What NVIDIA's TensorFlow network pickles of every generation share: records of variables and arguments.

A TF pickle is a tuple (G, D, Gs) of network records (stylegan.formats.safe_pickle.TFNetworkRecord) whose states
hold `version`, `static_kwargs`, sub-networks (`components`) and `variables` as (TF name, numpy array). These
helpers read them into plain dicts and check them, for the StyleGAN2 reader (tf_pickle) and the StyleGAN (2018)
one (tf_stylegan1); any misfit is one UserError naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from stylegan.errors import UserError
from stylegan.formats.safe_pickle import Budget, TFNetworkRecord, plain


def fail(path: Path, what: str) -> NoReturn:
    raise UserError(f"{path}: {what}")


def build_funcs(net: TFNetworkRecord) -> str:
    """The build function names of a record and its components, e.g. 'training.networks_stylegan.G_style ...'."""
    subs = [build_funcs(s) for s in net.state.get("components", {}).values() if isinstance(s, TFNetworkRecord)]
    return " ".join([str(net.state.get("build_func_name", "")), *subs]).strip()


def is_stylegan1(nets: tuple) -> bool:
    """A (G, D, Gs) tuple built by NVIDIA's 2018 code (networks_stylegan.G_style / D_basic)."""
    funcs = " ".join(build_funcs(n) for n in nets if isinstance(n, TFNetworkRecord))
    return "networks_stylegan." in funcs or "G_style" in funcs or "D_basic" in funcs


def variables(path: Path, net: TFNetworkRecord, budget: Budget, versions: tuple[int, ...], family: str,
              prefix: str = "", depth: int = 0) -> dict[str, np.ndarray]:
    """Every variable of a network and its components, by TF name (`mapping/Dense0/weight`)."""
    budget.visit(depth)
    state = net.state
    name = prefix or state.get("name")
    if not isinstance(state.get("variables"), (list, tuple)) or not isinstance(state.get("components", {}), dict):
        fail(path, f"network record '{name}' has no variable list: not a TF network pickle")
    version = state.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in versions:
        fail(path, f"network record '{name}' is of version {version!r:.40}: {family} networks are of version "
                   f"{' or '.join(map(str, versions))}")
    out = {}
    for item in state["variables"]:
        budget.visit(depth + 1)
        # scalars (the lod) come as numpy scalars
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (np.ndarray, np.floating)) and item[1].dtype.kind == "f"):
            fail(path, f"a variable of '{name}' is not a (name, float array) pair")
        budget.bytes_left -= item[1].nbytes
        out[prefix + item[0]] = np.asarray(item[1])
    for key, sub in state.get("components", {}).items():
        if not isinstance(sub, TFNetworkRecord):
            fail(path, f"component '{prefix}{key}' is not a network record")
        out.update(variables(path, sub, budget, versions, family, f"{prefix}{key}/", depth + 1))
    return out


def merged_kwargs(net: TFNetworkRecord, budget: Budget) -> dict:
    """The network's static_kwargs merged with its components' (the components get most of them)."""
    merged: dict[str, Any] = {}
    for sub in net.state.get("components", {}).values():
        if isinstance(sub, TFNetworkRecord):
            merged.update(merged_kwargs(sub, budget))
    merged.update(plain(net.state.get("static_kwargs") or {}, budget))
    return merged


def take(path: Path, name: str, tf: dict[str, np.ndarray], key: str) -> np.ndarray:
    """Remove and return variable `key`; a missing one is named."""
    if key not in tf:
        fail(path, f"{name} has no variable '{key}': not a network this converter knows")
    return tf.pop(key)


def tf_conv(w: np.ndarray, flip: bool = False) -> np.ndarray:
    """A TF conv kernel [kh, kw, in, out] as ours [out, in, kh, kw] (flipped in space for NVIDIA's up-convs)."""
    return (w[::-1, ::-1] if flip else w).transpose(3, 2, 0, 1)


def as_tensors(path: Path, name: str, sd: dict[str, np.ndarray], network: type, kwargs: dict, budget: Budget,
               fixed: Callable[[str], torch.Tensor | None] = lambda key: None) -> dict[str, torch.Tensor]:
    """float32 tensors in the order of the network `kwargs` describe, each shape checked; `fixed(key)` gives the
    buffers the file does not hold (filters)."""
    try:
        with torch.device("meta"):
            shapes = network(**kwargs).state_dict()
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
        fail(path, f"{name}: its arguments describe no network ({type(e).__name__}: {' '.join(str(e).split())[:160]})")
    out = {}
    for key, t in shapes.items():
        if (value := fixed(key)) is not None:
            out[key] = value
            continue
        value = sd.pop(key, None)
        if value is None or tuple(value.shape) != tuple(t.shape):
            fail(path, f"{name}: {key} is {'missing' if value is None else list(value.shape)} where its arguments "
                       f"give {list(t.shape)}")
        out[key] = budget.copy(torch.from_numpy(np.array(value, dtype=np.float32, order="C")))
    return out


def read_networks(path: Path, nets: tuple, budget: Budget, generator: Callable, discriminator: Callable) -> dict:
    """(G, D, Gs) records -> our checkpoint layout; `generator` and `discriminator` read one record each, (path,
    record, budget) -> (constructor arguments, state dict)."""
    if len(nets) != 3:
        fail(path, f"a tuple of {len(nets)} TF networks: NVIDIA's TF pickles hold (G, D, Gs)")
    G_kwargs, G = generator(path, nets[0], budget)
    D_kwargs, D = discriminator(path, nets[1], budget)
    Gs_kwargs, G_ema = generator(path, nets[2], budget)
    if Gs_kwargs != G_kwargs:
        fail(path, "its G and Gs have different architectures")
    return {"format": 1, "source": str(path), "G_kwargs": G_kwargs, "D_kwargs": D_kwargs, "G": G, "D": D,
            "G_ema": G_ema}
