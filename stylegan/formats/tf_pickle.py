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
Anything else is refused with the name of what does not fit: StyleGAN (version 1) networks, other filters or
channel rules, variables no StyleGAN2 network has.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylegan.errors import UserError
from stylegan.formats.safe_pickle import Budget, TFNetworkRecord, plain
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


def _fail(path: Path, what: str) -> None:
    raise UserError(f"{path}: {what}")


def _variables(path: Path, net: TFNetworkRecord, budget: Budget, prefix: str = "", depth: int = 0
               ) -> dict[str, np.ndarray]:
    """Every variable of a network and its components, by TF name (`mapping/Dense0/weight`)."""
    budget.visit(depth)
    state = net.state
    if not isinstance(state.get("variables"), (list, tuple)) or not isinstance(state.get("components", {}), dict):
        _fail(path, f"network record '{prefix or state.get('name')}' has no variable list: not a TF network pickle")
    if int(state.get("version", 0)) < 4:
        _fail(path, f"a TensorFlow network pickle of version {state.get('version')} (StyleGAN, 2018): only StyleGAN2 "
                    "networks (version 4) can be imported")
    out = {}
    for item in state["variables"]:
        budget.visit(depth + 1)
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], np.ndarray) and item[1].dtype.kind == "f"):
            _fail(path, f"a variable of '{prefix or state.get('name')}' is not a (name, float array) pair")
        budget.bytes_left -= item[1].nbytes
        out[prefix + item[0]] = item[1]
    for name, sub in state.get("components", {}).items():
        if not isinstance(sub, TFNetworkRecord):
            _fail(path, f"component '{prefix}{name}' is not a network record")
        out.update(_variables(path, sub, budget, f"{prefix}{name}/", depth + 1))
    return out


def _kwargs(net: TFNetworkRecord, budget: Budget) -> dict:
    """The network's static_kwargs merged with its components' (the components get most of them)."""
    merged: dict[str, Any] = {}
    for sub in net.state.get("components", {}).values():
        if isinstance(sub, TFNetworkRecord):
            merged.update(_kwargs(sub, budget))
    merged.update(plain(net.state.get("static_kwargs") or {}, budget))
    return merged


def _build_funcs(net: TFNetworkRecord) -> str:
    subs = [_build_funcs(s) for s in net.state.get("components", {}).values() if isinstance(s, TFNetworkRecord)]
    return " ".join([str(net.state.get("build_func_name", "")), *subs]).strip()


def _check_common(path: Path, name: str, net: TFNetworkRecord, kw: dict, ignored: set[str]) -> None:
    func = _build_funcs(net)
    if "networks_stylegan." in func or "G_style" in func or "D_basic" in func:
        _fail(path, f"{name} is a StyleGAN (version 1, 2018) network ({func.strip()}): not supported; only StyleGAN2 "
                    "networks (config-e/f, StyleGAN2-ADA) can be imported")
    unknown = sorted(set(kw) - ignored)
    if unknown:
        _fail(path, f"{name} has arguments no StyleGAN2 network has ({', '.join(unknown)}): a modified architecture "
                    "is not supported")
    for key, want in (("fmap_decay", 1.0), ("fmap_min", 1), ("nonlinearity", "lrelu"), ("resample_kernel",
                      [1, 3, 3, 1]), ("mapping_nonlinearity", "lrelu"), ("normalize_latents", True)):
        if key in kw and kw[key] != want:
            _fail(path, f"{name} uses {key}={kw[key]!r}; only {want!r} is supported")


def _precision(path: Path, name: str, kw: dict) -> dict:
    """num_fp16_res and conv_clamp as the pickle sets them (StyleGAN2-ADA TF networks carry both; config-e/f: none)."""
    fp16, clamp = kw.get("num_fp16_res", 0) or 0, kw.get("conv_clamp")
    if isinstance(fp16, bool) or not isinstance(fp16, int) or fp16 < 0 or \
            not (clamp is None or (isinstance(clamp, (int, float)) and not isinstance(clamp, bool) and clamp > 0)):
        _fail(path, f"{name} has num_fp16_res={fp16!r} / conv_clamp={clamp!r}: expected a count >= 0 and a positive "
                    "number or None")
    return dict(num_fp16_res=fp16, conv_clamp=None if clamp is None else float(clamp))


def _take(path: Path, name: str, tf: dict[str, np.ndarray], key: str, shape: tuple | None = None) -> np.ndarray:
    if key not in tf:
        _fail(path, f"{name} has no variable '{key}': not a StyleGAN2 network this converter knows")
    value = tf.pop(key)
    if shape is not None and value.shape != shape:
        _fail(path, f"{name} variable '{key}' has shape {list(value.shape)}, expected {list(shape)}")
    return value


