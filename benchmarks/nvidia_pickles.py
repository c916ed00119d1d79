"""Pickles with the structure of NVIDIA's StyleGAN2 snapshots, written from our networks: the tests' import cases
and the GPU acceptance's FFHQ-shaped source network.

Each network is reduced to `torch_utils.persistence._reconstruct_persistent_obj(meta)` exactly as NVIDIA's
`persistence` decorator does; the stub modules exist only while dumping, so loading proves the importer needs none.
"""

from __future__ import annotations

import collections
import contextlib
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
from torch import nn

from stylegan.formats.tf_export import NetworkRecord as Network
from stylegan.formats.tf_export import as_numpy, to_tf_conv, write_tf_pickle
from stylegan.formats.tf_export import tf_networks as export_tf_networks


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


# ----------------------------------------------------------------------------------------------------------------
# TensorFlow pickles: a tuple (G, D, Gs) of dnnlib.tflib.network.Network records (static kwargs, components,
# variables by TF name as numpy arrays, the build source), written by the library's export
# (stylegan.formats.tf_export); the tests give the records a build source that must never run.

NEVER_RUN = "raise SystemExit('must not run')"


def _with_source(record: Network, module_src: str) -> Network:
    record.state["build_module_src"] = module_src
    for sub in record.state["components"].values():
        _with_source(sub, module_src)
    return record


def tf_networks(G: nn.Module, D: nn.Module, G_kwargs: dict, D_kwargs: dict, G_ema: nn.Module | None = None,
                module_src: str = NEVER_RUN) -> tuple:
    """Our StyleGAN2 networks as the (G, D, Gs) records of NVIDIA's TF StyleGAN2 pickles."""
    ckpt = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": (G_ema or G).state_dict(), "G_kwargs": G_kwargs,
            "D_kwargs": D_kwargs}
    return tuple(_with_source(net, module_src) for net in export_tf_networks(ckpt))


def tf_stylegan1_networks(variables: dict[str, np.ndarray], G_kwargs: dict, D_kwargs: dict,
                          module_src: str = NEVER_RUN, version: int = 3) -> tuple:
    """(G, D, Gs) records of a StyleGAN (2018) network as NVIDIA's 2018 code pickles them, from its variables by TF
    name as that code's Network.vars lists them ('Gs/lod', 'Gs/G_synthesis/4x4/Const/const', 'D/4x4/Dense0/weight':
    the keys benchmarks/stylegan1_official_side.py records). G and Gs get Gs's variables."""
    def under(prefix: str, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in variables.items() if k.startswith(prefix)
                and not k[len(prefix):].startswith(skip)}

    layers = 2 * int(np.log2(G_kwargs["resolution"])) - 2
    synthesis, mapping = under("Gs/G_synthesis/"), under("Gs/G_mapping/")
    own = under("Gs/", skip=("G_synthesis/", "G_mapping/"))
    src = "training.networks_stylegan."

    def generator(name: str) -> Network:
        comps = {"synthesis": Network("G_synthesis", src + "G_synthesis", G_kwargs, synthesis, module_src=module_src,
                                      version=version),
                 "mapping": Network("G_mapping", src + "G_mapping", dict(G_kwargs, dlatent_broadcast=layers), mapping,
                                    module_src=module_src, version=version)}
        return Network(name, src + "G_style", G_kwargs, own, comps, module_src=module_src, version=version)

    D = Network("D", src + "D_basic", D_kwargs, under("D/"), module_src=module_src, version=version)
    return generator("G"), D, generator("Gs")


