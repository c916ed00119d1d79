"""Generate images from a trained network: per-seed PNGs, seed grids, latent walks, style-mixing figures.

    python -m jobs.sample --network net.pt --outdir out --seeds 0-49999
    python -m jobs.sample --network net.pkl --outdir out --grid 8x8 --seeds 0-127 --grid-labels
    python -m jobs.sample --network net.pt --outdir out --walk 200,1000,2500,4000,200 --frames 10 --trunc 0.8
    python -m jobs.sample --network net.pt --outdir out --style-mix 85,100,75 55,821,1789 --layers 0-6
    python -m jobs.sample --network net.pt --outdir out --walk proj/a.npz,proj/b.npz,proj/a.npz   (jobs.project)
NVIDIA's spellings work too: --checkpoint for --network, --truncation-psi for --trunc.
Per-seed PNGs are split over Slurm array tasks (or --task-index/--num-tasks) and over torchrun ranks within a
task; a grid, walk or style-mixing figure is written once, by task 0 rank 0 (the other tasks have nothing to do).
Per-seed files: <outdir>/<seed // 1000:04d>/seed<seed:04d>.png, plus manifest-<task>.jsonl.
"""

from __future__ import annotations

import argparse
import time

import torch

from jobs.cli import run
from stylegan.cluster import array_task, available_cpus, torchrun_rank
from stylegan.errors import UserError
from stylegan.fileio import output_dir, sha256_file
from stylegan.formats.checkpoint import load_generator
from stylegan.generate import compile_synthesis
from stylegan.progress import process_age
from stylegan.rundir import network_path
from stylegan.sampling import (
    SampleOptions,
    parse_grid,
    parse_keys,
    parse_layers,
    sample_seeds,
    start_writer_server,
    write_grids,
    write_style_mix,
    write_walk,
)
from stylegan.seeds import parse_seeds


def main(args: argparse.Namespace) -> None:
    modes = [m for m in ("seeds", "walk", "style_mix") if getattr(args, m)]
    if args.grid and not args.seeds:
        raise UserError("--grid needs --seeds")
    if len(modes) != 1:
        raise UserError("choose one of --seeds (with optional --grid), --walk, --style-mix")
    if args.trunc_cutoff is not None and args.trunc_cutoff < 0:
        raise UserError("--trunc-cutoff must be >= 0")
    if args.frames is not None and not args.walk:
        # NVIDIA's gen_video.py walks through --seeds; here --seeds writes one PNG per seed
        raise UserError(f"--frames: frames belong to a latent walk, whose seeds --walk takes: write --walk "
                        f"{args.seeds or '200,1000,2500,4000,200'} --frames {args.frames} (NVIDIA's gen_video.py "
                        "spelling, --seeds with --frames, would write per-seed PNGs here)")
    grid = parse_grid(args.grid) if args.grid else None
    seeds = parse_seeds(args.seeds) if args.seeds else parse_keys(args.walk or args.style_mix[0])
    if args.seeds and not grid:
        seeds = list(dict.fromkeys(seeds))  # one file per seed: a seed listed twice is written once
    task, num_tasks = array_task(args.task_index, args.num_tasks)
    rank, world, _ = torchrun_rank()
    if (grid or not args.seeds) and (task, rank) != (0, 0):
        print(f"task {task} rank {rank}: nothing to do (grids, walks and style mixing are written by task 0 rank 0; "
              "only per-seed PNGs are split)")
        return
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = SampleOptions(psi=args.trunc, cutoff=args.trunc_cutoff, noise_mode=args.noise_mode,
                         class_idx=getattr(args, "class"), batch=args.batch, device=device,
                         fixed_batch=args.compile, png_level=args.png_level)
    outdir = output_dir(args.outdir, "--outdir")
    network = network_path(args.checkpoint, "--network")
    started, age = time.perf_counter(), process_age()
    if args.seeds and not grid and args.workers:
        start_writer_server()  # its imports overlap the network's loading and compiling
    G = load_generator(network, device)
    loaded = time.perf_counter()
    cache = compile_synthesis(G, opts.batch, opts.noise_mode) if args.compile else None
    print("start-up: " + (f"{age:.1f} s Python and imports, " if age is not None else "")
          + f"{loaded - started:.1f} s loading the network"
          + (f", {time.perf_counter() - loaded:.1f} s compiling (torch.compile; later jobs load what it compiled "
             f"from {cache})" if cache else ""), flush=True)
    if grid:
        write_grids(G, seeds, *grid, outdir, opts, labels=args.grid_labels)
    elif args.seeds:
        sample_seeds(G, seeds, outdir, opts, sha256_file(network), task, num_tasks, rank, world, args.workers)
    elif args.walk:
        write_walk(G, seeds, args.frames or 10, args.space, outdir, opts, fps=args.fps)
    else:
        write_style_mix(G, seeds, parse_keys(args.style_mix[1]), parse_layers(args.layers), outdir, opts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--network", "--checkpoint", dest="checkpoint", required=True,
                        help="our .pt, an exported .safetensors, an NVIDIA .pkl, or a run folder (its newest snapshot)")
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--seeds", help="e.g. 0-49999 or 0,5,10-19")
    parser.add_argument("--grid", help="COLSxROWS contact sheets of --seeds (several sheets when needed)")
    parser.add_argument("--grid-labels", action="store_true", help="draw each seed number under its cell")
    parser.add_argument("--walk", help="seeds to walk through, e.g. 200,1000,2500,4000,200; projected w files "
                        "(jobs.project's .npz) too, e.g. proj/a.npz,200,proj/b.npz")
    parser.add_argument("--frames", type=int, help="frames per walk segment (default 10)")
    parser.add_argument("--space", choices=("w", "z"), default="w", help="lerp in W or slerp in Z")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--style-mix", nargs=2, metavar=("ROW_SEEDS", "COL_SEEDS"),
                        help="seeds or projected w files (.npz) of the rows and of the columns")
    parser.add_argument("--layers", default="0-6", help="style layers taken from the column seeds")
    parser.add_argument("--trunc", "--truncation-psi", dest="trunc", type=float, default=1.0,
                        help="truncation psi (NVIDIA's --truncation-psi is the same flag)")
    parser.add_argument("--trunc-cutoff", "--truncation-cutoff", dest="trunc_cutoff", type=int,
                        help="truncate only the first N style layers (default: all for StyleGAN2, 8 for StyleGAN "
                             "(2018) networks, as NVIDIA's)")
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
    return parser


if __name__ == "__main__":
    run(main, build_parser())
