"""The GPU fast path of a training step: how the step in `stylegan.train.trainer` runs fast, kept beside it.

None of this changes what a step computes (benchmarks/RESULTS.md: the dynamics checks and the parity runs); it
changes how long the host and the GPU wait for each other:
- compiled Gmain/Dmain graphs (torch.compile), optionally replayed as CUDA graphs (`compile_mode: reduce-overhead`),
  compiled by helper processes while the trainer steps eagerly (`compile_start: background`, `CompileAhead`), or
  at the first step when the compile cache already holds them (`CompileRecord`); with `compile_greg` the
  path-length phase too, whose inner gradient the graph then holds as torch.func.grad (`StyleGAN2Loss.path_lengths`);
- an optimizer step decided on the device: fused Adam skips a step whose gradients are not finite (`found_inf`),
  so the host never reads the gradients;
- the EMA as multi-tensor kernels, gated on the device;
- the step's flags (non-finite, stop) read by the host one step late (`LaggedFlags`), so the GPU always has work.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch._functorch.config
from torch import nn

from stylegan.distributed import DistEnv, all_reduce_max, all_reduce_sum
from stylegan.fileio import use_compile_cache, write_text_atomic
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.train.augment import AugmentPipe
from stylegan.train.config import TrainConfig, config_dict
from stylegan.train.losses import augmented
from stylegan.train.progressive import Stage

# Settings that choose what a run trains on, for how long and where it writes, not the graphs of its main phases
RUN_ONLY = ("data", "outdir", "run_name", "workers", "seed", "resume", "kimg", "tick_kimg", "snap", "keep_snapshots",
            "grid_size", "compile_start", "compile_helper_nice", "nan_rollback", "dist_timeout_s")


def compiles(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the main phases run compiled on `device`. CPU runs stay eager under Inductor: its CPU backend fails
    on these backward graphs (torch 2.13), and CPUs gain little; `compile_backend: aot_eager` compiles anywhere."""
    return cfg.compile and (device.type == "cuda" or cfg.compile_backend != "inductor")


def compiled_phases(cfg: TrainConfig) -> tuple[str, ...]:
    """The phases that run compiled graphs: the main ones, and the path-length regulariser with `compile_greg`."""
    return ("Gmain", "Dmain", "Dboth", *(("Greg",) if cfg.compile_greg else ()))


def compiled_networks(G: Generator, D: Discriminator, augment: AugmentPipe | None, G_reg: Callable,
                      cfg: TrainConfig) -> tuple:
    """torch.compile'd G and augmented D for the Gmain and Dmain phases (the same parameters; the augmentation
    compiles into D's graph), and `G_reg` (the loss's path lengths) compiled with `compile_greg`. Inductor keeps
    its graphs and kernels in the compile cache (`use_compile_cache`)."""
    # The partitioner reads the budget when a graph compiles (its first call), so it is set for the process; it is
    # part of the compile cache's keys.
    torch._functorch.config.activation_memory_budget = cfg.compile_memory_budget
    options = {"backend": cfg.compile_backend}
    if cfg.compile_backend == "inductor":
        use_compile_cache()
        options["mode"] = cfg.compile_mode
    compiled = functools.partial(torch.compile, dynamic=False, **options)
    G_main = types.SimpleNamespace(mapping=compiled(G.mapping), synthesis=compiled(G.synthesis))
    return G_main, compiled(augmented(D, augment)), compiled(G_reg) if cfg.compile_greg else G_reg


