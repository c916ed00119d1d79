"""What a training run reports: progress lines (stdout and log.txt), one statistics row per tick (stats.jsonl) and
TensorBoard scalars and images. Rank 0 writes; statistics are means over every rank, addressed by name."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from stylegan.distributed import all_reduce_sum
from stylegan.rundir import RunDir

# stats.jsonl key -> TensorBoard tag (the official trainer's tags where it has one)
TAGS = {
    "loss_G": "Loss/G/loss", "loss_D": "Loss/D/loss", "pl_penalty": "Loss/G/pl_penalty",
    "r1_penalty": "Loss/D/r1_penalty", "pl_mean": "Loss/G/pl_mean", "real_sign": "Loss/signs/real",
    "augment_p": "Progress/augment", "kimg": "Progress/kimg", "sec_per_kimg": "Timing/sec_per_kimg",
    "images_per_sec_per_gpu": "Timing/images_per_sec_per_gpu", "gpumem_gb": "Resources/gpu_mem_gb",
    "glr": "Progress/glr", "dlr": "Progress/dlr", "nonfinite_steps": "Faults/nonfinite_steps",
    "rollbacks": "Faults/rollbacks", "lod": "Progress/lod", "resolution": "Progress/resolution",
    "batch": "Progress/batch",
}


class TickStats:
    """Means of named scalars over a tick, accumulated on the device so that a step never waits for the host."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, torch.zeros([], device=self.device)) + value.detach().float()
            self.counts[name] = self.counts.get(name, 0) + 1

    def reduce(self) -> dict[str, float]:
        """The means over every rank (a collective: every rank calls it, and every rank added the same names),
        then a fresh start."""
        names = sorted(self.sums)
        if not names:
            return {}
        sums = torch.stack([self.sums[n] for n in names])
        counts = torch.tensor([float(self.counts[n]) for n in names], device=self.device)
        totals = all_reduce_sum(torch.cat([sums, counts])).cpu().tolist()
        self.sums, self.counts = {}, {}
        return {n: totals[i] / max(totals[len(names) + i], 1) for i, n in enumerate(names)}


class RunLog:
    def __init__(self, run: RunDir, is_main: bool):
        self.run, self.is_main = run, is_main
        self.writer = SummaryWriter(str(run.path)) if is_main else None

    def log(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)
            with open(self.run.log, "a") as f:
                f.write(text + "\n")

    def warn(self, text: str) -> None:
        """A warning stands out in the log and also goes to stderr (Slurm's error file, a terminal)."""
        self.log(f"WARNING: {text}")
        if self.is_main:
            print(f"WARNING: {text}", file=sys.stderr, flush=True)

    def startup(self, setup_seconds: float, first_step_seconds: float, compiled: bool) -> None:
        """Where start-up went: building (networks, weights, data, process group) and the first step, which is
        where torch.compile compiles or loads from its cache and cuDNN picks its kernels."""
        why = (f"torch.compile on first use: minutes cold, far less from a filled cache "
               f"({os.environ.get('TORCHINDUCTOR_CACHE_DIR')})" if compiled else "eager, nothing to compile")
        self.log(f"start-up: {setup_seconds + first_step_seconds:.0f} s from the trainer's start to the end of its "
                 f"first step: {setup_seconds:.0f} s networks, weights and data, {first_step_seconds:.0f} s first step "
                 f"({why})")

    def tick(self, row: dict) -> None:
        """One line of progress, one stats.jsonl row, TensorBoard scalars at the row's kimg."""
        self.log(f"tick {row['tick']} kimg {row['kimg']:.1f} time {format_time(row['time_s'])} "
                 f"sec/tick {row['sec_per_tick']:.1f} sec/kimg {row['sec_per_kimg']:.2f} "
                 f"maintenance {row['maintenance_s']:.1f} gpumem {row['gpumem_gb']:.1f} augment {row['augment_p']:.3f}"
                 + (f" lod {row['lod']:.2f}" if "lod" in row else ""))
        if not self.is_main:
            return
        with open(self.run.stats, "a") as f:
            f.write(json.dumps(row) + "\n")
        for key, tag in TAGS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], int(row["kimg"]))
        self.writer.flush()

    def image(self, tag: str, image: np.ndarray, kimg: int) -> None:
        if self.is_main:
            self.writer.add_image(tag, image, kimg, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_time(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s // 60 % 60:02d}m"
