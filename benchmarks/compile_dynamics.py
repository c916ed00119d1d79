"""Does the fast path train like the reference? The same run (seed, data, schedule) four ways: float32 eager
(num_fp16_res=0), the official mixed precision eager, mixed precision with compile=true, and the same replayed as CUDA
graphs (compile_mode=reduce-overhead), on the demo's procedural textures. Prints the G and D losses per tick over the
first `--loss-kimg` and the weight-free metric (SWD) of a snapshot every kimg, side by side as markdown tables, and
draws both as an SVG figure.

    python -m benchmarks.compile_dynamics [--res 64] [--kimg 10] [--tick 0.2] [--plot dynamics.svg] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import anchor_config, synthetic_dataset
from benchmarks.plot import figure
from stylegan.distributed import init_distributed
from stylegan.evaluation import RunEvaluator
from stylegan.rundir import RunDir
from stylegan.train.trainer import Trainer

VARIANTS = {"float32": ["num_fp16_res=0", "compile=false"], "mixed": ["compile=false"],
            "mixed+compile": ["compile=true", "compile_mode=default"],
            "mixed+cudagraphs": ["compile=true", "compile_mode=reduce-overhead"]}


def train(data: Path, outdir: str, name: str, args: argparse.Namespace, extra: list[str]) -> tuple[list, list]:
    """Train one variant with a snapshot every kimg; returns (per-tick stats, SWD per snapshot)."""
    run_dir = Path(outdir) / name
    cfg = anchor_config(data, args.res, outdir, f"run_name={name}", f"kimg={args.kimg}", f"tick_kimg={args.tick}",
                        f"snap={round(1 / args.tick)}", "seed=0", *args.overrides, *extra)
    env = init_distributed()
    trainer = Trainer(cfg, env)
    trainer.run()
    trainer.close()
    RunEvaluator(run_dir, ["swd"], data, None, env).run(watch=False)
    run = RunDir(run_dir)
    return run.ticks(), sorted(run.results("swd"), key=lambda r: r["kimg"])


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--kimg", type=float, default=10.0)
    parser.add_argument("--tick", type=float, default=0.2)
    parser.add_argument("--loss-kimg", type=float, default=2.0, help="the loss table covers this many kimg")
    parser.add_argument("--images", type=int, default=2500, help="textures in the dataset (the demo's count)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--plot", help="write the figure (losses and SWD per kimg) to this SVG file")
    parser.add_argument("overrides", nargs="*", help="extra config key=value for every variant (e.g. the demo's "
                        "small network)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, args.images, textures=True)
        runs = {name: train(data, tmp, name.replace("+", "_"), args, extra) for name, extra in VARIANTS.items()
                if name in args.variants}
    names = list(runs)
    early = {name: [t for t in ticks if t["kimg"] <= args.loss_kimg + 1e-6] for name, (ticks, _) in runs.items()}
    print(table(["kimg"] + [f"G loss {n}" for n in names] + [f"D loss {n}" for n in names],
                [[f"{rows[0]['kimg']:.2f}"] + [f"{r[key]:.3f}" for key in ("loss_G", "loss_D") for r in rows]
                 for rows in zip(*early.values(), strict=True)]))
    print()
    print(table(["kimg"] + [f"SWD x1e3 {n}" for n in names],
                [[f"{rows[0]['kimg']:.2f}"] + [f"{r['value']:.2f}" for r in rows]
                 for rows in zip(*(swds for _, swds in runs.values()), strict=True)]))
    for name, (ticks, _) in runs.items():
        print(f"RESULT {name}: last tick {ticks[-1]['sec_per_kimg']:.2f} sec/kimg")
    if args.plot:
        series = lambda key: {n: [(t["kimg"], t[key]) for t in rows] for n, rows in early.items()}  # noqa: E731
        Path(args.plot).write_text(figure([
            (series("loss_G"), f"G loss per tick, {args.res}x{args.res}", "kimg"),
            (series("loss_D"), f"D loss per tick, {args.res}x{args.res}", "kimg"),
            ({n: [(r["kimg"], r["value"]) for r in swds] for n, (_, swds) in runs.items()},
             "SWD x1e3 of the snapshots (lower is better)", "kimg")]))
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
