"""Evaluate snapshots: every snapshot of a run that has no result yet (newest first), or one network.

    python -m jobs.evaluate --run runs/textures64 --metrics fid50k_full,swd [--watch] [--latest | --every N]
    python -m jobs.evaluate --checkpoint net.pkl --data data/ffhq256 --metrics fid50k_full
Results: RUN/metric-<name>.jsonl and TensorBoard scalars Metrics/<name> in RUN (a separate event file).
FID/KID need the Inception detector in $STYLEGAN_CACHE (default ~/.cache/stylegan) or --detector, precision/recall
and path length NVIDIA's VGG16 there or --vgg (fetch them with `python -m jobs.fetch_weights`); swd and diversity
need none. Under torchrun every GPU generates and extracts its share.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from jobs.cli import run
from stylegan.distributed import init_distributed, shutdown
from stylegan.errors import UserError
from stylegan.evaluation import RunEvaluator, wait_for_run
from stylegan.formats.checkpoint import load_generator
from stylegan.generate import compile_synthesis
from stylegan.metrics.compute import compute_metric, detector_for, parse_metric
from stylegan.rundir import network_path


def main(args: argparse.Namespace) -> None:
    metrics = [m for m in args.metrics.split(",") if m]
    if args.run and not args.watch and not Path(args.run).is_dir():
        raise UserError(f"{args.run}: run directory does not exist")
    if not args.run and not (args.checkpoint and args.data):
        raise UserError("pass --run RUN_DIR, or --checkpoint PATH with --data DIR")
    env = init_distributed()
    if args.device:
        env = dataclasses.replace(env, device=torch.device(args.device))
    batch = args.batch or (256 if env.device.type == "cuda" else 32)
    if env.device.type == "cuda":  # every batch has one shape: cuDNN's fastest kernels for it, found once
        torch.backends.cudnn.benchmark = True
    try:
        if args.run:
            if args.watch:
                wait_for_run(Path(args.run), args.poll)
            RunEvaluator(Path(args.run), metrics, Path(args.data) if args.data else None, args.detector, env,
                         batch, args.compile, every=args.every, latest=args.latest, vgg_path=args.vgg
                         ).run(args.watch, args.poll)
            return
        G = load_generator(network_path(args.checkpoint, "--network"), env.device)
        if args.compile:
            compile_synthesis(G)
        specs = [parse_metric(m) for m in metrics]
        detectors = detector_for(specs, args.detector, args.vgg, env.device)
        for spec in specs:
            values, cached = compute_metric(G, Path(args.data), spec, detectors.get(spec.detector), env.device,
                                            env.rank, env.world, batch, mirror=args.mirror)
            for name, value in values.items() if env.is_main else ():
                print(json.dumps({"checkpoint": args.checkpoint, "metric": name, "value": value,
                                  "real_stats_cached": cached}), flush=True)
    finally:
        shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="training run directory")
    parser.add_argument("--network", "--checkpoint", dest="checkpoint",
                        help="one network (.pt, .pkl, .safetensors, or a run folder: its newest snapshot)")
    parser.add_argument("--data", help="preprocessed dataset (default: the run's config)")
    parser.add_argument("--metrics", default="fid50k_full", help="comma-separated: fid50k_full, kid50k_full, "
                        "fid<N>k, kid<N>k, pr50k3_full, ppl2_wend, swd, diversity")
    parser.add_argument("--mirror", action="store_true", help="with --network: FID/KID reals include their x-flips, "
                        "as NVIDIA's metrics for a network trained with --mirror=1 (a --run follows its config)")
    parser.add_argument("--watch", action="store_true", help="keep evaluating new snapshots until training ends "
                        "(waits for a run that has not started yet)")
    parser.add_argument("--poll", type=float, default=30.0, help="seconds between looks for new snapshots")
    parser.add_argument("--every", type=int, default=1, help="score every Nth snapshot of the run, counted from its "
                        "first (default: all)")
    parser.add_argument("--latest", action="store_true", help="score only the newest snapshot (with --watch: each "
                        "new one as it appears, skipping older ones not scored yet)")
    parser.add_argument("--detector", help="Inception weights: NVIDIA's TorchScript .pt or pytorch-fid's .pth "
                        "(default: found in $STYLEGAN_CACHE)")
    parser.add_argument("--vgg", help="NVIDIA's vgg16.pt, for pr50k3_full and ppl2_wend (default: found in "
                        "$STYLEGAN_CACHE)")
    parser.add_argument("--device", help="default: this rank's GPU when there is one, else cpu")
    parser.add_argument("--batch", type=int, help="images per generator and detector call (default 256 on GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the synthesis network: faster "
                        "generation for 50k-image metrics on a GPU after compiling (benchmarks/RESULTS.md)")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
