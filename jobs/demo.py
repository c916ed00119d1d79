"""The whole suite on an embedded texture dataset, no data, weights or cluster needed:

    python -m jobs.demo [--outdir demo-out] [--kimg K]
textures -> preprocess (2 array tasks) -> train a small 32x32 StyleGAN2 -> evaluate every snapshot (SWD; FID too
when an Inception detector is in the cache) -> seed grid, 100 seeds, latent walk. Every stage runs as a job through
the submitit local executor, the same launcher code that submits to Slurm.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import torch

from jobs.cli import run
from jobs.submit import make_executor, submit
from stylegan.cluster import StopRequest
from stylegan.errors import UserError
from stylegan.metrics.detector import cached_detector
from stylegan.rundir import RunDir

RES = 32


def train_overrides(data: Path, outdir: Path, kimg: float, gpu: bool) -> list[str]:
    small = ["z_dim=128", "w_dim=128", "map_layers=2", "channel_base=2048", "channel_max=128", "batch=16",
             "mbstd_group=4", "num_fp16_res=0"]  # r1_gamma: the config's automatic value for this batch
    # On a CPU a snapshot every second kimg keeps the evaluation stage (about 18 s per snapshot on 2 cores) short.
    tick, snap = (1, 2) if not gpu else (10, 1)
    return [f"data={data}", f"outdir={outdir}", "run_name=demo", f"resolution={RES}", f"kimg={kimg}",
            f"tick_kimg={tick}", f"snap={snap}", "aug=ada", "workers=1", "resume=auto", *small]


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def stop_jobs(jobs: list, wait_s: float = 300.0) -> None:
    """Stop a stage for good. submitit's local controller requeues a training that stopped on a signal, so it goes
    first (SIGKILL: nothing is left to requeue); then its tasks get SIGTERM (training writes a snapshot, the other
    jobs' files are atomic) and are waited for, so none outlives the demo."""
    tasks = []
    for job in jobs:
        controller = getattr(job, "_process", None)  # submitit's LocalJob keeps its controller's Popen there
        if controller is not None and controller.poll() is None:
            tasks += child_pids(controller.pid)
            controller.kill()
            controller.wait()
    for pid in tasks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + wait_s
    while any(Path(f"/proc/{pid}").exists() for pid in tasks) and time.time() < deadline:
        time.sleep(0.2)


def run_stage(executor, job: str, argv: list[str], array: int, log: Path | None, stop: StopRequest) -> bool:
    """Submit a stage and wait for it, echoing each new line of `log`, indented. The stage's processes ignore
    SIGINT (an ignored signal is inherited), so a Ctrl-C on the terminal reaches the demo alone, which stops them
    in order. Returns False when it stopped them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        jobs = submit(executor, job, argv, array)
    finally:
        signal.signal(signal.SIGINT, previous)
    shown = 0
    while True:
        finished = all(j.done() for j in jobs)
        lines = log.read_text().splitlines() if log is not None and log.is_file() else []
        for line in lines[shown:]:
            print(f"    {line}", flush=True)
        shown = len(lines)
        if stop.signum is not None:
            stop_jobs(jobs)
            return False
        if finished:
            break
        time.sleep(1)
    for j in jobs:
        j.result()
    return True


def main(args: argparse.Namespace) -> None:
    gpu = torch.cuda.is_available()
    kimg = args.kimg if args.kimg is not None else (100.0 if gpu else 6.0)
    if kimg <= 0:
        raise UserError("--kimg must be positive")
    out = Path(args.outdir).resolve()
    executor = make_executor(out / "submitit", "local", cpus=2, time_min=600, name="demo")
    textures, data, runs, samples = out / "textures", out / "data", out / "runs", out / "samples"
    run_dir = runs / "demo"
    metrics = "swd,fid2k" if cached_detector() else "swd"
    run = RunDir(run_dir)
    snapshot = run.latest
    stages = [
        ("make textures", "make_textures", lambda: ["--count", str(args.count), "--resolution", "64",
                                                    "--dest", str(textures)], 0),
        ("preprocess (2 tasks)", "preprocess", lambda: ["--source", str(textures), "--dest", str(data),
                                                        "--resolution", str(RES), "--workers", "1"], 2),
        (f"train {kimg:g} kimg on {'GPU' if gpu else 'CPU'} (progress: {run.log})", "train",
         lambda: train_overrides(data, runs, kimg, gpu), 0),
        (f"evaluate snapshots ({metrics})", "evaluate", lambda: ["--run", str(run_dir), "--metrics", metrics], 0),
        ("seed grid", "sample", lambda: ["--checkpoint", str(snapshot()), "--outdir", str(samples / "grid"),
                                         "--grid", "8x8", "--seeds", "0-63", "--grid-labels", "--workers", "1"], 0),
        ("100 seeds", "sample", lambda: ["--checkpoint", str(snapshot()), "--outdir", str(samples / "seeds"),
                                         "--seeds", "0-99", "--workers", "1"], 0),
        ("latent walk", "sample", lambda: ["--checkpoint", str(snapshot()), "--outdir", str(samples / "walk"),
                                           "--walk", "0,1,2,3,0", "--frames", "8", "--trunc", "0.8"], 0),
    ]
    start = time.time()
    with StopRequest((signal.SIGINT, signal.SIGTERM)) as stop:
        for i, (title, job, argv, array) in enumerate(stages, 1):
            t0 = time.time()
            print(f"[{i}/{len(stages)}] {title} ...", flush=True)
            if not run_stage(executor, job, argv(), array, run.log if job == "train" else None, stop):
                print(f"demo: stopped on {signal.Signals(stop.signum).name} during '{title}': kept the finished "
                      f"stages' outputs and the run's snapshots in {out}; run the same command again to go on from "
                      "there", flush=True)
                sys.exit(128 + stop.signum)
            print(f"[{i}/{len(stages)}] {title}: done in {time.time() - t0:.0f} s", flush=True)
    rows = sorted(run.results("swd"), key=lambda r: r["kimg"])
    print(f"\ndemo finished in {time.time() - start:.0f} s. SWD (x1e3, lower is better) by snapshot:")
    for r in rows:
        print(f"  kimg {r['kimg']:6.2f}  swd {r['value']:.2f}")
    print("\noutputs:")
    for label, path in (("textures", textures), ("dataset", data / "dataset.json"), ("run", run_dir),
                        ("snapshots", run.checkpoints), ("metrics", run.metric_file("swd")),
                        ("seed grid", samples / "grid" / "grid0000.png"), ("seeds", samples / "seeds"),
                        ("walk", samples / "walk" / "walk.gif")):
        print(f"  {label:10s} {path}")
    print(f"\nfollow it in TensorBoard:  tensorboard --logdir {runs}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", default="demo-out")
    parser.add_argument("--kimg", type=float, help="training length (default: 6 on CPU, 100 on a GPU)")
    parser.add_argument("--count", type=int, default=2500, help="number of texture images")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
