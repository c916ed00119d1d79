"""Our StyleGAN2 networks as an NVIDIA TensorFlow StyleGAN2 pickle, the inverse of stylegan.formats.tf_pickle.

The file is a tuple (G, D, Gs) of `dnnlib.tflib.network.Network` records that hold only arguments (`static_kwargs`)
and variables (TF names, numpy arrays); their build source is empty. NVIDIA's PyTorch loader
(`legacy.load_network_pkl` of stylegan2-ada-pytorch and stylegan3) turns such records into its own networks without
running anything from the file, so a network trained here goes into NVIDIA's tools (gen_images.py, projector.py,
the visualizer, `train.py --resume`) and the tools built on them (PTI, e4e, StyleGAN-NADA). NVIDIA's TensorFlow code
cannot rebuild these records (it would run the empty build source); nothing else needs it.

The pickle names only `dnnlib.tflib.network.Network` and numpy's own array classes, spelled as numpy 1 writes them
(numpy 2 still reads that spelling; numpy 1 cannot read numpy 2's), at protocol 3 as NVIDIA's files.
"""

from __future__ import annotations

import copyreg
import inspect
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylegan.errors import UserError
from stylegan.fileio import atomic_write
from stylegan.formats.tf_pickle import synthesis_layers
from stylegan.models.stylegan2 import Discriminator, Generator, MappingNetwork, channels_at

EMPTY_SOURCE = ""  # the build source the records carry: nothing to run


class NetworkRecord:
    """Pickles as NVIDIA's dnnlib.tflib.network.Network does: the class, then its state dict (BUILD)."""

    def __init__(self, name: str, func: str, static_kwargs: dict, variables: dict[str, np.ndarray],
                 components: dict[str, NetworkRecord] | None = None, module_src: str = EMPTY_SOURCE,
                 version: int = 4):
        self.state = dict(version=version, name=name, static_kwargs=static_kwargs, components=components or {},
                          build_module_src=module_src, build_func_name=func,
                          # each record its own arrays, as in NVIDIA's files (G and Gs share none)
                          variables=[(k, np.array(v, np.float32)) for k, v in variables.items()])

    def __reduce_ex__(self, protocol: int) -> tuple:
        return copyreg.__newobj__, (NetworkRecord,), self.state  # the class, NEWOBJ, then BUILD with the state


# What the pickle calls the objects it names (module, name): NVIDIA's network class; numpy's array classes as
# numpy 1 spells them. Everything else pickles under its own name.
_SPELLINGS = {
    NetworkRecord: ("dnnlib.tflib.network", "Network"),
    np.ndarray: ("numpy", "ndarray"),
    np.dtype: ("numpy", "dtype"),
    np.ndarray.__reduce__(np.zeros(1))[0]: ("numpy.core.multiarray", "_reconstruct"),
}


class _Pickler(pickle._Pickler):
    """pickle's Python pickler, which lets the globals be spelled as _SPELLINGS says."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        spelled = _SPELLINGS.get(obj)  # globals are classes and functions: hashable
        if spelled is None:
            return super().save_global(obj, name)
        module, name = spelled
        if self.proto >= 4:
            self.save(module)
            self.save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def write_tf_pickle(path: str | Path, networks: tuple, protocol: int = 3) -> Path:
    """Pickle (G, D, Gs) network records as NVIDIA's TF files are, atomically."""
    with atomic_write(path) as f:
        _Pickler(f, protocol=protocol).dump(tuple(networks))
    return Path(path)


def _with_defaults(fn: Any, kwargs: dict | None) -> dict:
    """`kwargs` completed with the defaults of `fn`'s signature: the arguments a network was really built with."""
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **(kwargs or {})}


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def to_tf_conv(w: np.ndarray, flip: bool = False) -> np.ndarray:
    w = w.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> TF's [kh, kw, in, out]
    return w[::-1, ::-1] if flip else w


