"""Transfer learning across architectures: copy every tensor whose name and shape match, report the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from stylegan.errors import UserError


@dataclass
class TransferReport:
    name: str
    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "name (why)"

    @property
    def fraction(self) -> float:
        total = len(self.copied) + len(self.kept)
        return len(self.copied) / total if total else 1.0

    def summary(self) -> str:
        lines = [f"{self.name}: copied {len(self.copied)}/{len(self.copied) + len(self.kept)} tensors "
                 f"({self.fraction:.0%})"]
        if self.kept:
            lines.append(f"{self.name}: kept initial values for: " + ", ".join(self.kept))
        return "\n".join(lines)


def transfer_weights(src: dict[str, torch.Tensor], dst: nn.Module, name: str, source: str,
                     min_fraction: float = 0.5) -> TransferReport:
    """Copy matching tensors of `src` into `dst` in place. The fixed FIR filters are not counted: they are the
    same everywhere. Raises UserError when fewer than `min_fraction` of `dst`'s tensors match."""
    report = TransferReport(name)
    state = dst.state_dict()
    with torch.no_grad():
        for key, t in state.items():
            if key.endswith("resample_filter"):
                continue
            if key not in src:
                report.kept.append(f"{key} (absent)")
            elif tuple(src[key].shape) != tuple(t.shape):
                report.kept.append(f"{key} (shape {list(src[key].shape)} vs {list(t.shape)})")
            else:
                t.copy_(src[key])
                report.copied.append(key)
    if report.fraction < min_fraction:
        raise UserError(f"{source}: only {report.fraction:.0%} of {name}'s tensors match this architecture "
                        f"(need {min_fraction:.0%}; set transfer_min_fraction lower to accept)")
    dst.load_state_dict(state)
    return report
