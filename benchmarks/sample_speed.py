"""Sampling speed at 256x256: generator alone (images/s on the device), end to end with PNG files written, and
the whole `jobs.sample` job timed from its launch (imports, loading, compiling from the cache the runs before it
filled, writers, every seed).

    python -m benchmarks.sample_speed [--seeds 20000] [--batch 256] [--workers 14]
The network is randomly initialised with the anchors' architecture (channel_base 16384, 2 mapping layers):
the cost does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import timed
from stylegan.cluster import available_cpus
from stylegan.formats.checkpoint import save_checkpoint
from stylegan.generate import compile_synthesis, images_from_ws
from stylegan.models.stylegan2 import Generator
from stylegan.sampling import (
    RING_SLOTS,
    SampleOptions,
    attach_ring,
    part_starts,
    seed_ws,
    start_writer_server,
    write_part,
    write_seed_pngs,
)

G_KWARGS = dict(z_dim=512, c_dim=0, w_dim=512, mapping_kwargs=dict(num_layers=2), channel_base=16384)


def generate_on_device(G: Generator, ws: torch.Tensor, opts: SampleOptions) -> None:
    """The device's share alone, as the official G-only figures: uint8 batches that stay on the device."""
    for i in range(0, len(ws), opts.batch):
        images_from_ws(G, ws[i:i + opts.batch], opts.noise_mode, opts.batch if opts.fixed_batch else None)


def writers_only(ring: torch.Tensor, batches: int, outdir: Path, workers: int, png_level: int) -> float:
    """The writers' share: PNG files from batches already in the ring. Returns images/s."""
    batch = ring.shape[1]
    starts, step = part_starts(batch, workers)
    with start_writer_server().Pool(workers, initializer=attach_ring, initargs=(ring,)) as pool:
        pool.apply_async(write_part, (0, 0, [], png_level)).get()  # workers started
        start = time.perf_counter()
        jobs = [pool.apply_async(write_part, (b % RING_SLOTS, i, [str(outdir / f"{b}-{j}.png") for j in
                                                                 range(i, min(i + step, batch))], png_level))
                for b in range(batches) for i in starts]
        total = sum(j.get() for j in jobs)
        return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=max(1, available_cpus() - 2))
    parser.add_argument("--compile", action="store_true", help="torch.compile the synthesis network (as --compile "
                        "of jobs.sample)")
    parser.add_argument("--png-level", type=int, default=SampleOptions.png_level)
    parser.add_argument("--outdir", help="where the PNGs go (default: a temp folder on local disk); /dev/shm takes "
                        "the storage out of the measurement")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # torch's own TF32 and cuDNN settings, as jobs.sample runs: the figures are the job's, and the job below can load
    # what this process compiled
    G = Generator(img_resolution=args.res, **G_KWARGS).eval().to(device)
    if args.compile:
        compile_synthesis(G)  # as the job does, into the same cache, which then serves the job below
    rows = []
    for batch in (1, 64, args.batch):
        opts = SampleOptions(batch=batch, device=str(device), fixed_batch=args.compile)
        n = batch * max(1, 2048 // batch) if batch > 1 else 64
        ws = seed_ws(G, list(range(n)), opts)
        generate_on_device(G, ws, opts)  # warm up: compiling, cuDNN's first calls
        seconds = timed(lambda opts=opts, ws=ws: generate_on_device(G, ws, opts), device)
        rows.append({"what": f"generator only (uint8 images left on the device), batch {batch}",
                     "images_per_s": n / seconds})
    opts = SampleOptions(batch=args.batch, device=str(device), fixed_batch=args.compile, png_level=args.png_level)
    ring = torch.zeros((RING_SLOTS, args.batch, args.res, args.res, 3), dtype=torch.uint8).share_memory_()
    with tempfile.TemporaryDirectory(dir=args.outdir) as tmp:
        rate = writers_only(ring, max(1, args.seeds // 4 // args.batch), Path(tmp), args.workers, args.png_level)
        rows.append({"what": f"writers only, PNG level {args.png_level}, {args.workers} writers", "images_per_s": rate})
    where = f"PNG level {args.png_level} files in {args.outdir or 'a temp folder'}, batch {args.batch}, " \
            f"{args.workers} writers"
    with tempfile.TemporaryDirectory(dir=args.outdir) as tmp:
        write_seed_pngs(G, list(range(args.batch * 2)), Path(tmp) / "warm", opts, workers=args.workers)
        seconds = {}
        for n in (args.seeds // 4, args.seeds):  # two sizes: the difference removes the writers' start-up
            start = time.perf_counter()
            write_seed_pngs(G, list(range(n)), Path(tmp) / f"out{n}", opts, workers=args.workers)
            seconds[n] = time.perf_counter() - start
    with tempfile.TemporaryDirectory(dir=args.outdir) as tmp:  # the calls' files gone: /dev/shm holds one job's
        network = Path(tmp) / "net.pt"
        save_checkpoint(network, {"format": 1, "G_kwargs": {**G_KWARGS, "img_resolution": args.res},
                                  "G_ema": G.state_dict()})
        cmd = [sys.executable, "-m", "jobs.sample", "--network", str(network), "--outdir", str(Path(tmp) / "job"),
               "--seeds", f"0-{args.seeds - 1}", "--batch", str(args.batch), "--png-level", str(args.png_level),
               "--workers", str(args.workers), "--device", str(device), *(["--compile"] if args.compile else [])]
        start = time.perf_counter()
        done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
        job = time.perf_counter() - start
    for line in done.stdout.splitlines():  # its start-up: Python and imports, loading (CUDA's start), compiling
        if line.startswith(("start-up", "sample")):
            print(f"the job: {line}")
    small, large = sorted(seconds)
    marginal = (large - small) / (seconds[large] - seconds[small])
    rows.append({"what": f"end to end, {args.seeds} seeds, {where}", "images_per_s": args.seeds / seconds[large]})
    rows.append({"what": f"end to end, marginal rate between {small} and {large} seeds (start-up "
                         f"{seconds[large] - large / marginal:.1f} s excluded), {where}", "images_per_s": marginal})
    rows.append({"what": f"the whole job, `jobs.sample` timed from its launch, {args.seeds} seeds, {where}",
                 "images_per_s": args.seeds / job})
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