def generator_variables(state: dict[str, torch.Tensor], resolution: int
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A G state dict as the TF G_main's own variables, its mapping's and its synthesis'."""
    sd = {k: as_numpy(v) for k, v in state.items()}
    mapping = {}
    for k, v in sd.items():
        if m := re.fullmatch(r"mapping\.(fc\d+|embed)\.(weight|bias)", k):
            layer = "LabelEmbed" if m.group(1) == "embed" else f"Dense{m.group(1)[2:]}"
            mapping[f"{layer}/{m.group(2)}"] = v.T if m.group(2) == "weight" else v
    synthesis = {}
    for r in (2 ** i for i in range(2, int(math.log2(resolution)) + 1)):
        b, t = f"synthesis.b{r}", f"{r}x{r}"
        if r == 4:
            synthesis[f"{t}/Const/const"] = sd[f"{b}.const"][None]
        for ours, theirs, noise in synthesis_layers(r):
            synthesis[f"{t}/{theirs}/weight"] = to_tf_conv(sd[f"{b}.{ours}.weight"], flip=theirs == "Conv0_up")
            synthesis[f"{t}/{theirs}/bias"] = sd[f"{b}.{ours}.bias"]
            synthesis[f"{t}/{theirs}/mod_weight"] = sd[f"{b}.{ours}.affine.weight"].T
            synthesis[f"{t}/{theirs}/mod_bias"] = sd[f"{b}.{ours}.affine.bias"] - 1  # TF adds the 1 in the graph
            synthesis[f"{t}/{theirs}/noise_strength"] = sd[f"{b}.{ours}.noise_strength"]
            synthesis[f"noise{noise}"] = sd[f"{b}.{ours}.noise_const"][None, None]
        if f"{b}.torgb.weight" in sd:
            synthesis[f"{t}/ToRGB/weight"] = to_tf_conv(sd[f"{b}.torgb.weight"])
            synthesis[f"{t}/ToRGB/bias"] = sd[f"{b}.torgb.bias"]
            synthesis[f"{t}/ToRGB/mod_weight"] = sd[f"{b}.torgb.affine.weight"].T
            synthesis[f"{t}/ToRGB/mod_bias"] = sd[f"{b}.torgb.affine.bias"] - 1
        if f"{b}.skip.weight" in sd:
            synthesis[f"{t}/Skip/weight"] = to_tf_conv(sd[f"{b}.skip.weight"], flip=True)
    return {"dlatent_avg": sd["mapping.w_avg"]}, mapping, synthesis


def discriminator_variables(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A D state dict as the TF D_stylegan2's variables (the FIR filters are NVIDIA's [1,3,3,1], not variables)."""
    names = {"fromrgb": "FromRGB", "conv0": "Conv0", "conv1": "Conv1_down", "skip": "Skip"}
    epilogue = {"b4.conv": "4x4/Conv", "b4.fc": "4x4/Dense0", "b4.out": "Output"}
    out = {}
    for k, v in ((k, as_numpy(v)) for k, v in state.items() if not k.endswith("resample_filter")):
        layer, kind = k.rsplit(".", 1)
        if m := re.fullmatch(r"b(\d+)\.(fromrgb|conv0|conv1|skip)", layer):
            tf = f"{m.group(1)}x{m.group(1)}/{names[m.group(2)]}"
        elif m := re.fullmatch(r"mapping\.(fc\d+|embed)", layer):
            tf = "LabelEmbed" if m.group(1) == "embed" else f"Mapping{m.group(1)[2:]}"
        else:
            tf = epilogue[layer]
        out[f"{tf}/{kind}"] = (to_tf_conv(v) if v.ndim == 4 else v.T) if kind == "weight" else v
    return out


def _fmap_base(channel_base: int, what: str) -> int:
    if channel_base % 2:
        raise UserError(f"{what}: channel_base {channel_base} is odd: NVIDIA's TF arguments hold it as fmap_base = "
                        "channel_base / 2")
    return channel_base // 2


def generator_kwargs(G_kwargs: dict, what: str = "G") -> dict:
    """Our Generator's arguments (defaults filled in) as the TF G_main's static_kwargs NVIDIA's loader reads."""
    kw = _with_defaults(Generator, G_kwargs)
    mapping = _with_defaults(MappingNetwork, kw["mapping_kwargs"])
    out = dict(latent_size=kw["z_dim"], label_size=kw["c_dim"], dlatent_size=kw["w_dim"],
               resolution=kw["img_resolution"], num_channels=kw["img_channels"],
               fmap_base=_fmap_base(kw["channel_base"], what), fmap_max=kw["channel_max"],
               num_fp16_res=kw["num_fp16_res"], conv_clamp=kw["conv_clamp"], architecture=kw["architecture"],
               mapping_layers=mapping["num_layers"], mapping_lrmul=mapping["lr_multiplier"],
               w_avg_beta=mapping["w_avg_beta"])
    if mapping["layer_features"] is not None:
        out["mapping_fmaps"] = mapping["layer_features"]
    if kw["c_dim"] and mapping["embed_features"] is not None:
        out["label_fmaps"] = mapping["embed_features"]
    return out


def discriminator_kwargs(D_kwargs: dict, what: str = "D") -> dict:
    """Our Discriminator's arguments (defaults filled in) as the TF D's static_kwargs NVIDIA's loader reads."""
    kw = _with_defaults(Discriminator, D_kwargs)
    epilogue = {"mbstd_group_size": 4, "mbstd_num_channels": 1, **(kw["epilogue_kwargs"] or {})}
    out = dict(label_size=kw["c_dim"], resolution=kw["img_resolution"], num_channels=kw["img_channels"],
               fmap_base=_fmap_base(kw["channel_base"], what), fmap_max=kw["channel_max"],
               num_fp16_res=kw["num_fp16_res"], conv_clamp=kw["conv_clamp"], architecture=kw["architecture"],
               mbstd_group_size=epilogue["mbstd_group_size"], mbstd_num_features=epilogue["mbstd_num_channels"])
    if kw["c_dim"]:
        mapping = _with_defaults(MappingNetwork, kw["mapping_kwargs"])
        cmap = channels_at(4, kw["channel_base"], kw["channel_max"]) if kw["cmap_dim"] is None else kw["cmap_dim"]
        # NVIDIA's TF D has one width for its label mapping's embedding, layers and output: mapping_fmaps
        if {mapping["embed_features"], mapping["layer_features"]} - {None, cmap}:
            raise UserError(f"{what}: its label mapping's widths differ from cmap_dim {cmap}: NVIDIA's "
                            "discriminators have one width (mapping_fmaps)")
        out.update(mapping_layers=mapping["num_layers"], mapping_lrmul=mapping["lr_multiplier"], mapping_fmaps=cmap)
    return out


def tf_networks(ckpt: dict, what: str = "<checkpoint>") -> tuple[NetworkRecord, NetworkRecord, NetworkRecord]:
    """A StyleGAN2 checkpoint (G, D, G_ema and their arguments) as NVIDIA's TF records (G, D, Gs)."""
    missing = [k for k in ("G", "D", "G_ema", "G_kwargs", "D_kwargs") if k not in ckpt]
    if missing:
        raise UserError(f"{what}: has no {', '.join(missing)}: NVIDIA's pickles hold G, D and G_ema (export from a "
                        ".pt snapshot or an NVIDIA .pkl, not from a generator-only .safetensors)")
    g_kw = generator_kwargs(ckpt["G_kwargs"], f"{what}: G_kwargs")
    d_kw = discriminator_kwargs(ckpt["D_kwargs"], f"{what}: D_kwargs")

    def generator(name: str, state: dict[str, torch.Tensor]) -> NetworkRecord:
        own, mapping, synthesis = generator_variables(state, g_kw["resolution"])
        parts = {"mapping": NetworkRecord("G_mapping", "training.networks_stylegan2.G_mapping", g_kw, mapping),
                 "synthesis": NetworkRecord("G_synthesis", "training.networks_stylegan2.G_synthesis_stylegan2",
                                            g_kw, synthesis)}
        return NetworkRecord(name, "training.networks_stylegan2.G_main", g_kw, own, parts)

    D = NetworkRecord("D", "training.networks_stylegan2.D_stylegan2", d_kw, discriminator_variables(ckpt["D"]))
    return generator("G", ckpt["G"]), D, generator("Gs", ckpt["G_ema"])
