"""Does our trainer learn as well as NVIDIA's? Both on the same data with the same settings, side by side.

    python -m benchmarks.parity prepare --workdir W [--official PATH] [--images 2500] [--res 64] [--by-kind]
    python -m benchmarks.parity launch  --workdir W [--official PATH] --kimg 150 --seeds 0 1 --gpus 0 1 2 3
                                        [--by-kind-seeds 0 --gpus ... (two more per seed)] [--sides ours|official]
                                        [--cache DIR] [--snap TICKS] [--score follow|after]
                                        [--ours-set KEY=VALUE ...] [--stagger]
    python -m benchmarks.parity wait    --workdir W [--timeout 540]
    python -m benchmarks.parity score   --workdir W --run NAME [--follow]
    python -m benchmarks.parity pack    --workdir W --dest parity.tgz
    python -m benchmarks.parity report  --workdir W [--also W2 ...] [--out DIR] [--swd-target 60]
`launch` starts every run in its own process session (they outlive the command that started them), one GPU per
run, each followed by a scorer on its GPU (`score --run NAME --follow`) that scores snapshots as they appear, so
`report` has little left to do: ours for each seed, and NVIDIA's trainer for each seed when --official names its
code (NVlabs/stylegan3 `--cfg=stylegan2`, run as an outside program, never part of this project: CONTRIBUTING.md
says how to set it up). The
settings are the official reference's: 64x64 textures (jobs.make_textures), batch 32, channel_base 16384, 2 mapping
layers, lr 0.0025, R1 gamma 0.0002 * res^2 / batch, x-flips, ADA, a tick every 4 kimg and a snapshot every 5 ticks;
ours with the 64x64 preset's CUDA graphs (`compile_mode: reduce-overhead`).
`report` scores every snapshot of every run with our SWD and our diversity metric (generated over real structure
spread; stylegan.metrics.diversity), and writes parity.md (tables), parity.svg (SWD and diversity by kimg, one line
per run) and parity-fakes.png (each run's last fakes grid, side by side).

`--by-kind` is the class-sorted check: the same images written one texture kind per folder, so that file-name order
groups the kinds (as folders per class or camera shoots do). Ours trains on it twice per `--by-kind-seeds` seed:
`ours-by-kind` from `preprocess`'s shards (a seeded random order) and `ours-by-kind-name-order` from the same
images re-packed in file-name order, the shards every preprocess wrote before the random order. NVIDIA's trainer
draws a global permutation of the whole dataset, so file order cannot change what it sees: its runs on the mixed
folder are the reference for these too.

Runs share the GPUs that --gpus lists: on one H200 the four runs of two seeds per side, ours staggered, reach 150
kimg in about 25 minutes (RESULTS.md, parity section). When a session cannot hold more, `--sides` runs one side:
`pack` bundles what a run left (its settings, scores, logs and last fakes grid) into one file to bring back, and
`report --also` puts the runs of several such workdirs in one table (NVIDIA's code and the data do not change
between sessions; our SWD must not change between the sessions whose runs one table compares). Several of our
runs started at once on a cold cache all compile the same graphs; `--stagger` starts our first run alone and the
others once it has compiled: they find its record in the compile cache and load its graphs at their first step.

Time to quality, what a user's first run feels: `report` gives each run's seconds from its launch to its first tick
and to its first snapshot with SWD <= --swd-target (the snapshot file's time; scorers record it as they score), and
ours over NVIDIA's. `launch --cache DIR` keeps each side's compile caches (ours: Inductor and Triton; NVIDIA's: its
built plugins) in DIR/ours and DIR/official: a folder that does not exist yet measures a cold start, one an earlier
launch filled a warm one; --snap 1 snapshots every tick, so the time is read to a tick. For a fair clock each side
runs alone on the GPU: one launch per side and cache state, each in its own workdir, joined by `report --also`,
and with `--score after`: no scorer shares the GPU while the runs train, `wait` scores the snapshots once every run
has ended; their times are the files', so nothing moves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.plot import figure
from stylegan.data.shards import add_tar_member
from stylegan.data.textures import KINDS
from stylegan.fileio import atomic_write, write_text_atomic
from stylegan.formats.checkpoint import load_generator
from stylegan.imagefiles import save_png
from stylegan.metrics.compute import compute_metric, parse_metric
from stylegan.train.config import auto_r1_gamma

REPO = Path(__file__).resolve().parents[1]
TICK_KIMG, SNAP_TICKS, BATCH = 4, 5, 32


def settings(res: int) -> dict:
    return {"batch": BATCH, "cbase": 16384, "map": 2, "lr": 0.0025, "gamma": auto_r1_gamma(res, BATCH)}


def prepare(work: Path, official: Path | None, images: int, res: int, by_kind: bool = False) -> None:
    tex = work / "textures"
    if not tex.is_dir():
        ours("jobs.make_textures", "--count", str(images), "--resolution", str(res), "--dest", str(tex))
    preprocess(tex, work / "data", res)
    if official is not None and not (work / "official-data.zip").is_file():
        subprocess.run([sys.executable, "dataset_tool.py", f"--source={tex}", f"--dest={work / 'official-data.zip'}",
                        f"--resolution={res}x{res}"], cwd=official, env=official_env(official), check=True)
    if by_kind:
        for i, src in enumerate(sorted(tex.glob("texture*.png"))):  # make_textures cycles through the kinds
            dest = work / "textures-by-kind" / KINDS[i % len(KINDS)] / src.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dest)
        preprocess(work / "textures-by-kind", work / "data-by-kind", res)
        in_name_order(work / "data-by-kind", work / "data-by-kind-name-order")


def ours(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                   check=True)


def preprocess(source: Path, dest: Path, res: int) -> None:
    if not (dest / "dataset.json").is_file():
        ours("jobs.preprocess", "--source", str(source), "--dest", str(dest), "--resolution", str(res))


def in_name_order(data: Path, dest: Path, shard_size: int = 1000) -> None:
    """A copy of the preprocessed `data` with its samples in file-name order, in shards of `shard_size`."""
    if (dest / "dataset.json").is_file():
        return
    info = json.loads((data / "dataset.json").read_text())
    samples = []
    for shard in info["shards"]:
        with tarfile.open(data / shard["name"]) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        samples += [(json.loads(files[name])["source"], files[name[:-5] + ".png"], files[name])
                    for name in files if name.endswith(".json")]
    samples.sort()
    dest.mkdir(parents=True, exist_ok=True)
    shards = []
    for n, first in enumerate(range(0, len(samples), shard_size)):
        name = f"shard-0000-{n:05d}.tar"
        with atomic_write(dest / name) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, (_, png, meta) in enumerate(samples[first:first + shard_size], start=first):
                add_tar_member(tar, f"{key:09d}.png", png)
                add_tar_member(tar, f"{key:09d}.json", meta)
        shards.append({"name": name, "count": len(samples[first:first + shard_size]),
                       "bytes": (dest / name).stat().st_size})
    info = {k: v for k, v in info.items() if k != "shuffle_seed"} | {"shards": shards, "num_tasks": 1}
    write_text_atomic(dest / "dataset.json", json.dumps(info, indent=1) + "\n")


def official_env(official: Path) -> dict:
    """The official code needs a `pkg_resources` stand-in with torch 2.11 (official-reference.md): `shim/`."""
    path = os.pathsep.join([str(official / "shim"), str(official), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def cache_env(cache: Path | None, side: str) -> dict:
    """Environment that keeps one side's compile caches (ours: Inductor, Triton, through $STYLEGAN_CACHE; NVIDIA's:
    its built plugins) in `cache`/<side>: an empty folder measures a cold start, one an earlier launch filled a
    warm one. None: the user's own caches."""
    if cache is None:
        return {}
    root = cache / side
    return {"STYLEGAN_CACHE": str(root), "TORCHINDUCTOR_CACHE_DIR": str(root / "torch-compile"),
            "TRITON_CACHE_DIR": str(root / "triton"), "TORCH_EXTENSIONS_DIR": str(root / "torch_extensions")}


