"""Where a training step's time goes: torch.profiler over steady-state steps, top kernels by device time.

    [torchrun --nproc-per-node N -m] python -m benchmarks.profile_train [--res 256] [--steps 16] [key=value ...]
Rank 0 prints the op table; every rank prints its GPU busy % (device time / wall time) and each phase's device
time per step (kernels the phase launched, NCCL's included: an all-reduce that waits for a slower rank counts).
32 images per GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import anchor_config, sync, synthetic_dataset
from stylegan.distributed import init_distributed
from stylegan.training import Trainer

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, 256)
        env = init_distributed()
        cfg = anchor_config(data, args.res, tmp, f"run_name=rank{env.rank}", *args.overrides, batch=32 * env.world)
        trainer = Trainer(cfg, env)

        for _ in range(16):
            trainer.step()
        sync(env.device)
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if env.device.type == "cuda" else [])]
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step()
            sync(env.device)
            wall = time.perf_counter() - start
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events)
    if env.is_main:
        print(events.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
    print(f"RESULT profile {args.res} rank {env.rank}/{env.world}: wall {wall / args.steps * 1000:.1f} ms/step, "
          f"device {device_us / 1000 / args.steps:.1f} ms/step, busy {device_us / 1e6 / wall:.0%}; per phase and "
          f"step, kernel ms / GPU span ms: {phase_times(prof.events(), args.steps)}; {args.overrides}", flush=True)


def phase_times(events: list, steps: int) -> str:
    """Each phase's kernel time (the kernels its host range launched) and its span on the GPU's timeline (first
    kernel to last, idle gaps included, where the profiler records the range on the GPU), per step."""
    kernels = {name: 0.0 for name in PHASES}
    spans = dict(kernels)
    for e in events:
        if e.name in PHASES and e.device_type == DeviceType.CPU:
            kernels[e.name] += e.device_time_total / 1000 / steps
        elif e.name in PHASES:
            spans[e.name] += e.time_range.elapsed_us() / 1000 / steps
    return ", ".join(f"{n} {kernels[n]:.1f} / {spans[n]:.1f}" for n in PHASES)


if __name__ == "__main__":
    main()