def tf_stylegan1_variables(G: nn.Module, D: nn.Module) -> dict[str, np.ndarray]:
    """Our StyleGAN (2018) G and D as the variables of NVIDIA's 2018 code by TF name ('Gs/...', 'D/...', the form
    tf_stylegan1_networks takes): the inverse of stylegan.formats.tf_stylegan1."""
    g, d = ({k: as_numpy(v) for k, v in net.state_dict().items()} for net in (G, D))
    log2 = int(math.log2(G.img_resolution))
    out = {"Gs/lod": g["synthesis.lod"], "Gs/dlatent_avg": g["mapping.w_avg"], "Gs/G_synthesis/lod": g["synthesis.lod"]}
    for i in range(G.mapping.num_layers):
        out[f"Gs/G_mapping/Dense{i}/weight"] = g[f"mapping.fc{i}.weight"].T
        out[f"Gs/G_mapping/Dense{i}/bias"] = g[f"mapping.fc{i}.bias"]
    for k, r in enumerate(2 ** i for i in range(2, log2 + 1)):
        for j, theirs in enumerate(("Const", "Conv") if r == 4 else ("Conv0_up", "Conv1")):
            t, o = f"Gs/G_synthesis/{r}x{r}/{theirs}", f"synthesis.b{r}.layer{j}"
            if theirs == "Const":
                out[f"{t}/const"], out[f"{t}/bias"] = g[f"{o}.const"][None], g[f"{o}.bias"]
            else:
                out[f"{t}/weight"], out[f"{t}/bias"] = to_tf_conv(g[f"{o}.conv.weight"]), g[f"{o}.conv.bias"]
            out[f"{t}/Noise/weight"] = g[f"{o}.noise_strength"]
            out[f"{t}/StyleMod/weight"], out[f"{t}/StyleMod/bias"] = g[f"{o}.affine.weight"].T, g[f"{o}.affine.bias"]
            out[f"Gs/G_synthesis/noise{2 * k + j}"] = g[f"{o}.noise_const"][None, None]
        rgb = f"Gs/G_synthesis/ToRGB_lod{log2 - k - 2}"
        o = f"synthesis.b{r}.torgb"
        out[f"{rgb}/weight"], out[f"{rgb}/bias"] = to_tf_conv(g[f"{o}.weight"]), g[f"{o}.bias"]
    out["D/lod"] = d["lod"]
    for r in (2 ** i for i in range(log2, 1, -1)):
        rgb = f"D/FromRGB_lod{log2 - int(math.log2(r))}"
        out[f"{rgb}/weight"], out[f"{rgb}/bias"] = to_tf_conv(d[f"b{r}.fromrgb.weight"]), d[f"b{r}.fromrgb.bias"]
        for ours, theirs in (("conv0", "Conv0"), ("conv1", "Conv1_down")) if r > 4 else (("conv", "Conv"),):
            out[f"D/{r}x{r}/{theirs}/weight"] = to_tf_conv(d[f"b{r}.{ours}.weight"])
            out[f"D/{r}x{r}/{theirs}/bias"] = d[f"b{r}.{ours}.bias"]
    for ours, theirs in (("fc", "Dense0"), ("out", "Dense1")):
        out[f"D/4x4/{theirs}/weight"], out[f"D/4x4/{theirs}/bias"] = d[f"b4.{ours}.weight"].T, d[f"b4.{ours}.bias"]
    return out


def write_stylegan1_pickle(path: Path, G: nn.Module, D: nn.Module, G_kwargs: dict, D_kwargs: dict) -> Path:
    """Our StyleGAN (2018) networks as NVIDIA's 2018 code pickles them ((G, D, Gs), G and Gs alike, static kwargs
    in its names), e.g. the GPU acceptance's FFHQ-shaped source network."""
    mapping = G_kwargs.get("mapping_kwargs") or {}
    common = dict(num_channels=G_kwargs.get("img_channels", 3), resolution=G_kwargs["img_resolution"],
                  label_size=0, fmap_base=G_kwargs.get("fmap_base", 8192), fmap_max=G_kwargs.get("fmap_max", 512))
    g_kw = dict(common, latent_size=G_kwargs.get("z_dim", 512), dlatent_size=G_kwargs.get("w_dim", 512),
                mapping_layers=mapping.get("num_layers", 8),
                mapping_fmaps=mapping.get("layer_features") or G_kwargs.get("w_dim", 512))
    d_kw = dict(common, mbstd_group_size=D_kwargs.get("mbstd_group_size", 4))
    return write_tf_pickle(path, tf_stylegan1_networks(tf_stylegan1_variables(G, D), g_kw, d_kw))