def launch(work: Path, official: Path | None, kimg: float, seeds: list[int], by_kind_seeds: list[int],
           gpus: list[str], res: int, sides: list[str], cache: Path | None, snap: int, scoring: str,
           ours_set: list[str], stagger: bool) -> None:
    s = settings(res)
    # None: the user's own caches, in an unknown state
    cold = {side: not any((cache / side).glob("*")) if cache else None for side in ("ours", "official")}

    def ours_run(name: str, data: str, seed: int) -> dict:
        return {"name": name, "side": "ours", "cwd": str(REPO),
                "env": {"PYTHONUNBUFFERED": "1", **cache_env(cache, "ours")},
                "cold": cold["ours"], "cmd": [
            sys.executable, "-m", "jobs.train", f"data={work / data}", f"outdir={work / 'runs'}",
            f"run_name={name}", f"resolution={res}", f"batch={s['batch']}", f"channel_base={s['cbase']}",
            f"map_layers={s['map']}", f"glr={s['lr']}", f"dlr={s['lr']}", f"r1_gamma={s['gamma']}", "mirror=true",
            "aug=ada", f"kimg={kimg}", f"tick_kimg={TICK_KIMG}", f"snap={snap}", f"seed={seed}", "workers=3",
            # the 64x64 preset's speed setting (configs/textures64.yaml): CUDA graphs change how the kernels are
            # launched, not what they compute
            "compile_mode=reduce-overhead", *ours_set]}

    runs = []
    for seed in seeds:
        if "ours" in sides:
            runs.append(ours_run(f"ours-s{seed}", "data", seed))
        if official is not None and "official" in sides:
            runs.append({"name": f"official-s{seed}", "side": "official", "cwd": str(official),
                         "cold": cold["official"],
                         "env": {**official_env(official), **cache_env(cache, "official")}, "cmd": [
                sys.executable, "train.py", f"--outdir={work / 'runs' / f'official-s{seed}'}", "--cfg=stylegan2",
                f"--data={work / 'official-data.zip'}", "--gpus=1", f"--batch={s['batch']}", f"--gamma={s['gamma']}",
                f"--cbase={s['cbase']}", f"--map-depth={s['map']}", f"--glr={s['lr']}", f"--dlr={s['lr']}",
                "--mirror=1", "--aug=ada", "--metrics=none", f"--kimg={int(kimg)}", f"--tick={TICK_KIMG}",
                f"--snap={snap}", f"--seed={seed}"]})
    for seed in by_kind_seeds:
        runs += [ours_run(f"ours-by-kind-s{seed}", "data-by-kind", seed),
                 ours_run(f"ours-by-kind-name-order-s{seed}", "data-by-kind-name-order", seed)]
    if len(runs) > len(gpus):
        sys.exit(f"error: {len(runs)} runs need {len(runs)} GPUs; --gpus lists {len(gpus)}")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    ours_runs = [run for run in runs if run["side"] == "ours"]
    held = ours_runs[1:] if stagger else []
    for run, gpu in zip(runs, gpus, strict=False):
        run["gpu"] = gpu
    info = {"kimg": kimg, "res": res, "settings": s, "cache": str(cache) if cache else None, "score": scoring}
    begin(work, [run for run in runs if run not in held], runs, info)
    if held:  # they start once the first has compiled its graphs, so that they load them from the cache
        first = ours_runs[0]
        # the switch from its helpers, or the start-up line of a run compiled at its first step (first-step, or a
        # compile record already in the cache)
        compiled = ("compiled main phases", "(torch.compile on first use")
        done = until_in_log(work / "logs" / f"{first['name']}.log", compiled, first["pid"], timeout=900)
        print(f"{first['name']} {'has compiled' if done else 'ended or did not compile in 900 s'}; starting the "
              "others", flush=True)
        for run in held:
            if run["cold"]:  # the first run has filled the cache folder
                run["cold"] = False
        begin(work, held, runs, info)


