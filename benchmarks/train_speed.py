"""Steady-state training speed (sec/kimg) and peak GPU memory on one device.

    python -m benchmarks.train_speed [--res 64 256] [--batch 32] [--steps 64] [--compare-float32] [compile=false]
Settings of the official anchors: channel_base 16384, 2 mapping layers, no augmentation, no metrics, real data
read from shards. The step count is a multiple of 16 so the lazy R1 (every 16) and path-length (every 4)
phases run in their true proportion.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import anchor_config, synthetic_dataset, timed
from stylegan.distributed import init_distributed
from stylegan.train.config import auto_r1_gamma
from stylegan.train.trainer import Trainer


def measure(data: Path, res: int, batch: int, steps: int, warmup: int, outdir: str, extra: list[str]) -> dict:
    cfg = anchor_config(data, res, outdir, f"run_name=r{res}", f"r1_gamma={auto_r1_gamma(res, batch)}", *extra,
                        batch=batch)
    env = init_distributed()
    trainer = Trainer(cfg, env)

    def run(n: int) -> None:
        for _ in range(n):
            trainer.step()

    timed(lambda: run(warmup), env.device)
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    seconds = timed(lambda: run(steps), env.device)
    mem = torch.cuda.max_memory_allocated(env.device) / 2 ** 30 if env.device.type == "cuda" else 0.0
    trainer.close()
    return {"res": res, "batch": batch, "steps": steps, "sec_per_kimg": seconds / (steps * batch / 1000),
            "peak_mem_gb": mem, "device": torch.cuda.get_device_name() if env.device.type == "cuda" else "cpu",
            "extra": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--json", help="append results to this JSON-lines file")
    parser.add_argument("--compare-float32", action="store_true", help="also time the float32 eager reference "
                        "(num_fp16_res=0 compile=false) in the same process and print the speed-up")
    parser.add_argument("overrides", nargs="*", help="extra config key=value")
    args = parser.parse_args()
    variants = [("float32 reference", ["num_fp16_res=0", "compile=false"])] if args.compare_float32 else []
    variants.append(("", []))
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.res:
            data = synthetic_dataset(Path(tmp) / f"d{res}", res, args.images)
            rows = [measure(data, res, args.batch, args.steps, args.warmup, tmp,
                            [*args.overrides, *extra, f"run_name=r{res}-{i}"]) for i, (_, extra) in enumerate(variants)]
            for (label, _), row in zip(variants, rows, strict=True):
                print(f"RESULT train {res}x{res} batch {args.batch}: {row['sec_per_kimg']:.2f} sec/kimg, "
                      f"peak {row['peak_mem_gb']:.1f} GB ({row['device']}) {label or ' '.join(args.overrides)}",
                      flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
            if args.compare_float32:
                print(f"RESULT train {res}x{res}: {rows[0]['sec_per_kimg'] / rows[1]['sec_per_kimg']:.2f}x faster "
                      f"than the float32 reference in the same run", flush=True)


if __name__ == "__main__":
    main()
