"""What NVIDIA's TensorFlow network pickles of every generation share: records of variables and arguments.

A TF pickle is a tuple (G, D, Gs) of network records (stylegan.formats.safe_pickle.TFNetworkRecord) whose states
hold `version`, `static_kwargs`, sub-networks (`components`) and `variables` as (TF name, numpy array). These
helpers read them into plain dicts and check them, for the StyleGAN2 reader (tf_pickle) and the StyleGAN (2018)
one (tf_stylegan1); any misfit is one UserError naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from stylegan.errors import UserError
from stylegan.formats.safe_pickle import Budget, TFNetworkRecord, plain


def fail(path: Path, what: str) -> NoReturn:
    raise UserError(f"{path}: {what}")


def build_func(net: object) -> str:
    """A record's build function name, e.g. 'training.networks_stylegan.G_style' ('' when it has none)."""
    name = net.state.get("build_func_name") if isinstance(net, TFNetworkRecord) else None
    return name[:200] if isinstance(name, str) else ""


def is_stylegan1(nets: tuple) -> bool:
    """A (G, D, Gs) tuple built by NVIDIA's 2018 code (networks_stylegan.G_style / D_basic, or their components)."""
    def records():
        for net in nets:
            yield net
            subs = net.state.get("components") if isinstance(net, TFNetworkRecord) else None
            yield from subs.values() if isinstance(subs, dict) else ()  # one level: no growth through sharing

    return any("networks_stylegan." in f or "G_style" in f or "D_basic" in f for f in map(build_func, records()))


def components(path: Path, net: TFNetworkRecord) -> dict[str, TFNetworkRecord]:
    """A record's sub-networks by name, each checked to be a network record."""
    subs, name = net.state.get("components", {}), str(net.state.get("name"))[:60]
    if not isinstance(subs, dict):
        fail(path, f"network record '{name}' has components of type {type(subs).__name__}: not a TF network pickle")
    for key, sub in subs.items():
        if not isinstance(key, str) or not isinstance(sub, TFNetworkRecord):
            fail(path, f"component {key!r:.60} of '{name}' is not a named network record")
    return subs


def variables(path: Path, net: TFNetworkRecord, budget: Budget, versions: tuple[int, ...], family: str,
              prefix: str = "", depth: int = 0) -> dict[str, np.ndarray]:
    """Every variable of a network and its components, by TF name (`mapping/Dense0/weight`)."""
    budget.visit(depth)
    state = net.state
    name = prefix or str(state.get("name"))[:200]
    if not isinstance(state.get("variables"), (list, tuple)):
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
        # the arrays are the unpickler's (as_tensors charges the copies); names are charged as they are built
        out[budget.text(prefix + item[0])] = np.asarray(item[1])
    for key, sub in components(path, net).items():
        out.update(variables(path, sub, budget, versions, family, budget.text(f"{prefix}{key}/"), depth + 1))
    return out


def merged_kwargs(path: Path, net: TFNetworkRecord, budget: Budget, depth: int = 0) -> dict:
    """The network's static_kwargs merged with its components' (the components get most of them)."""
    budget.visit(depth)
    merged: dict[str, Any] = {}
    for sub in components(path, net).values():
        merged.update(merged_kwargs(path, sub, budget, depth + 1))
    kwargs = plain(net.state.get("static_kwargs") or {}, budget)
    if not isinstance(kwargs, dict):
        fail(path, f"a network record's static_kwargs is a {type(kwargs).__name__}: not a TF network pickle")
    merged.update(kwargs)
    return merged


def check_numbers(path: Path, name: str, kw: dict, whole: tuple[str, ...], real: tuple[str, ...] = (),
                  nullable: tuple[str, ...] = ()) -> None:
    """The arguments named in `whole` are whole numbers in [0, 65536], those in `real` finite numbers (each may be
    absent, and None where `nullable` names it); `resolution` is a power of two >= 4."""
    for key in whole:
        value = kw.get(key, 0)
        if value is None and key in nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 16:
            fail(path, f"{name} has {key}={value!r:.40}: expected a whole number")
    for key in real:
        value = kw.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(path, f"{name} has {key}={value!r:.40}: expected a number")
    res = kw.get("resolution", 4)
    if res < 4 or res & (res - 1):
        fail(path, f"{name} has resolution {res}: expected a power of two >= 4")


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
