"""Images/s the training reader delivers from 256x256 shards (decode + batch), per node.

    python -m benchmarks.reader_speed [--workers 8] [--images 4000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import synthetic_dataset
from stylegan.data.images import ImageOptions
from stylegan.data.reader import make_loader, training_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--png-level", type=int, default=ImageOptions.png_level, help="of the shards' PNGs")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, args.images, args.png_level)
        loader = iter(make_loader(training_pipeline(data, xflip=True), batch_size=32, workers=args.workers,
                                  drop_last=True))
        for _ in range(20):
            next(loader)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(loader)
        rate = args.batches * 32 / (time.perf_counter() - start)
    print(f"RESULT reader {args.res}x{args.res}, PNG level {args.png_level}, {args.workers} workers: {rate:.0f} "
          "images/s")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"res": args.res, "workers": args.workers, "png_level": args.png_level,
                                "images_per_s": rate}) + "\n")


if __name__ == "__main__":
    main()
