"""Where each trainer's step spends the GPU: torch.profiler over the same steps of NVIDIA's `train.py --cfg=stylegan2`
and our `jobs.train`, both run as users run them (the settings of `benchmarks.speed_vs_official`, ADA at p 0.2).

    python -m benchmarks.profile_vs_official --workdir W [--official PATH] [--sides official ours] [--res 512]
        [--widths config-f] [--batch-gpu 4] [--images 200] [--skip 32] [--steps 16] [--cache DIR] [--set KEY=VALUE]
        [--after PATH]
Each side runs as its own program with benchmarks/profile_hook on its PYTHONPATH: its loop's steps SKIP+1 ..
SKIP+STEPS are profiled (NVIDIA's iterations from `data_fetch` to `data_fetch`, ours from `Gmain` to `Gmain`; with
SKIP and STEPS multiples of 16 both windows hold the same phases: every Gmain and Dmain, Greg every 4th step, Dreg
every 16th), the trace goes to WORKDIR/trace-<side>.json.gz and the program ends. Ours compiles from its first step
(`compile_start=first-step`, so the window is compiled). `--after PATH` holds each window back until PATH exists
(the compile can run beside other work; the window runs alone).

The report (WORKDIR/profile.json, and tables on stdout) reads every trace in the workdir: per step, the window's wall
time (under the profiler), the GPU's busy time (the union of kernels and copies), each phase's busy time (ours:
the trainer's Gmain/Greg/Dmain/Dreg ranges; NVIDIA's: from the first of a phase's ranges in its loss to the last),
the busy time by kind of kernel, and the top kernels; on a GPU also the GB allocated at the window's start and each
phase's peak allocated (from the hook's WORKDIR/trace-<side>.memory.json).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

from benchmarks.common import overlap, union
from benchmarks.parity import REPO, cache_env, official_env, prepare
from benchmarks.profile_train import PHASES
from benchmarks.speed_vs_official import WIDTHS, official_cmd, ours_cmd, run_settings
from stylegan.fileio import write_text_atomic

HOOK = Path(__file__).resolve().parent / "profile_hook"
MARKS = {"official": "data_fetch", "ours": "Gmain"}
# NVIDIA's loss and loop open these ranges in each phase (ranges nested in them, e.g. pl_grads, count through them)
OFFICIAL_PHASE = (("Gmain_", "Gmain"), ("Gpl_", "Greg"), ("Greg_", "Greg"), ("Dgen_", "Dmain"), ("Dreal_", "Dmain"),
                  ("Dmain_", "Dmain"), ("Dr1_", "Dreg"), ("Dreg_", "Dreg"))
# first match wins; by kernel name
KINDS = (("NVIDIA's CUDA ops (upfirdn2d, bias_act, filtered_lrelu)", r"upfirdn2d|bias_act|filtered_lrelu"),
         ("Triton (torch.compile)", r"^triton"),
         ("convolution and matmul (cuDNN, cuBLAS, CUTLASS)", r"xmma|cudnn|cutlass|gemm|conv|wgrad|dgrad|^sm\d+_"),
         ("copies and fills", r"Memcpy|Memset|copy|Copy|fill|CatArray"),
         ("reductions", r"reduce|Reduce"),
         ("other elementwise (ATen)", r""))
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def phase_of(name: str) -> str | None:
    """The training phase a profiler range belongs to: ours are named by phase, NVIDIA's by phase and part."""
    if name in PHASES:
        return name
    return next((phase for prefix, phase in OFFICIAL_PHASE if name.startswith(prefix)), None)


def kind_of(kernel: str) -> str:
    return next(kind for kind, pattern in KINDS if re.search(pattern, kernel))


def summarize(trace: dict, steps: int, top: int = 15) -> dict:
    """Per step, in ms: the GPU's busy time, each phase's busy time (the GPU busy inside the phase's ranges on the
    GPU timeline), busy time by kind of kernel, the top kernels (ms, calls); and the CPU-side window's length."""
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    busy = union([(e["ts"], e["ts"] + e["dur"]) for e in gpu])
    ranges: dict[str, list] = defaultdict(list)
    for ts, end, phase in phase_spans(events):
        ranges[phase].append((ts, end))
    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in gpu:
        by_kind[kind_of(e["name"])] += e["dur"]
        by_name[e["name"]][0] += e["dur"]
        by_name[e["name"]][1] += 1
    cpu = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") in ("cpu_op", "user_annotation")]
    per_step = 1000 * steps  # trace times are us
    return {
        "steps": steps,
        "window_ms": (max(b for _, b in cpu) - min(a for a, _ in cpu)) / per_step if cpu else 0.0,
        "gpu_busy_ms": sum(b - a for a, b in busy) / per_step,
        "phases_ms": {p: overlap(busy, union(ranges[p])) / per_step for p in PHASES if ranges[p]},
        "kinds_ms": {k: by_kind[k] / per_step for k, _ in KINDS if k in by_kind},
        "kernels": [{"name": n, "ms": t / per_step, "calls": c / steps}
                    for n, (t, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]],
    }


def phase_spans(events: list[dict]) -> list[tuple[float, float, str]]:
    """Each phase's spans on the GPU's timeline: from its first range's start to its last range's end, one span per
    run of consecutive ranges of the phase. NVIDIA's loss opens a range for each part of a phase, and the kernels
    of a backward pass lie between them: the autograd engine launches them from its own thread, outside the
    range that called it."""
    spans: list[list] = []
    for e in sorted((e for e in events if e.get("cat") == "gpu_user_annotation"), key=lambda e: e["ts"]):
        if phase := phase_of(e["name"]):
            if spans and spans[-1][2] == phase:
                spans[-1][1] = max(spans[-1][1], e["ts"] + e["dur"])
            else:
                spans.append([e["ts"], e["ts"] + e["dur"], phase])
    return [(a, b, p) for a, b, p in spans]


