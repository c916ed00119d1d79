"""Training speed beside NVIDIA's trainer: both run as users run them, one after the other on the same GPU.

    python -m benchmarks.speed_vs_official --workdir W --official PATH [--res 64 256] [--aug fixed noaug]
        [--kimg 64=8 256=5] [--images 64=2500 256=1000] [--widths parity|config-f] [--batch-gpu 512=4 ...]
        [--warm] [--ours-code PATH] [--gpus N] [--cache DIR] [--set KEY=VALUE ...]
For each resolution and augmentation setting, NVIDIA's `train.py --cfg=stylegan2` (an outside program set
up as CONTRIBUTING.md says) and our `jobs.train` train the parity settings (textures, batch 32,
channel_base 16384, 2 mapping layers, mirror) for a few kimg with a tick every kimg. `--widths config-f` trains
config-f's networks instead (channel_base 32768, 8 mapping layers: NVIDIA's `--cfg=stylegan2` defaults), and
`--batch-gpu RES=N` another batch per GPU at a resolution (config-f's own: 32 over 8 GPUs, so 4 per GPU at 512 and
1024); R1's gamma follows as 0.0002 * res^2 / batch per GPU. `fixed` is the ADA pipeline
('bgc') at a constant p = 0.2 (where the parity runs' p was at 130-150 kimg; both trainers' cost no longer depends
on p), `noaug` none. Reported per run: median sec/kimg of the ticks after the first, the largest of those ticks'
peak GPU memory (both trainers reset the peak each tick), and start-up (launch to the first tick line: NVIDIA
builds its CUDA ops, ours compiles; `--warm` runs ours a second time on the compile cache the first filled).
`--ours-code` times another checkout of ours instead (before and after a change). `--gpus N` runs both on N GPUs
(ours through torchrun) with 32 images per GPU (or --batch-gpu), for the scaling table; `--cache` names the compile
cache (default the workdir's), so that runs can share one; `--set` adds config values to ours (e.g.
compile_mode=reduce-overhead or compile_start=background, the default users get); `--startup-only` stops each run of
ours with SIGTERM at its first tick line (the start-up figure alone; the trainer snapshots and exits 3).
Logs and results.json go to the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.parity import REPO, official_env, prepare, settings, ticks
from stylegan.train.config import auto_r1_gamma

AUG_P = 0.2
WIDTHS = {"parity": {}, "config-f": {"cbase": 32768, "map": 8}}


def run_settings(res: int, widths: str, batch_gpu: int | None) -> dict:
    """The parity settings at `res` with other network widths and another batch per GPU, the same for both sides."""
    s = settings(res) | WIDTHS[widths]
    if batch_gpu is not None:
        s |= {"batch": batch_gpu, "gamma": auto_r1_gamma(res, batch_gpu)}
    return s


def per_res(values: list[str]) -> dict[int, int]:
    """`RES=N` arguments as {RES: N}."""
    return {int(k): int(v) for k, v in (x.split("=") for x in values)}


def run_timed(name: str, cmd: list[str], cwd: Path, env: dict, logs: Path, stop_at_first_tick: bool = False) -> dict:
    """Run `cmd` to its end (or SIGTERM it at its first tick line), its output to logs/<name>.log with each line's
    seconds since launch in front."""
    start = time.time()
    log_path = logs / f"{name}.log"
    first_tick = None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            elapsed = time.time() - start
            if first_tick is None and line.lstrip().startswith("tick"):
                first_tick = elapsed
                if stop_at_first_tick:
                    proc.send_signal(signal.SIGTERM)
            log.write(f"{elapsed:8.1f} {line}")
            log.flush()
        rc = proc.wait()
    text = log_path.read_text(errors="replace")
    # after the first tick; a run stopped there has no whole tick after it
    speeds = [] if stop_at_first_tick else [s for _, s in ticks(log_path)[1:]]
    mems = [] if stop_at_first_tick else [float(m) for m in re.findall(r"tick\s+[1-9]\d*\s.*?gpumem\s+([\d.]+)", text)]
    row = {"name": name, "rc": rc, "startup_s": first_tick, "wall_s": time.time() - start,
           "sec_per_kimg": float(np.median(speeds)) if speeds else None, "ticks": len(speeds),
           "peak_mem_gb": max(mems) if mems else None}
    print(json.dumps(row), flush=True)
    return row


def official_cmd(official: Path, data: Path, out: Path, s: dict, aug: str, kimg: int, gpus: int) -> list[str]:
    return [sys.executable, "train.py", f"--outdir={out}", "--cfg=stylegan2", f"--data={data}", f"--gpus={gpus}",
            f"--batch={s['batch'] * gpus}", f"--gamma={s['gamma']}", f"--cbase={s['cbase']}", f"--map-depth={s['map']}",
            f"--glr={s['lr']}", f"--dlr={s['lr']}", "--mirror=1", f"--aug={aug}", f"--p={AUG_P}", "--metrics=none",
            f"--kimg={kimg}", "--tick=1", "--snap=1000"]


def ours_cmd(data: Path, out: Path, name: str, res: int, s: dict, aug: str, kimg: int, gpus: int, extra: list[str]
             ) -> list[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"] if gpus > 1 else []
    return [sys.executable, *launcher, "-m", "jobs.train", f"data={data}", f"outdir={out}", f"run_name={name}",
            f"resolution={res}", f"batch={s['batch'] * gpus}", f"channel_base={s['cbase']}", f"map_layers={s['map']}",
            f"glr={s['lr']}", f"dlr={s['lr']}", f"r1_gamma={s['gamma']}", "mirror=true", f"aug={aug}",
            f"aug_p={AUG_P}", f"kimg={kimg}", "tick_kimg=1", "snap=1000", "workers=6",
            "compile_start=first-step", *extra]  # the ticks after the first time compiled steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--official", help="a copy of NVlabs/stylegan3 (with the note's local edits); none: ours only")
    parser.add_argument("--ours-code", help="time this checkout of ours instead of this one")
    parser.add_argument("--res", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--aug", nargs="+", default=["fixed", "noaug"], choices=("fixed", "noaug"))
    parser.add_argument("--kimg", nargs="+", default=["64=8", "256=5"], help="RES=KIMG per resolution")
    parser.add_argument("--images", nargs="+", default=["64=2500", "256=1000"], help="RES=COUNT")
    parser.add_argument("--widths", choices=tuple(WIDTHS), default="parity", help="the networks' widths (above)")
    parser.add_argument("--batch-gpu", nargs="+", default=[], help="RES=N: images per GPU at RES (default 32)")
    parser.add_argument("--warm", action="store_true", help="run ours twice: cold, then on the filled cache")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per run, --batch-gpu images each (ours via torchrun)")
    parser.add_argument("--cache", help="$STYLEGAN_CACHE for ours (default WORKDIR/cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config value for ours")
    parser.add_argument("--startup-only", action="store_true", help="stop ours at its first tick line")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    official = Path(args.official).resolve() if args.official else None
    ours = Path(args.ours_code).resolve() if args.ours_code else REPO
    kimg, images, batch_gpu = per_res(args.kimg), per_res(args.images), per_res(args.batch_gpu)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ours_env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ours), os.environ.get("PYTHONPATH", "")]),
                "STYLEGAN_CACHE": str(Path(args.cache or work / "cache").resolve())}
    rows = []
    for res in args.res:
        rdir = work / f"r{res}"
        prepare(rdir, official, images[res], res)
        s = run_settings(res, args.widths, batch_gpu.get(res))
        for aug in args.aug:
            tag = f"{res}-{aug}-{args.gpus}gpu"
            for attempt in ("cold", "warm")[:2 if args.warm else 1]:
                rows.append({"res": res, "aug": aug, "gpus": args.gpus, "side": f"ours ({attempt})", **run_timed(
                    f"ours-{tag}-{attempt}", ours_cmd(rdir / "data", rdir / "runs", f"ours-{tag}-{attempt}", res, s,
                                                      aug, kimg[res], args.gpus, args.set), ours, ours_env, logs,
                    args.startup_only)})
            if official is not None:
                rows.append({"res": res, "aug": aug, "gpus": args.gpus, "side": "official", **run_timed(
                    f"official-{tag}", official_cmd(official, rdir / "official-data.zip", rdir / "runs" / tag, s,
                                                     aug, kimg[res], args.gpus), official, official_env(official),
                    logs)})
            (work / "results.json").write_text(json.dumps(rows, indent=1))
    print("| res | aug | GPUs | side | sec/kimg | peak GB | start-up s |")
    for r in rows:
        print(f"| {r['res']} | {r['aug']} | {r['gpus']} | {r['side']} | {r['sec_per_kimg'] or 0:.2f} | "
              f"{r['peak_mem_gb'] or 0:.1f} | {r['startup_s'] or 0:.0f} |")


if __name__ == "__main__":
    main()
