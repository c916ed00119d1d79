"""Images/s per CPU core of the preprocess job: 1024x1024 JPEG -> 64x64 and 256x256 PNG shards.

    python -m benchmarks.preprocess_speed [--count 200] [--workers 1]
One worker process measures one core; more workers show the scaling within a task.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from stylegan.data.images import ImageOptions
from stylegan.data.shards import PreprocessConfig, run_task


def make_jpegs(folder: Path, count: int, size: int = 1024) -> None:
    """Photo-like inputs (smooth structure plus grain) at ~quality 90, the typical JPEG a user brings."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).resize((size, size),
                                                                                         Image.BICUBIC)
        grain = rng.normal(0, 8, (size, size, 3))
        img = Image.fromarray(np.clip(np.asarray(base, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
        img.filter(ImageFilter.SMOOTH).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--png-level", type=int, default=ImageOptions.png_level)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        make_jpegs(src, args.count)
        for res in (64, 256):
            cfg = PreprocessConfig([src], Path(tmp) / f"out{res}", ImageOptions(res, png_level=args.png_level),
                                   shard_size=1000, workers=args.workers)
            start = time.perf_counter()
            run_task(cfg)
            seconds = time.perf_counter() - start
            rate = args.count / seconds
            print(f"RESULT 1024 JPEG -> {res} PNG level {args.png_level}: {rate:.1f} images/s with {args.workers} "
                  f"worker(s), {rate / args.workers:.1f} images/s per core")


if __name__ == "__main__":
    main()
