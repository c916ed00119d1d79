"""NVIDIA's TensorFlow StyleGAN2 networks (config-e/f releases such as stylegan2-ffhq-config-f.pkl, StyleGAN2-ADA
TF) as our state dicts and constructor arguments; no TensorFlow needed.

Such a file is a tuple (G, D, Gs) of network records (stylegan.formats.safe_pickle.TFNetworkRecord) whose states hold
`static_kwargs`, sub-networks (`components`: mapping, synthesis) and `variables` as (TF name, numpy array). The
mapping to our (official PyTorch) parameter names, published with NVIDIA's own converter, is:
  dense weights [in, out]          -> transposed;  conv weights [kh, kw, in, out] -> [out, in, kh, kw]
  up-sampling convs (Conv0_up, Skip of G) are stored flipped in space: flipped back
  modulation biases (mod_bias)     -> + 1 (TF adds it in the graph, ours is part of the parameter)
  synthesis/noise<k> [1, 1, r, r]  -> the noise_const of layer k;  dlatent_avg -> mapping.w_avg
  fmap_base                        -> channel_base = 2 * fmap_base;  resolution, latent/dlatent sizes as named
Anything else is refused with the name of what does not fit: other filters or channel rules, variables no StyleGAN2
network has. StyleGAN (2018) networks are read by stylegan.formats.tf_stylegan1.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

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
from stylegan.models.ops import setup_filter
from stylegan.models.stylegan2 import FIR_TAPS, Discriminator, Generator

# static_kwargs a StyleGAN2 network may carry that change nothing in the function it computes (or that we check)
_G_IGNORED = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val", "style_mixing_prob",
              "is_training", "is_validation", "is_template_graph", "return_dlatents", "randomize_noise",
              "fused_modconv", "structure", "conditioning", "dtype", "num_fp16_res", "conv_clamp", "components",
              "func_name", "mapping_func", "synthesis_func", "use_noise", "fmap_decay", "fmap_min", "nonlinearity",
              "mapping_nonlinearity", "resample_kernel", "normalize_latents", "latent_size", "label_size",
              "dlatent_size", "resolution", "num_channels", "fmap_base", "fmap_max", "architecture", "mapping_layers",
              "mapping_fmaps", "mapping_lrmul", "label_fmaps", "dlatent_avg_beta", "w_avg_beta"}
_D_IGNORED = {"structure", "conditioning", "dtype", "num_fp16_res", "conv_clamp", "is_training", "is_validation",
              "is_template_graph", "func_name", "fmap_decay", "fmap_min", "nonlinearity", "resample_kernel",
              "label_size", "resolution", "num_channels", "fmap_base", "fmap_max", "architecture", "mbstd_group_size",
              "mbstd_num_features", "mapping_layers", "mapping_fmaps", "mapping_lrmul", "freeze_layers"}


_WHOLE = ("resolution", "label_size", "latent_size", "dlatent_size", "num_channels", "fmap_base", "fmap_max",
          "mapping_layers", "mapping_fmaps", "label_fmaps", "mbstd_group_size", "mbstd_num_features")
_REAL = ("mapping_lrmul", "dlatent_avg_beta", "w_avg_beta")


def _check_common(path: Path, name: str, kw: dict, ignored: set[str]) -> None:
    check_numbers(path, name, kw, _WHOLE, _REAL, nullable=("mapping_fmaps", "label_fmaps"))
    unknown = sorted(set(kw) - ignored)
    if unknown:
        fail(path, f"{name} has arguments no StyleGAN2 network has ({', '.join(unknown)}): a modified architecture "
             "is not supported")
    for key, want in (("fmap_decay", 1.0), ("fmap_min", 1), ("nonlinearity", "lrelu"), ("resample_kernel",
                      [1, 3, 3, 1]), ("mapping_nonlinearity", "lrelu"), ("normalize_latents", True)):
        if key in kw and kw[key] != want:
            fail(path, f"{name} uses {key}={kw[key]!r}; only {want!r} is supported")


def _precision(path: Path, name: str, kw: dict) -> dict:
    """num_fp16_res and conv_clamp as the pickle sets them (StyleGAN2-ADA TF networks carry both; config-e/f: none)."""
    fp16, clamp = kw.get("num_fp16_res", 0) or 0, kw.get("conv_clamp")
    if isinstance(fp16, bool) or not isinstance(fp16, int) or fp16 < 0 or \
            not (clamp is None or (isinstance(clamp, (int, float)) and not isinstance(clamp, bool) and clamp > 0)):
        fail(path, f"{name} has num_fp16_res={fp16!r} / conv_clamp={clamp!r}: expected a count >= 0 and a positive "
             "number or None")
    return dict(num_fp16_res=fp16, conv_clamp=None if clamp is None else float(clamp))


def _generator(path: Path, net: TFNetworkRecord, budget: Budget) -> tuple[dict, dict]:
    name = f"the TF generator '{net.state.get('name')}'"
    kw = merged_kwargs(path, net, budget)
    _check_common(path, name, kw, _G_IGNORED)
    tf = variables(path, net, budget, versions=(4,), family="StyleGAN2")
    if any(k.startswith("mapping/LabelConcat") for k in tf):
        fail(path, f"{name} is a conditional StyleGAN2 (2019) network (labels concatenated before normalisation): "
             "not supported; StyleGAN2-ADA conditional networks (LabelEmbed) are")
    res, c_dim = int(kw.get("resolution", 1024)), int(kw.get("label_size", 0))
    arch = kw.get("architecture", "skip")
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in tf):
        arch = "orig"
        for k in [k for k in tf if k.startswith("synthesis/ToRGB_lod")]:
            lod, rest = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", k).groups()
            if int(lod) == 0:
                tf[f"synthesis/{res}x{res}/ToRGB/{rest}"] = tf.pop(k)
            else:
                fail(path, f"{name} variable '{k}': intermediate RGB outputs are not part of a StyleGAN2 'orig' net")
    layers = int(kw.get("mapping_layers", 8))
    G_kwargs = dict(z_dim=int(kw.get("latent_size", 512)), c_dim=c_dim, w_dim=int(kw.get("dlatent_size", 512)),
                    img_resolution=res, img_channels=int(kw.get("num_channels", 3)),
                    mapping_kwargs=dict(num_layers=layers, w_avg_beta=float(kw.get("dlatent_avg_beta",
                                                                                  kw.get("w_avg_beta", 0.995)))),
                    channel_base=int(kw.get("fmap_base", 16384)) * 2, channel_max=int(kw.get("fmap_max", 512)),
                    **_precision(path, name, kw), architecture=arch)
    if kw.get("mapping_fmaps") not in (None, G_kwargs["w_dim"]) or kw.get("mapping_lrmul", 0.01) != 0.01:
        fail(path, f"{name} uses mapping_fmaps={kw.get('mapping_fmaps')} / mapping_lrmul={kw.get('mapping_lrmul')}: "
             "only the defaults (dlatent_size, 0.01) are supported")
    if c_dim:
        G_kwargs["mapping_kwargs"]["embed_features"] = kw.get("label_fmaps") or G_kwargs["w_dim"]
    sd = {"mapping.w_avg": take(path, name, tf, "dlatent_avg")}
    if c_dim:
        sd["mapping.embed.weight"] = take(path, name, tf, "mapping/LabelEmbed/weight").T
        sd["mapping.embed.bias"] = take(path, name, tf, "mapping/LabelEmbed/bias")
    for i in range(layers):
        sd[f"mapping.fc{i}.weight"] = take(path, name, tf, f"mapping/Dense{i}/weight").T
        sd[f"mapping.fc{i}.bias"] = take(path, name, tf, f"mapping/Dense{i}/bias")
    for r in (2 ** i for i in range(2, int(math.log2(res)) + 1)):
        blk, t = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        if r == 4:
            sd[f"{blk}.const"] = take(path, name, tf, f"{t}/Const/const")[0]
        for ours, theirs, noise in synthesis_layers(r):
            sd[f"{blk}.{ours}.weight"] = tf_conv(take(path, name, tf, f"{t}/{theirs}/weight"), theirs == "Conv0_up")
            sd[f"{blk}.{ours}.bias"] = take(path, name, tf, f"{t}/{theirs}/bias")
            sd[f"{blk}.{ours}.affine.weight"] = take(path, name, tf, f"{t}/{theirs}/mod_weight").T
            sd[f"{blk}.{ours}.affine.bias"] = take(path, name, tf, f"{t}/{theirs}/mod_bias") + 1
            sd[f"{blk}.{ours}.noise_strength"] = take(path, name, tf, f"{t}/{theirs}/noise_strength")
            sd[f"{blk}.{ours}.noise_const"] = take(path, name, tf, f"synthesis/noise{noise}")[0, 0]
        if arch == "skip" or r == res:
            sd[f"{blk}.torgb.weight"] = tf_conv(take(path, name, tf, f"{t}/ToRGB/weight"))
            sd[f"{blk}.torgb.bias"] = take(path, name, tf, f"{t}/ToRGB/bias")
            sd[f"{blk}.torgb.affine.weight"] = take(path, name, tf, f"{t}/ToRGB/mod_weight").T
            sd[f"{blk}.torgb.affine.bias"] = take(path, name, tf, f"{t}/ToRGB/mod_bias") + 1
        if arch == "resnet" and r > 4:
            sd[f"{blk}.skip.weight"] = tf_conv(take(path, name, tf, f"{t}/Skip/weight"), flip=True)
    tf.pop("lod", None)  # progressive-growing leftover some TF generators carry; unused by StyleGAN2
    if tf:
        fail(path, f"{name} has variables no StyleGAN2 generator has ({', '.join(sorted(tf)[:4])}): a modified "
             "architecture is not supported")
    return G_kwargs, as_tensors(path, name, sd, Generator, G_kwargs, budget, _fir_filters)


def synthesis_layers(r: int) -> list[tuple[str, str, int]]:
    """The modulated convolutions of synthesis block `r`: (our layer, its TF name, the index of its stored noise)."""
    if r == 4:
        return [("conv1", "Conv", 0)]
    k = 2 * int(math.log2(r))
    return [("conv0", "Conv0_up", k - 5), ("conv1", "Conv1", k - 4)]


def _discriminator(path: Path, net: TFNetworkRecord, budget: Budget) -> tuple[dict, dict]:
    name = f"the TF discriminator '{net.state.get('name')}'"
    kw = merged_kwargs(path, net, budget)
    _check_common(path, name, kw, _D_IGNORED)
    tf = variables(path, net, budget, versions=(4,), family="StyleGAN2")
    if kw.get("architecture", "resnet") != "resnet" or any(k.startswith("FromRGB_lod") for k in tf):
        fail(path, f"{name} uses architecture {kw.get('architecture', 'orig')!r}: only 'resnet' discriminators are "
             "supported (import G alone by exporting its Gs, or fine-tune with a new D)")
    res, c_dim = int(kw.get("resolution", 1024)), int(kw.get("label_size", 0))
    D_kwargs = dict(c_dim=c_dim, img_resolution=res, img_channels=int(kw.get("num_channels", 3)),
                    channel_base=int(kw.get("fmap_base", 16384)) * 2, channel_max=int(kw.get("fmap_max", 512)),
                    **_precision(path, name, kw), epilogue_kwargs=dict(
                        mbstd_group_size=int(kw.get("mbstd_group_size", 4)),
                        mbstd_num_channels=int(kw.get("mbstd_num_features", 1))))
    sd = {}
    if c_dim:
        layers = int(kw.get("mapping_layers", 0))
        D_kwargs["mapping_kwargs"] = dict(num_layers=layers, lr_multiplier=float(kw.get("mapping_lrmul", 0.1)))
        D_kwargs["cmap_dim"] = kw.get("mapping_fmaps")
        sd["mapping.embed.weight"] = take(path, name, tf, "LabelEmbed/weight").T
        sd["mapping.embed.bias"] = take(path, name, tf, "LabelEmbed/bias")
        for i in range(layers):
            sd[f"mapping.fc{i}.weight"] = take(path, name, tf, f"Mapping{i}/weight").T
            sd[f"mapping.fc{i}.bias"] = take(path, name, tf, f"Mapping{i}/bias")
    for r in (2 ** i for i in range(int(math.log2(res)), 2, -1)):
        t = f"{r}x{r}"
        if r == res:
            sd[f"b{r}.fromrgb.weight"] = tf_conv(take(path, name, tf, f"{t}/FromRGB/weight"))
            sd[f"b{r}.fromrgb.bias"] = take(path, name, tf, f"{t}/FromRGB/bias")
        for i, theirs in enumerate(("Conv0", "Conv1_down")):
            sd[f"b{r}.conv{i}.weight"] = tf_conv(take(path, name, tf, f"{t}/{theirs}/weight"))
            sd[f"b{r}.conv{i}.bias"] = take(path, name, tf, f"{t}/{theirs}/bias")
        sd[f"b{r}.skip.weight"] = tf_conv(take(path, name, tf, f"{t}/Skip/weight"))
    sd["b4.conv.weight"] = tf_conv(take(path, name, tf, "4x4/Conv/weight"))
    sd["b4.conv.bias"] = take(path, name, tf, "4x4/Conv/bias")
    sd["b4.fc.weight"] = take(path, name, tf, "4x4/Dense0/weight").T
    sd["b4.fc.bias"] = take(path, name, tf, "4x4/Dense0/bias")
    sd["b4.out.weight"] = take(path, name, tf, "Output/weight").T
    sd["b4.out.bias"] = take(path, name, tf, "Output/bias")
    if tf:
        fail(path, f"{name} has variables no StyleGAN2 discriminator has ({', '.join(sorted(tf)[:4])}): a modified "
             "architecture is not supported")
    return D_kwargs, as_tensors(path, name, sd, Discriminator, D_kwargs, budget, _fir_filters)


def _fir_filters(key: str) -> torch.Tensor | None:
    """The FIR filter buffers: ours, the [1,3,3,1] the TF network used (checked above)."""
    return setup_filter(FIR_TAPS) if key.endswith("resample_filter") else None


def read_tf_networks(path: Path, nets: tuple, budget: Budget) -> dict:
    """(G, D, Gs) records -> our checkpoint layout. The resample filter buffers are ours ([1,3,3,1] is checked)."""
    return read_networks(path, nets, budget, _generator, _discriminator)
