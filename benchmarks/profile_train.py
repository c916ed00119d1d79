"""Where a training step's time goes: torch.profiler over steady-state steps, top kernels by device time.

    python -m benchmarks.profile_train [--res 256] [--steps 16]
Prints the op table and GPU busy % (device time / wall time).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import anchor_config, synthetic_dataset
from stylegan.distributed import init_distributed
from stylegan.training import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, 256)
        cfg = anchor_config(data, args.res, tmp, *args.overrides)
        env = init_distributed()
        trainer = Trainer(cfg, env)

        for _ in range(16):
            trainer.step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step()
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events)
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
    per_step = device_us / 1000 / args.steps
    print(f"RESULT profile {args.res}: wall {wall / args.steps * 1000:.1f} ms/step, device {per_step:.1f} ms/step, "
          f"busy {device_us / 1e6 / wall:.0%}, {args.overrides}")


if __name__ == "__main__":
    main()
