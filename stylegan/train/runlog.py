"""What a training run reports: progress lines (stdout and log.txt), one statistics row per tick (stats.jsonl) and
TensorBoard scalars and images. Rank 0 writes; statistics are means over every rank, addressed by name."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from stylegan.distributed import all_reduce_sum
from stylegan.imagefiles import save_png
from stylegan.progress import format_time
from stylegan.rundir import RunDir

# stats.jsonl key -> TensorBoard tag (the official trainer's tags where it has one); `phase_<name>` -> Timing/<name>
TAGS = {
    "loss_G": "Loss/G/loss", "loss_D": "Loss/D/loss", "pl_penalty": "Loss/G/pl_penalty",
    "r1_penalty": "Loss/D/r1_penalty", "pl_mean": "Loss/G/pl_mean", "score_fake": "Loss/scores/fake",
    "score_real": "Loss/scores/real", "sign_fake": "Loss/signs/fake", "real_sign": "Loss/signs/real",
    "augment_p": "Progress/augment", "kimg": "Progress/kimg", "time_s": "Timing/total_sec",
    "sec_per_tick": "Timing/sec_per_tick", "sec_per_kimg": "Timing/sec_per_kimg",
    "maintenance_s": "Timing/maintenance_sec", "images_per_sec_per_gpu": "Timing/images_per_sec_per_gpu",
    "cpumem_gb": "Resources/cpu_mem_gb", "gpumem_gb": "Resources/peak_gpu_mem_gb",
    "gpumem_reserved_gb": "Resources/peak_gpu_mem_reserved_gb", "glr": "Progress/glr", "dlr": "Progress/dlr",
    "nonfinite_steps": "Faults/nonfinite_steps", "rollbacks": "Faults/rollbacks", "lod": "Progress/lod",
    "resolution": "Progress/resolution", "batch": "Progress/batch",
}


# TensorBoard's copy of a sheet of images is at most this many pixels a side; the PNG file beside it keeps every pixel.
# TensorBoard encodes at PNG level 6 on one core: at 1024x1024 an 8x8 sheet (8192 pixels a side) cost the start and
# every snapshot tens of seconds and ~140 MB of events (benchmarks/RESULTS.md, ours at 1024).
PREVIEW_SIDE = 2048


def preview(image: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """`image` (uint8 HWC) box-averaged by the smallest whole factor that brings its longer side to `side` or less."""
    factor = -(-max(image.shape[:2]) // side)
    return image if factor == 1 else np.asarray(Image.fromarray(image).reduce(factor))


def tag_of(key: str) -> str | None:
    return f"Timing/{key[6:]}" if key.startswith("phase_") else TAGS.get(key)


class PhaseTimes:
    """Seconds spent in each training phase over a tick on this rank, as NVIDIA's Timing/<phase>: CUDA events on a
    GPU, so that a step never waits for one; read once per tick."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self.marks.append((name, start, end))

    def reduce(self) -> dict[str, float]:
        """`phase_<name>`: seconds per phase since the last call."""
        out: dict[str, float] = {}
        if self.cuda and self.marks:
            self.marks[-1][2].synchronize()
        for name, start, end in self.marks:
            seconds = start.elapsed_time(end) / 1000 if self.cuda else end - start
            out[f"phase_{name}"] = out.get(f"phase_{name}", 0.0) + seconds
        self.marks = []
        return out


