"""Where a run's time goes: start-up (building, then the first step: compiling or loading the compile cache), the
steady step, and torch.profiler over steady-state steps, top kernels by device time.

    [torchrun --nproc-per-node N -m] python -m benchmarks.profile_train [--res 256] [--steps 16]
        [--inductor KEY=VALUE ...] [key=value ...]
Every rank prints a RESULT line for start-up (with torch.compile's own timers and cache hits, so a cold and a warm
run show what compiling costs and what the cache saves), one for speed (unprofiled steps), and one for the profile:
the GPU's busy time per step and its share of the wall time, and each phase's busy time and span on the GPU's
timeline (NCCL's kernels count as busy: an all-reduce that waits for a slower rank shows there). Rank 0 also prints
the op table. 32 images per GPU; the compile cache is $STYLEGAN_CACHE's (or TORCHINDUCTOR_CACHE_DIR).
"""

from __future__ import annotations

import argparse
import ast
import functools
import tempfile
import time
from pathlib import Path

import torch
from torch._dynamo.utils import compile_times, counters
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import anchor_config, overlap, sync, synthetic_dataset, timed, union
from stylegan.distributed import init_distributed
from stylegan.train.trainer import Trainer

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                        help="set torch._inductor.config KEY (dotted, e.g. triton.autotune_pointwise=False) first")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    for item in args.inductor:
        key, value = item.split("=", 1)
        *path, name = key.split(".")
        setattr(functools.reduce(getattr, path, torch._inductor.config), name, ast.literal_eval(value))
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, 256)
        env = init_distributed()
        cfg = anchor_config(data, args.res, tmp, f"run_name=rank{env.rank}", *args.overrides, batch=32 * env.world)
        start = time.perf_counter()
        trainer = Trainer(cfg, env)
        built = time.perf_counter() - start
        first = timed(trainer.step, env.device)
        print(f"RESULT startup {args.res} rank {env.rank}/{env.world}: build {built:.1f} s, first step {first:.1f} s; "
              f"{compile_summary()}; {args.inductor}", flush=True)
        if env.is_main:
            print(compile_times())

        for _ in range(15):
            trainer.step()
        steady = timed(lambda: [trainer.step() for _ in range(args.steps)], env.device) / args.steps
        print(f"RESULT speed {args.res} rank {env.rank}/{env.world}: {steady * 1000:.1f} ms/step, "
              f"{steady * 1000 / cfg.batch:.3f} sec/kimg (batch {cfg.batch}); {args.overrides} {args.inductor}",
              flush=True)
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if env.device.type == "cuda" else [])]
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step()
            sync(env.device)
            wall = time.perf_counter() - start
    busy, phases = gpu_busy(prof.events())
    if env.is_main:
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows,
                                        max_name_column_width=60))
    per_step = ", ".join(f"{n} {busy_us / 1000 / args.steps:.1f} / {span_us / 1000 / args.steps:.1f}"
                         for n, (busy_us, span_us) in phases.items())
    print(f"RESULT profile {args.res} rank {env.rank}/{env.world}: wall {wall / args.steps * 1000:.1f} ms/step, "
          f"GPU busy {busy / 1000 / args.steps:.1f} ms/step ({busy / 1e6 / wall:.0%}); per phase and step, GPU busy "
          f"ms / span ms: {per_step}; {args.overrides}", flush=True)


def compile_summary() -> str:
    """torch.compile's accounting of the first step: frames compiled, seconds in Dynamo's and Inductor's timed
    stages (summed; stages nest, so they do not add up), cache hits and misses, and graphs CUDA graphs skipped."""
    names, values = compile_times(repr="csv", aggregate=True)
    timers = sorted(((float(v), n) for n, v in zip(names, values, strict=True)), reverse=True)
    caches = {f"{group}.{k}": v for group in ("inductor", "aot_autograd") for k, v in counters[group].items()
              if "cache" in k or "cudagraph" in k}
    return (f"frames {dict(counters['frames'])}, graphs {counters['stats']['unique_graphs']}; "
            f"timers (s) {', '.join(f'{n} {v:.1f}' for v, n in timers[:12])}; caches {caches}")


def gpu_busy(events: list) -> tuple[float, dict[str, tuple[float, float]]]:
    """The GPU's busy time in us (the union of its kernels' and copies' intervals, so overlapping streams count
    once) and, per phase, (busy time inside the phase's ranges on the GPU timeline, the ranges' length). Summing the
    profiler's per-op device totals instead counts kernels twice: a range's own device time holds its kernels."""
    kernels, ranges = [], {name: [] for name in PHASES}
    for e in events:
        if e.device_type != DeviceType.CUDA:
            continue
        if not e.is_user_annotation:
            kernels.append((e.time_range.start, e.time_range.end))
        elif e.name in ranges:
            ranges[e.name].append((e.time_range.start, e.time_range.end))
    busy = union(kernels)
    return (sum(end - start for start, end in busy),
            {name: (overlap(busy, union(spans)), sum(hi - lo for lo, hi in spans)) for name, spans in ranges.items()})


if __name__ == "__main__":
    main()