def begin(work: Path, these: list[dict], runs: list[dict], info: dict) -> None:
    """Start `these` of `runs`, list every run started so far in parity.json (what `wait`, `score` and `report`
    read), and start a scorer beside each of `these` when the launch scores as snapshots appear."""
    for run in these:
        run.update(pid=start(run["cmd"], run["cwd"], run["env"], run["gpu"], work / "logs" / f"{run['name']}.log"),
                   started=time.time())
        print(f"started {run['name']} on GPU {run['gpu']} (pid {run['pid']})", flush=True)
    write_text_atomic(work / "parity.json", json.dumps({"runs": [r for r in runs if "pid" in r], **info}, indent=1))
    for run in these if info["score"] == "follow" else []:
        scorer = [sys.executable, "-m", "benchmarks.parity", "score", f"--workdir={work}", f"--run={run['name']}",
                  "--follow"]
        start(scorer, str(REPO), {"PYTHONUNBUFFERED": "1"}, run["gpu"], work / "logs" / f"score-{run['name']}.log")


def until_in_log(log: Path, texts: tuple[str, ...], pid: int, timeout: float) -> bool:
    """Whether one of `texts` appeared in `log` before process `pid` ended and within `timeout` seconds."""
    def found() -> bool:
        written = log.read_text(errors="replace")
        return any(text in written for text in texts)

    deadline = time.time() + timeout
    while time.time() < deadline and alive(pid):
        if found():
            return True
        time.sleep(2)
    return found()