def memory_figures(device: torch.device) -> dict[str, float]:
    """This process's resident memory, and the GPU's peaks since the last call (reset each tick, as NVIDIA's log)."""
    try:
        with open("/proc/self/statm") as f:
            cpu = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError, IndexError):  # no /proc: not Linux
        cpu = 0.0
    out = {"cpumem_gb": cpu, "gpumem_gb": 0.0, "gpumem_reserved_gb": 0.0}
    if device.type == "cuda":
        out.update(gpumem_gb=torch.cuda.max_memory_allocated(device) / 2 ** 30,
                   gpumem_reserved_gb=torch.cuda.max_memory_reserved(device) / 2 ** 30)
        torch.cuda.reset_peak_memory_stats(device)
    return out


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
        self.sheet_writer = ThreadPoolExecutor(1, "sheets") if is_main else None
        self.sheet_written: Future | None = None

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

    def startup(self, before: float | None, setup_seconds: float, first_step_seconds: float, compiling: str) -> None:
        """Where start-up went: the process's age at the trainer's start (`before`: Python, imports, the start-up
        plan, the process group; None: not known), building (networks, weights, data) and the first step, which is
        where torch.compile compiles or loads from its cache (`compiling`: compiled) and cuDNN picks its kernels."""
        why = {"compiled": "torch.compile on first use: minutes cold, far less from a filled cache "
                           f"({os.environ.get('TORCHINDUCTOR_CACHE_DIR')})",
               "background": "eager: helper processes compile the main phases meanwhile, compiled from the first "
                             "tick after they end",
               "eager": "eager, nothing to compile"}[compiling]
        self.log(f"start-up: {setup_seconds + first_step_seconds:.0f} s from the trainer's start to the end of its "
                 f"first step: {setup_seconds:.0f} s networks, weights and data, {first_step_seconds:.0f} s first step "
                 f"({why})" + (f"; {before:.0f} s before the trainer's start, from the process's start (Python, "
                                "imports, the start-up plan, the process group)" if before is not None else ""))

    def tick(self, row: dict) -> None:
        """One line of progress, one stats.jsonl row, TensorBoard scalars at the row's image count (`nimg`: ticks
        shorter than a kimg never share a step)."""
        losses = " ".join(f"{name} {row[key]:.3f}" for name, key in (("G", "loss_G"), ("D", "loss_D"), ("pl",
                          "pl_penalty"), ("r1", "r1_penalty")) if key in row)
        phases = " ".join(f"{key[6:]} {value:.2f}" for key, value in row.items() if key.startswith("phase_"))
        self.log(f"tick {row['tick']} kimg {row['kimg']:.1f} time {format_time(row['time_s'])} "
                 f"sec/tick {row['sec_per_tick']:.1f} sec/kimg {row['sec_per_kimg']:.2f} "
                 f"maintenance {row['maintenance_s']:.1f} cpumem {row['cpumem_gb']:.2f} gpumem {row['gpumem_gb']:.1f} "
                 f"reserved {row['gpumem_reserved_gb']:.1f} augment {row['augment_p']:.3f}"
                 + (f" lod {row['lod']:.2f}" if "lod" in row else "")
                 + (f" | loss {losses}" if losses else "") + (f" | phase sec {phases}" if phases else ""))
        if not self.is_main:
            return
        with open(self.run.stats, "a") as f:
            f.write(json.dumps(row) + "\n")
        with self.events():
            for key, value in row.items():
                if (tag := tag_of(key)) is not None:
                    self.writer.add_scalar(tag, value, row["nimg"])
            self.writer.flush()

    def sheet(self, tag: str, image: np.ndarray, nimg: int, path: Path) -> None:
        """A sheet of images (uint8 HWC) as the PNG file `path` and in TensorBoard at the image count (a `preview`),
        written by a thread of its own: at 1024x1024 a sheet takes seconds to encode (PNG and zlib let go of the
        GIL), which the run's start and its snapshots need not wait for. One sheet at a time, so that at most two
        are held; an error of the last one is raised here or by `close`."""
        if self.is_main:
            self.wait_for_sheet()
            self.sheet_written = self.sheet_writer.submit(self.write_sheet, tag, image, nimg, path)

    def write_sheet(self, tag: str, image: np.ndarray, nimg: int, path: Path) -> None:
        save_png(image, path)
        with self.events():
            self.writer.add_image(tag, preview(image), nimg, dataformats="HWC")
            self.writer.flush()

    def wait_for_sheet(self) -> None:
        if self.sheet_written is not None:
            written, self.sheet_written = self.sheet_written, None
            written.result()

    @contextlib.contextmanager
    def events(self) -> Iterator[None]:
        """TensorBoard writes from a thread of its own, whose errors (a full disk) come back here without a file
        name: name the event files."""
        try:
            yield
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(self.run.path / "events.out.tfevents.*")) from e

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.wait_for_sheet()
            finally:
                self.sheet_writer.shutdown()
            with self.events():
                self.writer.close()

