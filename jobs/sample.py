"""Generate images from a trained network: per-seed PNGs, seed grids, latent walks, style-mixing figures.

    python -m jobs.sample --checkpoint net.pt --outdir out --seeds 0-49999
    python -m jobs.sample --checkpoint net.pkl --outdir out --grid 8x8 --seeds 0-127 --grid-labels
    python -m jobs.sample --checkpoint net.pt --outdir out --walk 200,1000,2500,4000,200 --frames 10 --trunc 0.8
    python -m jobs.sample --checkpoint net.pt --outdir out --style-mix 85,100,75 55,821,1789 --layers 0-6
Seeds are split over Slurm array tasks (or --task-index/--num-tasks) and over torchrun ranks within a task.
Per-seed files: <outdir>/<seed // 1000:04d>/seed<seed:04d>.png, plus manifest-<task>.jsonl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from jobs.cli import run
from stylegan.checkpoint import load_generator
from stylegan.cluster import array_task, available_cpus, task_range, torchrun_rank
from stylegan.errors import UserError
from stylegan.fileio import sha256_file
from stylegan.sampling import (
    SampleOptions,
    save_png,
    seed_images,
    style_mix_figure,
    synthesize,
    tile,
    walk_ws,
    write_animation,
    write_manifest,
    write_seed_pngs,
)
from stylegan.seeds import parse_seeds


def parse_grid(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--grid {text!r}: use COLSxROWS, e.g. 8x8") from None
    if cols < 1 or rows < 1 or cols * rows > 4096:
        raise UserError(f"--grid {text!r}: columns and rows must be >= 1 and at most 4096 cells")
    return cols, rows


def run_seeds(G, seeds: list[int], args: argparse.Namespace, opts: SampleOptions, outdir: Path) -> None:
    task, num_tasks = array_task(args.task_index, args.num_tasks)
    rank, world, _ = torchrun_rank()
    start, end = task_range(len(seeds), task, num_tasks)
    mine = seeds[start:end][rank::world]
    sha = sha256_file(args.checkpoint)
    write_seed_pngs(G, mine, outdir, opts, workers=args.workers, desc=f"sample task {task}/{num_tasks}")
    name = f"manifest-{task:04d}.jsonl" if world == 1 else f"manifest-{task:04d}-rank{rank}.jsonl"
    write_manifest(outdir / name, mine, outdir, sha, opts)
    print(f"wrote {len(mine)} seeds of {len(seeds)} to {outdir} (task {task}/{num_tasks}, rank {rank}/{world})")


def run_grid(G, seeds: list[int], args: argparse.Namespace, opts: SampleOptions, outdir: Path) -> None:
    cols, rows = parse_grid(args.grid)
    per_sheet = cols * rows
    images = [img for _, batch in seed_images(G, seeds, opts) for img in batch]
    for n, i in enumerate(range(0, len(seeds), per_sheet)):
        chunk = seeds[i:i + per_sheet]
        captions = [str(s) for s in chunk] if args.grid_labels else None
        save_png(tile(np.stack(images[i:i + per_sheet]), cols, rows, captions), outdir / f"grid{n:04d}.png")
    print(f"wrote {-(-len(seeds) // per_sheet)} grid sheet(s) of {cols}x{rows} to {outdir}")


def main(args: argparse.Namespace) -> None:
    modes = [m for m in ("seeds", "walk", "style_mix") if getattr(args, m)]
    if args.grid and not args.seeds:
        raise UserError("--grid needs --seeds")
    if len(modes) != 1:
        raise UserError("choose one of --seeds (with optional --grid), --walk, --style-mix")
    if args.trunc_cutoff is not None and args.trunc_cutoff < 0:
        raise UserError("--trunc-cutoff must be >= 0")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = SampleOptions(psi=args.trunc, cutoff=args.trunc_cutoff, noise_mode=args.noise_mode,
                         class_idx=getattr(args, "class"), batch=args.batch, device=device,
                         fixed_batch=args.compile, png_level=args.png_level)
    outdir = Path(args.outdir)
    G = load_generator(args.checkpoint, device)
    if args.compile:
        G.synthesis.compile(dynamic=False)
    if args.seeds and args.grid:
        run_grid(G, parse_seeds(args.seeds), args, opts, outdir)
    elif args.seeds:
        run_seeds(G, parse_seeds(args.seeds), args, opts, outdir)
    elif args.walk:
        frames = synthesize(G, walk_ws(G, parse_seeds(args.walk), args.frames, args.space, opts), opts)
        for i, frame in enumerate(frames):
            save_png(frame, outdir / "walk" / f"frame{i:04d}.png")
        written = write_animation(frames, outdir, fps=args.fps)
        print(f"wrote {len(frames)} frames to {outdir / 'walk'} and {', '.join(p.name for p in written)}")
    else:
        rows, cols = (parse_seeds(s) for s in args.style_mix)
        figure = style_mix_figure(G, rows, cols, parse_seeds(args.layers), opts)
        save_png(figure, outdir / "style-mix.png")
        print(f"wrote {outdir / 'style-mix.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="our .pt, an exported .safetensors or an NVIDIA .pkl")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--seeds", help="e.g. 0-49999 or 0,5,10-19")
    parser.add_argument("--grid", help="COLSxROWS contact sheets of --seeds (several sheets when needed)")
    parser.add_argument("--grid-labels", action="store_true", help="draw each seed number under its cell")
    parser.add_argument("--walk", help="seeds to walk through, e.g. 200,1000,2500,4000,200")
    parser.add_argument("--frames", type=int, default=10, help="frames per walk segment")
    parser.add_argument("--space", choices=("w", "z"), default="w", help="lerp in W or slerp in Z")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--style-mix", nargs=2, metavar=("ROW_SEEDS", "COL_SEEDS"))
    parser.add_argument("--layers", default="0-6", help="style layers taken from the column seeds")
    parser.add_argument("--trunc", type=float, default=1.0, help="truncation psi")
    parser.add_argument("--trunc-cutoff", type=int, help="truncate only the first N style layers")
    parser.add_argument("--noise-mode", choices=("const", "random", "none"), default="const")
    parser.add_argument("--class", type=int, help="class index for conditional networks")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the synthesis network: about 3x the images/s on a GPU after a minute of "
                             "compiling (benchmarks/RESULTS.md); worth it for thousands of seeds")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--png-level", type=int, default=1, choices=range(10), metavar="0-9",
                        help="zlib level of per-seed PNGs: 0 writes ~10x faster, ~2x larger files")
    parser.add_argument("--workers", type=int, default=available_cpus(), help="PNG writer processes")
    parser.add_argument("--task-index", type=int, help="default: $SLURM_ARRAY_TASK_ID, else 0")
    parser.add_argument("--num-tasks", type=int, help="default: $SLURM_ARRAY_TASK_COUNT, else 1")
    run(main, parser)