def start(cmd: list[str], cwd: str, env: dict, gpu: str, log_path: Path) -> int:
    """Start `cmd` on one GPU in its own process session, so it outlives the command that started it."""
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env, "CUDA_VISIBLE_DEVICES": gpu}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True).pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


TICK = re.compile(r"tick\s+(\d+)\s+kimg\s+([\d.]+).*?sec/kimg\s+([\d.]+)")


def ticks(log: Path) -> list[tuple[float, float]]:
    """(kimg, sec/kimg) of every tick line, ours and official alike."""
    return [(float(m.group(2)), float(m.group(3))) for m in TICK.finditer(log.read_text(errors="replace"))]


def wait(work: Path, timeout: float) -> bool:
    """Until every run has ended or `timeout`; then, for a launch with `--score after`, score their snapshots."""
    info = json.loads((work / "parity.json").read_text())
    runs = info["runs"]
    deadline = time.time() + timeout
    while True:
        running = [r for r in runs if alive(r["pid"])]
        for r in runs:
            t = ticks(work / "logs" / f"{r['name']}.log")
            print(f"{r['name']}: {'running' if r in running else 'done'}, kimg {t[-1][0] if t else 0:.1f}, "
                  f"sec/kimg {t[-1][1] if t else 0:.2f}", flush=True)
        if not running and info.get("score") == "after":
            for r in runs:
                score(work, r["name"], follow=False)
        if not running or time.time() > deadline:
            return not running
        time.sleep(min(60.0, max(deadline - time.time(), 1.0)))


def snapshots(work: Path, name: str) -> list[tuple[float, Path]]:
    """(kimg, network file) of a run: ours `network-snapshot-<stamp>.pt`, NVIDIA's `network-snapshot-<kimg>.pkl`."""
    found = []
    for path in (work / "runs").glob(f"{name}/**/network-snapshot-*"):
        m = re.match(r"network-snapshot-(\d+(?:\.\d+)?)\.(pt|pkl)$", path.name)
        if m:
            found.append((float(m.group(1)), path))
    return sorted(found)


def last_fakes(work: Path, name: str) -> Path | None:
    grids = sorted(p for p in (work / "runs").glob(f"{name}/**/fakes*.png") if "init" not in p.name)
    return grids[-1] if grids else None


