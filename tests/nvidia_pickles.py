"""Write pickles with the structure of NVIDIA's StyleGAN2 snapshots, from our networks, for import tests.

Each network is reduced to `torch_utils.persistence._reconstruct_persistent_obj(meta)` exactly as NVIDIA's
`persistence` decorator does; the stub modules exist only while dumping, so loading proves the importer needs none.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
from torch import nn


def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called: the importer must not run it
    raise AssertionError("the importer executed a pickled persistent object")


class EasyDict(dict):
    pass


@contextlib.contextmanager
def stub_nvidia_modules():
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    EasyDict.__module__ = "dnnlib.util"
    mods = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                                      "dnnlib.util")}
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = EasyDict
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name in mods:
            del sys.modules[name]


class Persistent:
    def __init__(self, class_name: str, state: dict, module_src: str):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


def _easy(value):
    return EasyDict({k: _easy(v) for k, v in value.items()}) if isinstance(value, dict) else value


def as_persistent(module: nn.Module, module_src: str, init_kwargs: dict | None = None) -> Persistent:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict((n, as_persistent(m, module_src)) for n, m in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": _easy(init_kwargs or {}),
    }
    for attr in ("weight_gain", "bias_gain"):  # official modules keep numpy scalars in their __dict__
        if hasattr(module, attr):
            state[attr] = np.float64(getattr(module, attr))
    return Persistent(type(module).__name__, state, module_src)


def ada_generator_kwargs(G_kwargs: dict) -> dict:
    """stylegan2-ada-pytorch nests the synthesis arguments; stylegan3 passes them flat. Use the nested form."""
    synthesis_keys = ("channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture")
    kw = {k: v for k, v in G_kwargs.items() if k not in synthesis_keys}
    kw["synthesis_kwargs"] = {k: G_kwargs[k] for k in synthesis_keys if k in G_kwargs}
    kw["synthesis_kwargs"]["fp16_channels_last"] = False
    return kw


def write_nvidia_pickle(path: Path, G: nn.Module, D: nn.Module, G_kwargs: dict, D_kwargs: dict,
                        augment_p: float | None = None, module_src: str = "raise SystemExit('must not run')",
                        G_ema: nn.Module | None = None) -> Path:
    import torch

    with stub_nvidia_modules():
        data = {
            "G": as_persistent(G, module_src, ada_generator_kwargs(G_kwargs)),
            "D": as_persistent(D, module_src, {**D_kwargs, "block_kwargs": {"freeze_layers": 0}}),
            "G_ema": as_persistent(G_ema or G, module_src, ada_generator_kwargs(G_kwargs)),
            "training_set_kwargs": _easy({"path": "ffhq.zip", "resolution": G_kwargs["img_resolution"]}),
        }
        if augment_p is not None:
            pipe = nn.Module()
            pipe.register_buffer("p", torch.tensor(augment_p))
            data["augment_pipe"] = as_persistent(pipe, module_src, {"xflip": 1})
        with open(path, "wb") as f:
            pickle.dump(data, f)
    return path