def memory_by_phase(memory: dict) -> dict:
    """GB allocated at the window's start and each phase's peak allocated, from the hook's ranges in the order the
    program entered them: a range that names no phase (NVIDIA's nested ranges, its data fetch and EMA) counts in the
    phase entered before it."""
    peaks: dict[str, int] = {}
    phase = None
    for name, peak in memory["ranges"]:
        phase = phase_of(name) or phase
        if phase is not None:
            peaks[phase] = max(peaks.get(phase, 0), peak)
    return {"start_gb": memory["start"] / 2**30, "peak_gb": {p: peaks[p] / 2**30 for p in PHASES if p in peaks}}


def read_trace(path: Path) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


def profile_side(side: str, work: Path, official: Path | None, args: argparse.Namespace) -> int:
    """Run one side to the end of its profiled window; its output to WORKDIR/logs/<side>.log. The return code."""
    s = run_settings(args.res, args.widths, args.batch_gpu)
    kimg = -(-(args.skip + args.steps + 2) * s["batch"] // 1000)  # the run outlasts its window
    rdir = work / f"r{args.res}"
    cache = Path(args.cache).resolve() if args.cache else work / "cache"
    if side == "official":
        cmd = official_cmd(official, rdir / "official-data.zip", rdir / "runs" / "official", s, "fixed", kimg, 1)
        cwd, env = official, official_env(official)
    else:
        cmd = ours_cmd(rdir / "data", rdir / "runs", "ours", args.res, s, "fixed", kimg, 1, args.set)
        cwd, env = REPO, {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {**env, **cache_env(cache, side),
           "PYTHONPATH": os.pathsep.join([str(HOOK), env.get("PYTHONPATH", "")]),
           "STYLEGAN_PROFILE": f"{MARKS[side]},{args.skip},{args.steps},{work / f'trace-{side}.json.gz'}",
           **({"STYLEGAN_PROFILE_AFTER": str(Path(args.after).resolve())} if args.after else {})}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    with open(work / "logs" / f"{side}.log", "w") as log:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def report(work: Path, steps: int) -> dict:
    result = {side: summarize(read_trace(work / f"trace-{side}.json.gz"), steps)
              for side in MARKS if (work / f"trace-{side}.json.gz").is_file()}
    for side in result:
        if (ranges := work / f"trace-{side}.memory.json").is_file():
            result[side]["memory"] = memory_by_phase(json.loads(ranges.read_text()))
    write_text_atomic(work / "profile.json", json.dumps(result, indent=1))
    sides = list(result)
    print(f"| ms per step | {' | '.join(sides)} |\n| --- |{' --- |' * len(sides)}")
    rows = [("window (wall, under the profiler)", "window_ms"), ("GPU busy", "gpu_busy_ms")]
    for label, key in rows:
        print(f"| {label} | {' | '.join(f'{result[s][key]:.1f}' for s in sides)} |")
    for group in ("phases_ms", "kinds_ms"):
        for name in dict.fromkeys(n for s in sides for n in result[s][group]):
            print(f"| {name} | {' | '.join(f'{result[s][group].get(name, 0):.1f}' for s in sides)} |")
    if any("memory" in result[s] for s in sides):
        memory = {s: result[s].get("memory", {"start_gb": None, "peak_gb": {}}) for s in sides}
        gb = [("GB allocated at the window's start", {s: m["start_gb"] for s, m in memory.items()})]
        gb += [(f"GB peak allocated in {p}", {s: m["peak_gb"].get(p) for s, m in memory.items()}) for p in PHASES]
        for label, values in gb:  # '-': not measured (a CPU run) or the phase not in the window
            print(f"| {label} | {' | '.join('-' if values[s] is None else f'{values[s]:.2f}' for s in sides)} |")
    for s in sides:
        print(f"\n{s}: top kernels, ms per step (calls per step)")
        for k in result[s]["kernels"]:
            print(f"  {k['ms']:8.2f} ({k['calls']:5.1f})  {k['name'][:110]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--official", help="a copy of NVlabs/stylegan3 (benchmarks.official_checkout)")
    parser.add_argument("--sides", nargs="+", choices=tuple(MARKS), default=list(MARKS))
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--widths", choices=tuple(WIDTHS), default="config-f")
    parser.add_argument("--batch-gpu", type=int, default=4)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--skip", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--cache", help="compile caches, as the parity harness keeps them (default WORKDIR/cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config value for ours")
    parser.add_argument("--after", help="hold each profiled window back until this file exists")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    official = Path(args.official).resolve() if args.official else None
    if "official" in args.sides and official is None:
        parser.error("--sides official needs --official")
    prepare(work / f"r{args.res}", official if "official" in args.sides else None, args.images, args.res)
    for side in args.sides:
        rc = profile_side(side, work, official, args)
        traced = (work / f"trace-{side}.json.gz").is_file()
        print(f"{side}: exit {rc}, {'traced' if traced else 'no trace'}; log {work / 'logs' / f'{side}.log'}",
              flush=True)
    report(work, args.steps)


if __name__ == "__main__":
    main()