def score(work: Path, name: str, follow: bool) -> dict[float, dict]:
    """SWD and diversity of every snapshot of run `name`, kept in scores/<name>.json; with `follow`, until the run
    has ended and its last snapshot is scored."""
    run = next(r for r in json.loads((work / "parity.json").read_text())["runs"] if r["name"] == name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    specs = [parse_metric("swd"), parse_metric("diversity")]
    path = work / "scores" / f"{name}.json"
    scores = {float(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}
    while True:
        running = alive(run["pid"])
        # NVIDIA's trainer writes its pickles in place: while it runs, a file still growing is left for the next
        # pass; once it has ended, every file is whole (its last snapshot may be seconds old)
        todo = [(k, p) for k, p in snapshots(work, name)
                if k not in scores and (not running or time.time() - p.stat().st_mtime > 10)]
        for kimg, snapshot in todo:
            G = load_generator(snapshot, device)
            scores[kimg] = {s.name: compute_metric(G, work / "data", s, None, device, batch=128)[0][s.name]
                            for s in specs} | {"seconds": snapshot.stat().st_mtime - run["started"]}
            print(f"{name} kimg {kimg:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores[kimg].items()), flush=True)
            write_text_atomic(path, json.dumps(scores, indent=1))
        if not follow or (not running and not todo):
            return scores
        time.sleep(20)


def verdict(values: dict[str, float | None], metric: str) -> str:
    """Whether ours learns as well, read two ways, both shown: SWD of the mean of our seeds on the mixed folder, and
    of each of our runs (the by-kind ones too), against the official seeds' spread (at most the worst is within or
    better); diversity of each within 10% of theirs."""
    ours = {n: v for n, v in values.items() if n.startswith("ours") and v is not None}
    official = [v for n, v in values.items() if n.startswith("official") and v is not None]
    if not ours or not official:
        return "-"
    if metric == "swd":
        worst = max(official)
        within = lambda v: "within or better" if v <= worst else f"worse by {v - worst:.1f}"  # noqa: E731
        seeds = {n: v for n, v in ours.items() if re.fullmatch(r"ours-s\d+", n)}  # on the mixed folder
        parts = [f"mean: {within(float(np.mean(list(seeds.values()))))}", f"each: {within(max(seeds.values()))}"] \
            if seeds else []
        return "; ".join(parts + [f"{n}: {within(v)}" for n, v in ours.items() if n not in seeds] + paired(values))
    gap = max(abs(o / float(np.mean(official)) - 1) for o in ours.values())
    return f"within 10% ({gap:.1%})" if gap <= 0.1 else f"off by {gap:.1%}"


def paired(values: dict[str, float | None]) -> list[str]:
    """Ours minus NVIDIA's over the seeds both sides ran, with its standard error: a seed gives both trainers the same
    initial networks on one GPU, so each pair differs only in how the two trainers learn from them."""
    diffs = [v - values[f"official-{n[5:]}"] for n, v in values.items()
             if re.fullmatch(r"ours-s\d+", n) and v is not None and values.get(f"official-{n[5:]}") is not None]
    if not diffs:
        return []
    error = f"standard error {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.1f}, " if len(diffs) > 1 else ""
    return [f"paired by seed: {np.mean(diffs):+.1f} ({error}{len(diffs)} seed{'s' * (len(diffs) > 1)})"]


def first_tick(work: Path, name: str) -> float | None:
    """When a run's first tick row was written (stats.jsonl's timestamp, ours and NVIDIA's alike)."""
    for path in (work / "runs").glob(f"{name}/**/stats.jsonl"):
        rows = path.read_text().splitlines()
        if rows:
            return json.loads(rows[0])["timestamp"]
    return None


def time_to_quality(places: dict[str, Path], records: dict[str, dict], rows: dict[str, dict], target: float
                    ) -> list[str]:
    """Per run: seconds from its launch to its first tick and to its first snapshot with SWD <= target, with the
    state of the compile caches it started with; then ours over NVIDIA's (means over seeds) for each cache state."""
    lines = [f"Time to quality (launch to the first snapshot with SWD <= {target:g}; the snapshot file's time):", "",
             "| run | caches at launch | launch to first tick, s | launch to SWD target, s | at kimg |",
             "| --- | --- | --- | --- | --- |"]
    reached: dict[tuple[str, str], list[float]] = {}
    for name, place in places.items():
        run = records[name]
        caches = {True: "cold", False: "warm"}.get(run.get("cold"), "the user's")
        tick = first_tick(place, name)
        hit = next(((k, v["seconds"]) for k, v in sorted(rows[name].items())
                    if "seconds" in v and v["swd"] <= target), None)
        side = re.fullmatch(r"(ours|official)-s\d+", name)  # the mixed folder's runs, as the SWD verdict
        if hit is not None and side:
            reached.setdefault((caches, side.group(1)), []).append(hit[1])
        to_tick = f"{tick - run['started']:.0f}" if tick else "-"
        to_target, at = (f"{hit[1]:.0f}", f"{hit[0]:g}") if hit else ("not reached", "-")
        lines.append(f"| {name} | {caches} | {to_tick} | {to_target} | {at} |")
    for caches in ("cold", "warm", "the user's"):
        if (caches, "ours") in reached and (caches, "official") in reached:
            ratio = np.mean(reached[caches, "ours"]) / np.mean(reached[caches, "official"])
            lines.append(f"\nOurs over NVIDIA's, {caches} caches: {ratio:.2f} of NVIDIA's time to the target.")
    return lines + [""]


def pack(work: Path, dest: Path) -> None:
    """One file with what `report` reads of a workdir: settings, scores, logs, each run's stats rows (their times)
    and last fakes grid."""
    runs = json.loads((work / "parity.json").read_text())["runs"]
    grids = [last_fakes(work, r["name"]) for r in runs]
    with atomic_write(dest) as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for path in [work / "parity.json", *sorted((work / "scores").glob("*.json")),
                     *sorted((work / "logs").glob("*.log")), *filter(None, grids),
                     *sorted((work / "runs").glob("*/**/stats.jsonl"))]:
            tar.add(path, arcname=str(path.relative_to(work)))


def report(work: Path, also: list[Path], out: Path, swd_target: float) -> None:
    info = json.loads((work / "parity.json").read_text())
    places, records = {run["name"]: work for run in info["runs"]}, {run["name"]: run for run in info["runs"]}
    for other in also:
        runs = json.loads((other / "parity.json").read_text())["runs"]
        places.update({run["name"]: other for run in runs})
        records.update({run["name"]: run for run in runs})
    rows = {name: score(place, name, follow=False) for name, place in places.items()}
    names = list(rows)
    kimgs = sorted({round(k) for r in rows.values() for k in r})
    def at(run: str, k: int, metric: str) -> float | None:
        near = min(rows[run], key=lambda x: abs(x - k), default=None)
        return rows[run][near][metric] if near is not None and abs(near - k) < 2 else None

    lines = [f"Settings: {json.dumps(info['settings'])}, {info['res']}x{info['res']}, {info['kimg']:g} kimg.", ""]
    for metric in ("swd", "diversity"):
        header = f"| kimg | {' | '.join(names)} | ours against the official spread |"
        lines += [header, "| --- " * (len(names) + 2) + "|"]
        for k in kimgs:
            values = {n: at(n, k, metric) for n in names}
            cells = [f"{v:.3f}" if v is not None else "-" for v in values.values()]
            lines.append(f"| {k} ({metric}) | {' | '.join(cells)} | {verdict(values, metric)} |")
        lines.append("")
    lines += time_to_quality(places, records, rows, swd_target)
    speed = {n: ticks(place / "logs" / f"{n}.log") for n, place in places.items()
             if (place / "logs" / f"{n}.log").is_file()}
    lines.append("Speed (sec/kimg, median of the ticks after the first): " + ", ".join(
        f"{n} {np.median([s for _, s in t[1:]]):.2f}" for n, t in speed.items() if len(t) > 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    series = lambda metric: {n: [(k, v[metric]) for k, v in sorted(rows[n].items())] for n in names if rows[n]}  # noqa: E731
    if any(rows.values()):  # a figure needs a scored snapshot
        (out / "parity.svg").write_text(figure([
            (series("swd"), f"SWD x1e3 by kimg, {info['res']}x{info['res']} textures, ADA (lower is better)", "kimg"),
            (series("diversity"), "diversity, generated over real (1 = as varied as the data)", "kimg")]))
    grids = [(n, last_fakes(place, n)) for n, place in places.items()]
    images = [np.asarray(Image.open(p).convert("RGB").resize((384, 384))) for _, p in grids if p is not None]
    if images:
        save_png(np.concatenate(images, axis=1), out / "parity-fakes.png")
        (out / "parity-fakes.txt").write_text(" | ".join(f"{n}: {p}" for n, p in grids) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("prepare", "launch", "wait", "score", "pack", "report"))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--official", help="a copy of NVlabs/stylegan3 (with the note's three local edits)")
    parser.add_argument("--images", type=int, default=2500)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--kimg", type=float, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--by-kind", action="store_true", help="prepare: also the class-sorted folder (above)")
    parser.add_argument("--by-kind-seeds", type=int, nargs="*", default=[],
                        help="launch: seeds of our two runs on the class-sorted folder (prepare --by-kind first)")
    parser.add_argument("--gpus", nargs="+", default=[str(i) for i in range(max(torch.cuda.device_count(), 1))])
    parser.add_argument("--timeout", type=float, default=540, help="wait: give up after this many seconds")
    parser.add_argument("--run", help="score: the run whose snapshots to score")
    parser.add_argument("--follow", action="store_true", help="score: keep scoring until the run has ended")
    parser.add_argument("--out", help="report: where the table and figures go (default: the workdir)")
    parser.add_argument("--also", nargs="*", default=[], help="report: more workdirs (or unpacked `pack` files) "
                        "whose runs join the table")
    parser.add_argument("--sides", nargs="+", choices=("ours", "official"), default=["ours", "official"],
                        help="launch: whose --seeds runs to start (the --by-kind-seeds runs are ours: "
                        "`--sides official --seeds 2 --by-kind-seeds 0` starts NVIDIA's seed 2 beside them)")
    parser.add_argument("--dest", help="pack: the .tgz to write")
    parser.add_argument("--cache", help="launch: keep each side's compile caches in CACHE/ours and CACHE/official "
                        "(empty: a cold start; filled by an earlier launch: a warm one)")
    parser.add_argument("--snap", type=int, default=SNAP_TICKS, help="launch: ticks between snapshots (time to "
                        "quality is read at snapshots: 1 gives it to a tick)")
    parser.add_argument("--score", choices=("follow", "after"), default="follow", help="launch: a scorer beside "
                        "each run as its snapshots appear, or `wait` scores them after the runs (time to quality)")
    parser.add_argument("--ours-set", nargs="*", default=[], metavar="KEY=VALUE", help="launch: more of our "
                        "trainer's settings, after the harness's (e.g. compile_start=first-step)")
    parser.add_argument("--stagger", action="store_true", help="launch: start our first run alone and the rest once "
                        "it has compiled, so that they load its graphs from the compile cache (for learning, not for "
                        "time to quality)")
    parser.add_argument("--swd-target", type=float, default=60.0, help="report: the SWD x1e3 of the time-to-quality "
                        "table")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    official = Path(args.official).resolve() if args.official else None
    if args.step == "prepare":
        prepare(work, official, args.images, args.res, args.by_kind)
    elif args.step == "launch":
        launch(work, official, args.kimg, args.seeds, args.by_kind_seeds, args.gpus, args.res, args.sides,
               Path(args.cache).resolve() if args.cache else None, args.snap, args.score, args.ours_set, args.stagger)
    elif args.step == "wait":
        sys.exit(0 if wait(work, args.timeout) else 3)
    elif args.step == "score":
        score(work, args.run, args.follow)
    elif args.step == "pack":
        pack(work, Path(args.dest))
    else:
        report(work, [Path(a).resolve() for a in args.also], Path(args.out) if args.out else work, args.swd_target)


if __name__ == "__main__":
    main()
