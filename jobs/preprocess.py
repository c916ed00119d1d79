"""Preprocess image folders or archives into square WebDataset shards (one Slurm array task per call).

    python -m jobs.preprocess --source photos/ more.zip --dest data/textures64 --resolution 64
    sbatch --array=0-7 slurm/preprocess.sh --source ... --dest ... --resolution 256

RGB images come out as NVIDIA's dataset_tool makes them (full decode, centre crop, LANCZOS). Beyond it: EXIF
orientation is applied, transparency is composited on --background, grayscale, palette and 16-bit images become
8-bit RGB, and images are written in a seeded random order (--shuffle-seed) so that every shard is a random sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.cli import run
from stylegan.cluster import array_task, available_cpus
from stylegan.data.images import TRANSFORMS, ImageOptions
from stylegan.data.shards import PreprocessConfig, finalize, load_labels, run_task
from stylegan.data.sources import MAX_FILE_BYTES
from stylegan.errors import UserError


def parse_color(text: str) -> tuple[int, int, int]:
    parts = text.lstrip("#")
    try:
        if "," in parts:
            rgb = tuple(int(v) for v in parts.split(","))
        else:
            rgb = tuple(int(parts[i:i + 2], 16) for i in (0, 2, 4))
    except ValueError:
        raise UserError(f"--background {text!r}: use r,g,b (0-255) or a hex colour like ffffff") from None
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise UserError(f"--background {text!r}: use r,g,b (0-255) or a hex colour like ffffff")
    return rgb


def main(args: argparse.Namespace) -> None:
    dest = Path(args.dest)
    if args.finalize:
        info = finalize(dest, required=True)
        print(f"wrote {dest / 'dataset.json'}: {info['total_images']} images in {len(info['shards'])} shards")
        return
    if not args.source or args.resolution is None:
        raise UserError("--source and --resolution are required (or --finalize alone)")
    r = args.resolution
    if r < 4 or r & (r - 1):
        raise UserError(f"--resolution {r}: must be a power of two >= 4 (e.g. 64, 256, 1024)")
    if args.max_file_mb < 1:
        raise UserError(f"--max-file-mb {args.max_file_mb}: must be at least 1")
    if args.shard_size < 1:
        raise UserError(f"--shard-size {args.shard_size}: must be at least 1")
    task, num_tasks = array_task(args.task_index, args.num_tasks)
    labels_file = Path(args.labels) if args.labels else None
    cfg = PreprocessConfig(
        sources=[Path(s) for s in args.source], dest=dest,
        image=ImageOptions(r, args.transform, args.min_size, args.max_pixels, parse_color(args.background),
                           pixel_hash=args.dedup, png_level=args.png_level),
        shard_size=args.shard_size, labels_file=labels_file, task=task, num_tasks=num_tasks,
        workers=args.workers or available_cpus(), dedup=args.dedup, shuffle_seed=args.shuffle_seed,
        labels=load_labels(labels_file) if labels_file else {}, max_file_bytes=args.max_file_mb << 20)
    run_task(cfg)
    info = finalize(dest)
    if info is not None:
        print(f"all {num_tasks} tasks complete: wrote {dest / 'dataset.json'} ({info['total_images']} images, "
              f"{info['rejected']} rejected, {len(info['exclude'])} duplicates excluded)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", nargs="+", help="folders (recursive), .zip or .tar archives")
    parser.add_argument("--dest", required=True, help="output folder for shards and dataset.json")
    parser.add_argument("--resolution", type=int, help="output side length, a power of two")
    parser.add_argument("--transform", choices=TRANSFORMS, default="center-crop", help="center-crop and stretch "
                        "as NVIDIA's dataset_tool; pad: the whole image on --background; center-crop-wide: a 2:1 band "
                        "through the centre on --background (dataset_tool's mode of that name differs)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    parser.add_argument("--shuffle-seed", type=int, default=0, help="seed of the random order the images are "
                        "written in (each shard a random sample, so batches mix classes as NVIDIA's sampler does)")
    parser.add_argument("--labels", help="JSON: {'labels': [[relative path, int], ...]} or {path: int}")
    parser.add_argument("--task-index", type=int, help="default: $SLURM_ARRAY_TASK_ID, else 0")
    parser.add_argument("--num-tasks", type=int, help="default: $SLURM_ARRAY_TASK_COUNT, else 1")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default: CPUs available)")
    parser.add_argument("--min-size", type=int, default=0, help="reject images whose shorter side is smaller")
    parser.add_argument("--max-pixels", type=int, default=16384 * 16384, help="reject larger declared sizes")
    parser.add_argument("--max-file-mb", type=int, default=MAX_FILE_BYTES >> 20, help="reject larger files and "
                        "archive members (never read whole: bounds memory against zip bombs)")
    parser.add_argument("--background", default="255,255,255", help="colour behind transparency and padding")
    parser.add_argument("--png-level", type=int, default=0, choices=range(10), metavar="0-9",
                        help="PNG zlib level: 0 reads and writes fastest, 9 is smallest (all lossless)")
    parser.add_argument("--dedup", action="store_true", help="exclude exact pixel duplicates (first one kept)")
    parser.add_argument("--finalize", action="store_true", help="only write dataset.json from complete tasks")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
