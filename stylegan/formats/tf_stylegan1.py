"""NVIDIA's TensorFlow StyleGAN (2018) networks (karras2019stylegan-ffhq-1024x1024.pkl and the like) as our state
dicts and constructor arguments (stylegan.models.stylegan1); no TensorFlow needed, nothing in the file run.

Such a file is a tuple (G, D, Gs) of version 2 or 3 network records built by `training.networks_stylegan`
(G_style with G_mapping and G_synthesis components, D_basic). Names, with R the network's resolution:
  mapping/Dense<i> [in, out]                  -> mapping.fc<i> (transposed)
  dlatent_avg; lod (G's own)                  -> mapping.w_avg; synthesis.lod
  synthesis/4x4/Const/const [1, C, 4, 4]      -> synthesis.b4.layer0.const
  synthesis/<r>x<r>/{Const|Conv0_up, Conv|Conv1} -> synthesis.b<r>.layer0, layer1: weight [kh, kw, in, out] ->
                                                 [out, in, kh, kw], bias, Noise/weight -> noise_strength,
                                                 StyleMod -> affine
  synthesis/noise<k> [1, 1, r, r]             -> the noise_const of layer k
  synthesis/ToRGB_lod<k>                      -> synthesis.b<R / 2^k>.torgb: NVIDIA names RGB layers by how many
                                                 halvings they sit below the network's resolution, ours by resolution
  D: FromRGB_lod<k>; <r>x<r>/Conv0, Conv1_down; 4x4/Conv, Dense0, Dense1 -> b<R / 2^k>.fromrgb; b<r>.conv0, conv1;
                                                 b4.conv, fc, out
Arguments that change the function (fmap_decay, nonlinearity, blur filter, fused_scale, pixel norm...) must have
NVIDIA's defaults, which every released network uses; anything else is refused by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stylegan.formats.safe_pickle import Budget, TFNetworkRecord
from stylegan.formats.tf_records import (
    as_tensors,
    check_numbers,
    fail,
    merged_kwargs,
    read_networks,
    take,
    tf_conv,
    variables,
)
from stylegan.models.stylegan1 import Discriminator, Generator

FAMILY = "stylegan1"  # the checkpoint key `family` of such networks (absent: StyleGAN2)
VERSIONS = (2, 3)

# Arguments that must have these values (NVIDIA's defaults); those not listed here or in _FREE are refused.
_FIXED = {"fmap_decay": 1.0, "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu", "use_wscale": True,
          "normalize_latents": True, "use_styles": True, "const_input_layer": True, "use_noise": True,
          "use_pixel_norm": False, "use_instance_norm": True, "dtype": "float32", "fused_scale": "auto",
          "blur_filter": [1, 2, 1], "label_size": 0}
_FREE = {"num_channels", "resolution", "fmap_base", "fmap_max", "latent_size", "dlatent_size", "mapping_layers",
         "mapping_fmaps", "mapping_lrmul", "truncation_psi", "truncation_cutoff", "truncation_psi_val",
         "truncation_cutoff_val", "dlatent_avg_beta", "style_mixing_prob", "randomize_noise", "structure",
         "is_training", "is_validation", "is_template_graph", "force_clean_graph", "dlatent_broadcast", "components",
         "func_name", "mbstd_group_size", "mbstd_num_features"}


def _check(path: Path, name: str, kw: dict) -> None:
    unknown = sorted(set(kw) - _FREE - set(_FIXED))
    if unknown:
        fail(path, f"{name} has arguments no StyleGAN (2018) network has ({', '.join(unknown)}): a modified "
                   "architecture is not supported")
    for key, want in _FIXED.items():
        if key in kw and kw[key] != want:
            fail(path, f"{name} uses {key}={kw[key]!r:.60}; only NVIDIA's {want!r} is supported")
    check_numbers(path, name, kw, ("resolution", "fmap_base", "fmap_max", "latent_size", "dlatent_size",
                                   "mapping_layers", "mapping_fmaps", "num_channels", "mbstd_group_size",
                                   "mbstd_num_features", "truncation_cutoff"), ("mapping_lrmul", "dlatent_avg_beta"),
                  nullable=("truncation_cutoff", "dlatent_avg_beta"))


def _layer(sd: dict, take_: Callable[[str], np.ndarray], theirs: str, ours: str, noise: np.ndarray) -> None:
    if theirs.endswith("Const"):
        sd[f"{ours}.const"] = take_(f"{theirs}/const")[0]
        sd[f"{ours}.bias"] = take_(f"{theirs}/bias")
    else:
        sd[f"{ours}.conv.weight"] = tf_conv(take_(f"{theirs}/weight"))
        sd[f"{ours}.conv.bias"] = take_(f"{theirs}/bias")
    sd[f"{ours}.noise_strength"] = take_(f"{theirs}/Noise/weight")
    sd[f"{ours}.noise_const"] = noise[0, 0]
    sd[f"{ours}.affine.weight"] = take_(f"{theirs}/StyleMod/weight").T
    sd[f"{ours}.affine.bias"] = take_(f"{theirs}/StyleMod/bias")


def _read(path: Path, net: TFNetworkRecord, budget: Budget, name: str, default_res: int
          ) -> tuple[dict, Callable[[str], np.ndarray], dict[str, np.ndarray], int]:
    """The record's checked arguments, a function that takes its variables one by one (naming a missing one), the
    variables left, and its resolution."""
    kw = merged_kwargs(path, net, budget)
    _check(path, name, kw)
    tf = variables(path, net, budget, VERSIONS, "StyleGAN (2018)")
    return kw, functools.partial(take, path, name, tf), tf, kw.get("resolution", default_res)


def _generator(path: Path, net: TFNetworkRecord, budget: Budget) -> tuple[dict, dict]:
    name = f"the TF generator '{net.state.get('name')}'"
    kw, take_, tf, res = _read(path, net, budget, name, 1024)
    cutoff = kw.get("truncation_cutoff", 8)
    G_kwargs = dict(z_dim=kw.get("latent_size", 512), c_dim=0, w_dim=kw.get("dlatent_size", 512),
                    img_resolution=res, img_channels=kw.get("num_channels", 3), fmap_base=kw.get("fmap_base", 8192),
                    fmap_max=kw.get("fmap_max", 512),
                    mapping_kwargs=dict(num_layers=kw.get("mapping_layers", 8),
                                        layer_features=kw.get("mapping_fmaps", 512),
                                        lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
                                        w_avg_beta=float(kw.get("dlatent_avg_beta") or 0.995),
                                        truncation_cutoff=0 if cutoff is None else int(cutoff)))  # None: NVIDIA's off

    sd = {"mapping.w_avg": take_("dlatent_avg"), "synthesis.lod": take_("lod")}
    tf.pop("synthesis/lod", None)  # G_style sets it from its own lod at every call
    for i in range(G_kwargs["mapping_kwargs"]["num_layers"]):
        sd[f"mapping.fc{i}.weight"] = take_(f"mapping/Dense{i}/weight").T
        sd[f"mapping.fc{i}.bias"] = take_(f"mapping/Dense{i}/bias")
    log2 = int(math.log2(res))
    for k, r in enumerate(2 ** i for i in range(2, log2 + 1)):
        t, blk = f"synthesis/{r}x{r}", f"synthesis.b{r}"
        first, second = ("Const", "Conv") if r == 4 else ("Conv0_up", "Conv1")
        _layer(sd, take_, f"{t}/{first}", f"{blk}.layer0", take_(f"synthesis/noise{2 * k}"))
        _layer(sd, take_, f"{t}/{second}", f"{blk}.layer1", take_(f"synthesis/noise{2 * k + 1}"))
        sd[f"{blk}.torgb.weight"] = tf_conv(take_(f"synthesis/ToRGB_lod{log2 - k - 2}/weight"))
        sd[f"{blk}.torgb.bias"] = take_(f"synthesis/ToRGB_lod{log2 - k - 2}/bias")
    if tf:
        fail(path, f"{name} has variables no StyleGAN (2018) generator of its arguments has "
                   f"({', '.join(sorted(tf)[:4])}): a modified architecture is not supported")
    return G_kwargs, as_tensors(path, name, sd, Generator, G_kwargs, budget)


def _discriminator(path: Path, net: TFNetworkRecord, budget: Budget) -> tuple[dict, dict]:
    name = f"the TF discriminator '{net.state.get('name')}'"
    kw, take_, tf, res = _read(path, net, budget, name, 32)
    D_kwargs = dict(c_dim=0, img_resolution=res, img_channels=kw.get("num_channels", 1),
                    fmap_base=kw.get("fmap_base", 8192), fmap_max=kw.get("fmap_max", 512),
                    mbstd_group_size=kw.get("mbstd_group_size", 4), mbstd_num_features=kw.get("mbstd_num_features", 1))

    sd = {"lod": take_("lod")}
    log2 = int(math.log2(res))
    for r in (2 ** i for i in range(log2, 1, -1)):
        sd[f"b{r}.fromrgb.weight"] = tf_conv(take_(f"FromRGB_lod{log2 - int(math.log2(r))}/weight"))
        sd[f"b{r}.fromrgb.bias"] = take_(f"FromRGB_lod{log2 - int(math.log2(r))}/bias")
        convs = (("conv0", "Conv0"), ("conv1", "Conv1_down")) if r > 4 else (("conv", "Conv"),)
        for ours, theirs in convs:
            sd[f"b{r}.{ours}.weight"] = tf_conv(take_(f"{r}x{r}/{theirs}/weight"))
            sd[f"b{r}.{ours}.bias"] = take_(f"{r}x{r}/{theirs}/bias")
    for ours, theirs in (("fc", "Dense0"), ("out", "Dense1")):
        sd[f"b4.{ours}.weight"] = take_(f"4x4/{theirs}/weight").T
        sd[f"b4.{ours}.bias"] = take_(f"4x4/{theirs}/bias")
    if tf:
        fail(path, f"{name} has variables no StyleGAN (2018) discriminator of its arguments has "
                   f"({', '.join(sorted(tf)[:4])}): a modified architecture is not supported")
    return D_kwargs, as_tensors(path, name, sd, Discriminator, D_kwargs, budget)


def read_stylegan1_networks(path: Path, nets: tuple, budget: Budget) -> dict:
    """(G, D, Gs) records of NVIDIA's 2018 code -> our checkpoint layout, `family` 'stylegan1'."""
    return {**read_networks(path, nets, budget, _generator, _discriminator), "family": FAMILY}
