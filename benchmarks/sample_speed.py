"""Sampling speed at 256x256: generator alone (images/s on the device) and end to end with PNG files written.

    python -m benchmarks.sample_speed [--seeds 20000] [--batch 256] [--workers 14]
The network is randomly initialised with the anchors' architecture (channel_base 16384, 2 mapping layers):
the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import timed
from stylegan.cluster import available_cpus
from stylegan.networks import Generator
from stylegan.sampling import SampleOptions, seed_ws, synthesize, write_seed_pngs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, available_cpus() - 2))
    parser.add_argument("--compile", action="store_true", help="torch.compile the synthesis network (as --compile "
                        "of jobs.sample)")
    parser.add_argument("--png-level", type=int, default=SampleOptions.png_level)
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    G = Generator(512, 0, 512, args.res, mapping_kwargs=dict(num_layers=2), channel_base=16384).eval().to(device)
    if args.compile:
        G.synthesis.compile(dynamic=False)
    rows = []
    for batch in (1, 64, args.batch):
        opts = SampleOptions(batch=batch, device=str(device), fixed_batch=args.compile)
        n = batch * max(1, 2048 // batch) if batch > 1 else 64
        seeds = list(range(n))
        ws = seed_ws(G, seeds, opts)
        synthesize(G, ws[: batch * 2], opts)  # warm up kernels and cudnn autotuning
        seconds = timed(lambda opts=opts, ws=ws: synthesize(G, ws, opts), device)
        rows.append({"what": f"generator only, batch {batch}", "images_per_s": n / seconds})
    opts = SampleOptions(batch=args.batch, device=str(device), fixed_batch=args.compile, png_level=args.png_level)
    with tempfile.TemporaryDirectory() as tmp:
        write_seed_pngs(G, list(range(args.batch * 2)), Path(tmp) / "warm", opts, workers=args.workers)
        start = time.perf_counter()
        write_seed_pngs(G, list(range(args.seeds)), Path(tmp) / "out", opts, workers=args.workers)
        seconds = time.perf_counter() - start
    rows.append({"what": f"end to end, PNG level {args.png_level} files, batch {args.batch}, {args.workers} writers",
                 "images_per_s": args.seeds / seconds})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    for row in rows:
        row.update(res=args.res, device=name, compiled=args.compile)
        print(f"RESULT sample {args.res}x{args.res}{' compiled' if args.compile else ''} {row['what']}: "
              f"{row['images_per_s']:.0f} images/s ({name})")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
