"""Does the fast path train like the reference? The same run (seed, data, schedule) three ways: float32 eager
(num_fp16_res=0), the official mixed precision eager, and mixed precision with compile=true. Prints the G and D
losses per tick side by side as a markdown table.

    python -m benchmarks.compile_dynamics [--res 64] [--kimg 2] [--tick 0.2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import anchor_config, synthetic_dataset
from stylegan.distributed import init_distributed
from stylegan.training import Trainer

VARIANTS = {"float32": ["num_fp16_res=0", "compile=false"], "mixed": ["compile=false"],
            "mixed+compile": ["compile=true"]}


def train(data: Path, outdir: str, name: str, args: argparse.Namespace, extra: list[str]) -> list[dict]:
    cfg = anchor_config(data, args.res, outdir, f"run_name={name}", f"kimg={args.kimg}", f"tick_kimg={args.tick}",
                        "snap=100000", "seed=0", *extra)
    trainer = Trainer(cfg, init_distributed())
    trainer.run()
    trainer.close()
    return [json.loads(line) for line in (Path(outdir) / name / "stats.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--kimg", type=float, default=2.0)
    parser.add_argument("--tick", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, 1024)
        runs = {name: train(data, tmp, name.replace("+", "_"), args, extra) for name, extra in VARIANTS.items()}
    names = list(runs)
    print("| kimg | " + " | ".join(f"G loss {n}" for n in names) + " | " + " | ".join(f"D loss {n}" for n in names)
          + " |")
    print("| --- " * (1 + 2 * len(names)) + "|")
    for rows in zip(*runs.values(), strict=True):
        print(f"| {rows[0]['kimg']:.2f} | " + " | ".join(f"{r['loss_G']:.3f}" for r in rows) + " | "
              + " | ".join(f"{r['loss_D']:.3f}" for r in rows) + " |")
    for name, rows in runs.items():
        print(f"RESULT {name}: last tick {rows[-1]['sec_per_kimg']:.2f} sec/kimg")


if __name__ == "__main__":
    main()
