"""Evaluate snapshots: every snapshot of a run that has no result yet (newest first), or one network.

    python -m jobs.evaluate --run runs/textures64 --metrics fid50k_full,swd [--watch]
    python -m jobs.evaluate --checkpoint net.pkl --data data/ffhq256 --metrics fid50k_full
Results: RUN/metric-<name>.jsonl and TensorBoard scalars Metrics/<name> in RUN (a separate event file).
FID/KID need the Inception detector in $STYLEGAN_CACHE (default ~/.cache/stylegan) or --detector; swd needs none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from jobs.cli import run
from stylegan.checkpoint import load_generator
from stylegan.errors import UserError
from stylegan.evaluation import RunEvaluator
from stylegan.metrics.compute import compute_metric, detector_for, parse_metric


def main(args: argparse.Namespace) -> None:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    metrics = [m for m in args.metrics.split(",") if m]
    if args.run:
        run_dir = Path(args.run)
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run directory does not exist")
        RunEvaluator(run_dir, metrics, Path(args.data) if args.data else None, args.detector, device).run(
            args.watch, args.poll)
        return
    if not (args.checkpoint and args.data):
        raise UserError("pass --run RUN_DIR, or --checkpoint PATH with --data DIR")
    G = load_generator(args.checkpoint, device)
    specs = [parse_metric(m) for m in metrics]
    detector = detector_for(specs, args.detector, device)
    for spec in specs:
        value, cached = compute_metric(G, Path(args.data), spec, detector, device)
        print(json.dumps({"checkpoint": args.checkpoint, "metric": spec.name, "value": value,
                          "real_stats_cached": cached}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="training run directory")
    parser.add_argument("--checkpoint", help="one network (.pt, .pkl, .safetensors)")
    parser.add_argument("--data", help="preprocessed dataset (default: the run's config)")
    parser.add_argument("--metrics", default="fid50k_full")
    parser.add_argument("--watch", action="store_true", help="keep evaluating new snapshots until training ends")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between looks for new snapshots")
    parser.add_argument("--detector", help="TorchScript Inception detector (default: $STYLEGAN_CACHE)")
    parser.add_argument("--device")
    run(main, parser)