def _conv(w: np.ndarray, flip: bool = False) -> np.ndarray:
    return (w[::-1, ::-1] if flip else w).transpose(3, 2, 0, 1)


def _generator(path: Path, net: TFNetworkRecord, budget: Budget) -> tuple[dict, dict]:
    name = f"the TF generator '{net.state.get('name')}'"
    kw = _kwargs(net, budget)
    _check_common(path, name, net, kw, _G_IGNORED)
    tf = _variables(path, net, budget)
    if any(k.startswith("mapping/LabelConcat") for k in tf):
        _fail(path, f"{name} is a conditional StyleGAN2 (2019) network (labels concatenated before normalisation): "
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
                _fail(path, f"{name} variable '{k}': intermediate RGB outputs are not part of a StyleGAN2 'orig' net")
    layers = int(kw.get("mapping_layers", 8))
    G_kwargs = dict(z_dim=int(kw.get("latent_size", 512)), c_dim=c_dim, w_dim=int(kw.get("dlatent_size", 512)),
                    img_resolution=res, img_channels=int(kw.get("num_channels", 3)),
                    mapping_kwargs=dict(num_layers=layers, w_avg_beta=float(kw.get("dlatent_avg_beta",
                                                                                  kw.get("w_avg_beta", 0.995)))),
                    channel_base=int(kw.get("fmap_base", 16384)) * 2, channel_max=int(kw.get("fmap_max", 512)),
                    **_precision(path, name, kw), architecture=arch)
    if kw.get("mapping_fmaps") not in (None, G_kwargs["w_dim"]) or kw.get("mapping_lrmul", 0.01) != 0.01:
        _fail(path, f"{name} uses mapping_fmaps={kw.get('mapping_fmaps')} / mapping_lrmul={kw.get('mapping_lrmul')}: "
                    "only the defaults (dlatent_size, 0.01) are supported")
    if c_dim:
        G_kwargs["mapping_kwargs"]["embed_features"] = kw.get("label_fmaps") or G_kwargs["w_dim"]
    sd = {"mapping.w_avg": _take(path, name, tf, "dlatent_avg")}
    if c_dim:
        sd["mapping.embed.weight"] = _take(path, name, tf, "mapping/LabelEmbed/weight").T
        sd["mapping.embed.bias"] = _take(path, name, tf, "mapping/LabelEmbed/bias")
    for i in range(layers):
        sd[f"mapping.fc{i}.weight"] = _take(path, name, tf, f"mapping/Dense{i}/weight").T
        sd[f"mapping.fc{i}.bias"] = _take(path, name, tf, f"mapping/Dense{i}/bias")
    for r in (2 ** i for i in range(2, int(math.log2(res)) + 1)):
        blk, t = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        convs = [("conv1", "Conv", 0)] if r == 4 else [("conv0", "Conv0_up", 2 * int(math.log2(r)) - 5),
                                                      ("conv1", "Conv1", 2 * int(math.log2(r)) - 4)]
        if r == 4:
            sd[f"{blk}.const"] = _take(path, name, tf, f"{t}/Const/const")[0]
        for ours, theirs, noise in convs:
            sd[f"{blk}.{ours}.weight"] = _conv(_take(path, name, tf, f"{t}/{theirs}/weight"), theirs == "Conv0_up")
            sd[f"{blk}.{ours}.bias"] = _take(path, name, tf, f"{t}/{theirs}/bias")
            sd[f"{blk}.{ours}.affine.weight"] = _take(path, name, tf, f"{t}/{theirs}/mod_weight").T
            sd[f"{blk}.{ours}.affine.bias"] = _take(path, name, tf, f"{t}/{theirs}/mod_bias") + 1
            sd[f"{blk}.{ours}.noise_strength"] = _take(path, name, tf, f"{t}/{theirs}/noise_strength")
            sd[f"{blk}.{ours}.noise_const"] = _take(path, name, tf, f"synthesis/noise{noise}")[0, 0]
        if arch == "skip" or r == res:
            sd[f"{blk}.torgb.weight"] = _conv(_take(path, name, tf, f"{t}/ToRGB/weight"))
            sd[f"{blk}.torgb.bias"] = _take(path, name, tf, f"{t}/ToRGB/bias")
            sd[f"{blk}.torgb.affine.weight"] = _take(path, name, tf, f"{t}/ToRGB/mod_weight").T
            sd[f"{blk}.torgb.affine.bias"] = _take(path, name, tf, f"{t}/ToRGB/mod_bias") + 1
        if arch == "resnet" and r > 4:
            sd[f"{blk}.skip.weight"] = _conv(_take(path, name, tf, f"{t}/Skip/weight"), flip=True)
    tf.pop("lod", None)  # progressive-growing leftover some TF generators carry; unused by StyleGAN2
    if tf:
        _fail(path, f"{name} has variables no StyleGAN2 generator has ({', '.join(sorted(tf)[:4])}): a modified "
                    "architecture is not supported")
    return G_kwargs, _as_tensors(path, name, sd, Generator, G_kwargs, budget)


def _discriminator(path: Path, net: TFNetworkRecord, budget: Budget) -> tuple[dict, dict]:
    name = f"the TF discriminator '{net.state.get('name')}'"
    kw = _kwargs(net, budget)
    _check_common(path, name, net, kw, _D_IGNORED)
    tf = _variables(path, net, budget)
    if kw.get("architecture", "resnet") != "resnet" or any(k.startswith("FromRGB_lod") for k in tf):
        _fail(path, f"{name} uses architecture {kw.get('architecture', 'orig')!r}: only 'resnet' discriminators are "
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
        sd["mapping.embed.weight"] = _take(path, name, tf, "LabelEmbed/weight").T
        sd["mapping.embed.bias"] = _take(path, name, tf, "LabelEmbed/bias")
        for i in range(layers):
            sd[f"mapping.fc{i}.weight"] = _take(path, name, tf, f"Mapping{i}/weight").T
            sd[f"mapping.fc{i}.bias"] = _take(path, name, tf, f"Mapping{i}/bias")
    for r in (2 ** i for i in range(int(math.log2(res)), 2, -1)):
        t = f"{r}x{r}"
        if r == res:
            sd[f"b{r}.fromrgb.weight"] = _conv(_take(path, name, tf, f"{t}/FromRGB/weight"))
            sd[f"b{r}.fromrgb.bias"] = _take(path, name, tf, f"{t}/FromRGB/bias")
        for i, theirs in enumerate(("Conv0", "Conv1_down")):
            sd[f"b{r}.conv{i}.weight"] = _conv(_take(path, name, tf, f"{t}/{theirs}/weight"))
            sd[f"b{r}.conv{i}.bias"] = _take(path, name, tf, f"{t}/{theirs}/bias")
        sd[f"b{r}.skip.weight"] = _conv(_take(path, name, tf, f"{t}/Skip/weight"))
    sd["b4.conv.weight"] = _conv(_take(path, name, tf, "4x4/Conv/weight"))
    sd["b4.conv.bias"] = _take(path, name, tf, "4x4/Conv/bias")
    sd["b4.fc.weight"] = _take(path, name, tf, "4x4/Dense0/weight").T
    sd["b4.fc.bias"] = _take(path, name, tf, "4x4/Dense0/bias")
    sd["b4.out.weight"] = _take(path, name, tf, "Output/weight").T
    sd["b4.out.bias"] = _take(path, name, tf, "Output/bias")
    if tf:
        _fail(path, f"{name} has variables no StyleGAN2 discriminator has ({', '.join(sorted(tf)[:4])}): a modified "
                    "architecture is not supported")
    return D_kwargs, _as_tensors(path, name, sd, Discriminator, D_kwargs, budget)


def _as_tensors(path: Path, name: str, sd: dict[str, np.ndarray], network: type, kwargs: dict, budget: Budget
                ) -> dict[str, torch.Tensor]:
    """float32 tensors in the order of the network `kwargs` describe (shapes checked), plus its FIR filter buffers
    (the [1,3,3,1] the TF network used, checked above)."""
    try:
        with torch.device("meta"):
            shapes = network(**kwargs).state_dict()
    except (TypeError, ValueError) as e:
        _fail(path, f"{name}: its arguments describe no StyleGAN2 network ({e})")
    out = {}
    for key, t in shapes.items():
        if key.endswith("resample_filter"):
            out[key] = setup_filter(FIR_TAPS)
            continue
        value = sd.pop(key, None)
        if value is None or tuple(value.shape) != tuple(t.shape):
            _fail(path, f"{name}: {key} is {'missing' if value is None else list(value.shape)} where its arguments "
                        f"give {list(t.shape)}")
        out[key] = budget.copy(torch.from_numpy(np.array(value, dtype=np.float32, order="C")))
    return out


def read_tf_networks(path: Path, nets: tuple, budget: Budget) -> dict:
    """(G, D, Gs) records -> our checkpoint layout. The resample filter buffers are ours ([1,3,3,1] is checked)."""
    if len(nets) != 3:
        _fail(path, f"a tuple of {len(nets)} TF networks: NVIDIA's TF pickles hold (G, D, Gs)")
    G_kwargs, G = _generator(path, nets[0], budget)
    D_kwargs, D = _discriminator(path, nets[1], budget)
    Gs_kwargs, G_ema = _generator(path, nets[2], budget)
    if Gs_kwargs != G_kwargs:
        _fail(path, "its G and Gs have different architectures")
    return {"format": 1, "source": str(path), "G_kwargs": G_kwargs, "D_kwargs": D_kwargs, "G": G, "D": D,
            "G_ema": G_ema}