class CompileAhead:
    """Helper processes that compile the main phases' graphs into the compile cache while the trainer steps
    eagerly: compiling them cold takes minutes (benchmarks/RESULTS.md, time to quality), loading them from a filled
    cache seconds. The main process of each node (local rank 0) starts one helper per compiled phase, `target(*args)`
    for each of `jobs`, so that the phases' graphs compile side by side; each builds the same networks and runs its
    phase compiled, `niceness` steps below the run's CPU priority. `state` is the ranks' agreement on whether every
    node's helpers have ended."""

    def __init__(self, target: Callable, jobs: list[tuple], env: DistEnv, niceness: int):
        use_compile_cache()  # the helpers inherit the cache folder through the environment
        self.env, self.started = env, time.time()
        # spawn: a forked child would inherit this process's CUDA context, which CUDA does not allow
        spawn = multiprocessing.get_context("spawn")
        self.processes = [spawn.Process(target=run_niced, args=(niceness, target, args), name="stylegan-compile-ahead")
                          for args in (jobs if env.local_rank == 0 else [])]
        for process in self.processes:
            process.start()

    def state(self) -> str:
        """running (a helper of some node has not ended), failed (one exited with an error) or done; the same on
        every rank (one collective)."""
        running = any(p.is_alive() for p in self.processes)
        failed = any(not p.is_alive() and p.exitcode != 0 for p in self.processes)
        flags = all_reduce_max(torch.tensor([float(running), float(failed)], device=self.env.device))
        return "running" if flags[0] else "failed" if flags[1] else "done"

    def stop(self) -> None:
        """End the helpers that still run (a run that ends before its compile does)."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(10)


class CompileRecord:
    """A file in the compile cache saying that it holds the main phases' graphs of one configuration, written by the
    first run that has them compiled. A run that finds its record compiles at its first step, which loads the
    graphs in seconds, instead of stepping eagerly for minutes beside helper processes that would load them again
    (benchmarks/RESULTS.md, #40). The record is named by a digest of what the graphs depend on: the settings
    outside RUN_ONLY, the stage, the images per GPU, the torch version, the GPU model and this library's source. It
    lives in Inductor's cache folder, so emptying the cache removes it too; a record whose graphs were evicted costs a
    cold compile at the first step."""

    def __init__(self, cfg: TrainConfig, c_dim: int, stage: Stage, batch_gpu: int, device: torch.device):
        self.what = {"config": {k: v for k, v in config_dict(cfg).items() if k not in RUN_ONLY}, "c_dim": c_dim,
                     "stage": [stage.lod, stage.resolution, stage.batch], "batch_gpu": batch_gpu,
                     "torch": torch.__version__, "device": device_model(device), "code": source_digest()}
        digest = hashlib.sha256(json.dumps(self.what, sort_keys=True).encode()).hexdigest()[:24]
        self.path, self.device, self.written = use_compile_cache() / "stylegan-graphs" / f"{digest}.json", device, False

    def held_on_every_rank(self) -> bool:
        """Whether every rank finds the record (a node with its own cache may not): they decide together."""
        return not bool(all_reduce_max(torch.tensor(float(not self.path.is_file()), device=self.device)))

    def write(self, run: Path) -> None:
        """Once per run: `run` has the graphs compiled (helpers ended, or its first compiled step ran)."""
        if not self.written and not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps({**self.what, "run": str(run), "time": time.time()}, indent=1))
        self.written = True


def device_model(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    return f"{torch.cuda.get_device_name(device)} sm_{''.join(map(str, torch.cuda.get_device_capability(device)))}"


@functools.cache
def source_digest() -> str:
    """The library's Python source: the graphs change with it."""
    root, digest = Path(__file__).resolve().parents[1], hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def run_niced(niceness: int, target: Callable, args: tuple) -> None:
    """A helper's body: `target(*args)`, `niceness` steps below the run's CPU priority. The run's eager steps are
    bound by the host's kernel launches, and a helper's compiling (Inductor's compile workers, which inherit the
    priority, up to one per core) would otherwise take the run's cores from it; so the helpers get the CPU time the
    run leaves."""
    os.nice(niceness)
    target(*args)


class GraphRounds:
    """What replaying CUDA graphs asks of a phase's minibatch rounds. A replay reuses its output memory, so each
    round says that the last round's outputs are consumed, and with several rounds the first round's gradients are
    copied into memory the trainer owns before the next replay adds to them. Without CUDA graphs both are no-ops."""

    def __init__(self, enabled: bool, rounds: int):
        self.enabled, self.rounds = enabled, rounds

    def begin(self) -> None:
        torch.compiler.cudagraph_mark_step_begin()

    def own_gradients(self, params: list[nn.Parameter], rnd: int) -> None:
        if self.enabled and self.rounds > 1 and rnd == 0:
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad.clone()


def lazy_adam(params: list, lr: float, betas: list, eps: float, interval: int) -> torch.optim.Adam:
    """Adam for a loss whose regulariser runs every `interval` steps (its own optimizer step): scale lr and betas
    by interval / (interval + 1), as the official trainer. Fused: one kernel for all parameters (the same update)."""
    ratio = lazy_ratio(interval)
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=eps, fused=True)


def lazy_ratio(interval: int) -> float:
    """The share of steps in which a lazily regularised loss's main term runs (interval 0: not lazy)."""
    return interval / (interval + 1) if interval > 0 else 1.0


def average_and_step(params: list[nn.Parameter], opt: torch.optim.Optimizer, world: int) -> torch.Tensor:
    """Average the gradients over ranks (one all-reduce of the flattened gradients) and step `opt` if they are all
    finite, decided on the device (fused Adam skips on `found_inf`), so the host never waits here. Returns that
    decision as a device bool; the gradients are cleared either way."""
    params = [p for p in params if p.grad is not None]
    flat = all_reduce_sum(torch.cat([p.grad.flatten() for p in params])) / world
    finite = torch.isfinite(flat).all()
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view(p.shape)
    opt.found_inf = (~finite).float()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return finite


@torch.no_grad()
def ema_update(ema: nn.Module, src: nn.Module, weight: torch.Tensor, finite: torch.Tensor) -> None:
    """`ema`'s parameters move towards `src`'s by `weight` (a device scalar: 0 skips), and its buffers take `src`'s
    where `finite`. Multi-tensor kernels, not launches per parameter."""
    ema_params = list(ema.parameters())
    delta = torch._foreach_sub(list(src.parameters()), ema_params)
    torch._foreach_mul_(delta, weight)
    torch._foreach_add_(ema_params, delta)
    ema_buffers = list(ema.buffers())  # float32, as the networks build them; a lerp by 1 copies exactly
    torch._foreach_lerp_(ema_buffers, list(src.buffers()), [finite.float()] * len(ema_buffers))


class LaggedFlags:
    """A step's flags (non-finite, stop) read on the host one step later. The copy is queued behind the step's work,
    and the host takes it only after queueing the next step, so the GPU always has work while the host waits."""

    def __init__(self, device: torch.device):
        cuda = device.type == "cuda"
        self.buffer = torch.empty(2, pin_memory=cuda)
        self.event = torch.cuda.Event() if cuda else None
        self.step: int | None = None

    def put(self, flags: torch.Tensor, step: int) -> None:
        self.buffer.copy_(flags, non_blocking=True)
        if self.event is not None:
            self.event.record()
        self.step = step

    def take(self) -> tuple[int, bool, bool] | None:
        """(step, non-finite, stop) of the last put, waiting for that step's work only; None if taken already."""
        if self.step is None:
            return None
        if self.event is not None:
            self.event.synchronize()
        step, self.step = self.step, None
        nonfinite, stop = self.buffer.tolist()
        return step, bool(nonfinite), bool(stop)
