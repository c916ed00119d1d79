"""Transfer learning: start a new run from another network's weights and say exactly what carried over.

Every tensor whose name and shape match is copied. Cross-resolution transfer leaves the source's blocks above the
target resolution behind, and a D below the source's resolution has an RGB input layer (`b<res>.fromrgb`) that the
source lacks, which starts random: both are expected and reported. Anything else is a mismatch (another mapping
depth, other channel counts, layers the target has no place for) and is refused with the config values that fit
the source, unless `partial` (the config's `transfer_partial`) accepts starting those tensors from random.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from stylegan.errors import UserError

_BLOCK = re.compile(r"(?:^|\.)b(\d+)\.")
_MAPPING_LAYER = re.compile(r"^mapping\.fc(\d+)\.weight$")
# Never copied nor counted: the constant FIR filter buffers (the same in every network) and StyleGAN (2018)'s level
# of detail (a fine-tuned network starts at its full resolution, lod 0, whatever the source was at).
_FIXED = ("resample_filter", "lod")


@dataclass
class TransferReport:
    name: str
    copied: list[str] = field(default_factory=list)
    random: list[str] = field(default_factory=list)      # target tensors the source lacks: initial values kept
    mismatched: list[str] = field(default_factory=list)  # "name (shape there vs here)": initial values kept
    unused: list[str] = field(default_factory=list)      # source tensors with no place in the target
    above: int = 0                                       # source tensors of blocks above the target resolution

    def not_copied(self) -> list[str]:
        return self.random + [m.split(" ", 1)[0] for m in self.mismatched]

    def summary(self) -> str:
        total = len(self.copied) + len(self.random) + len(self.mismatched)
        lines = [f"{self.name}: copied {len(self.copied)}/{total} tensors; source tensors left behind: "
                 f"{self.above} of blocks above this resolution, {len(self.unused)} other"]
        for label, names in (("start random (not in the source)", self.random),
                             ("start random (other shape)", self.mismatched), ("unused source tensors", self.unused)):
            if names:
                lines.append(f"{self.name}: {label}: {', '.join(names)}")
        return "\n".join(lines)


def _mapping_depth(names) -> int:
    return len([n for n in names if _MAPPING_LAYER.match(n)])


def config_fix(src_kwargs: dict, dst_kwargs: dict) -> str:
    """The config keys whose values would make the target take the source's shapes, as `key=value` text."""
    def flat(kw: dict) -> dict:
        base = 2 * kw["fmap_base"] if "fmap_base" in kw else kw.get("channel_base", 32768)  # StyleGAN (2018)'s
        return {"z_dim": kw.get("z_dim"), "w_dim": kw.get("w_dim"), "channel_base": base,
                "channel_max": kw.get("fmap_max", kw.get("channel_max", 512)),
                "map_layers": (kw.get("mapping_kwargs") or {}).get("num_layers", 8) if "z_dim" in kw else None}
    src, dst = flat(src_kwargs), flat(dst_kwargs)
    return " ".join(f"{k}={v}" for k, v in src.items() if v is not None and v != dst[k])


def transfer_weights(src: dict[str, torch.Tensor], dst: nn.Module, name: str, source: str, partial: bool = False,
                     fix: str = "") -> TransferReport:
    """Copy what fits from the state dict `src` into `dst` (a Generator or Discriminator) in place.

    Raises UserError, leaving `dst` untouched, on a mismatch (unless `partial`) or when nothing fits. `fix` names
    the config values that fit the source (config_fix)."""
    report = TransferReport(name)
    state = dst.state_dict()
    for key, t in state.items():
        if key.endswith(_FIXED):
            continue
        if key not in src:
            report.random.append(key)
        elif tuple(src[key].shape) != tuple(t.shape):
            report.mismatched.append(f"{key} ({list(src[key].shape)} there, {list(t.shape)} here)")
        else:
            report.copied.append(key)
    for key in src:
        if key in state or key.endswith(_FIXED):
            continue
        block = _BLOCK.search(key)
        if block and int(block.group(1)) > dst.img_resolution:
            report.above += 1
        else:
            report.unused.append(key)

    problems = []
    depth_src, depth_dst = _mapping_depth(src), _mapping_depth(state)
    if depth_src != depth_dst:
        problems.append(f"its mapping network has {depth_src} layers, the config's {depth_dst}")
    if report.mismatched:
        problems.append(f"{len(report.mismatched)} tensors differ in shape ({', '.join(report.mismatched[:2])}"
                        f"{', ...' if len(report.mismatched) > 2 else ''})")
    if report.unused:
        problems.append(f"{len(report.unused)} of its tensors have no place here ({', '.join(report.unused[:3])}"
                        f"{', ...' if len(report.unused) > 3 else ''})")
    if not report.copied:
        raise UserError(f"{source}: no tensor of its {name} fits this network: is it a {name} of the config's family?")
    if problems and not partial:
        advice = f"Set {fix} (the source's values), or set" if fix else "Set"
        raise UserError(f"{source}: {name} does not fit the config: {'; '.join(problems)}. {advice} "
                        "transfer_partial=true to copy what fits and start the rest from random")
    with torch.no_grad():
        for key in report.copied:
            state[key].copy_(src[key])
    return report


def fine_tune(ckpt: dict, source: str, G: nn.Module, G_ema: nn.Module, D: nn.Module, G_kwargs: dict, D_kwargs: dict,
              partial: bool) -> tuple[list[str], list[str], list[str]]:
    """Start a new run from a checkpoint: G, G_ema and D each from their counterpart there (G_ema kept as it is,
    as NVIDIA's --resume). Returns (each network's report, warnings, D's layers such as `b64.fromrgb` that start
    random)."""
    reports, warnings = [], []
    for name, module in (("G", G), ("G_ema", G_ema)):
        fix = config_fix(ckpt["G_kwargs"], G_kwargs)
        reports.append(transfer_weights(ckpt.get(name, ckpt["G_ema"]), module, name, source, partial, fix).summary())
    if "D" not in ckpt:
        warnings.append(f"{source} has no discriminator: D starts from random weights")
        return reports, warnings, D.layer_names()
    report = transfer_weights(ckpt["D"], D, "D", source, partial, config_fix(ckpt.get("D_kwargs", {}), D_kwargs))
    reports.append(report.summary())
    return reports, warnings, [n for n in D.layer_names() if any(k.startswith(n + ".") for k in report.not_copied())]
