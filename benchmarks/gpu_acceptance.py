"""The GPU acceptance run: every GPU path users run, with the shipped preset, on this machine's GPUs.

    python -m benchmarks.gpu_acceptance [--workdir DIR] [--gpus N] [--only train ...] [--code CHECKOUT] [--parallel]
CI has no GPU, and CPU kernels forgive what CUDA kernels do not: this is the check of the GPU paths
(CONTRIBUTING.md says when to run it and where its results go).

What runs, as subprocesses of the real jobs:
  * configs/textures64.yaml as users start it, first (a cold compile cache: the run's own, WORKDIR/cache, emptied when
    the train part runs): eager from the first step while helper processes compile, compiled from a tick on
    (`compile_start: background`); then again on the cache it filled, as a requeue or a second run starts: compiled
    from the first step, which its record in the cache asks for; the legs below compile before their first step, so
    that their short runs check the compiled graphs;
  * configs/textures64.yaml fine-tuning from an NVIDIA-format pickle of FFHQ config-f's shape (1024x1024, random
    weights, written by the tests' own pickle builder) on procedural textures at 64x64, ADA with p = 0.2 from the
    first step (so R1 and path length go through every augmentation): on 1 GPU with a SIGTERM after a snapshot, the
    resume at the same kimg and the end; then under torchrun over all GPUs;
  * jobs.evaluate --compile: swd, and fid with an Inception detector built from random weights;
  * jobs.sample --compile: seeds at truncation 0.7, a grid, a latent walk (GIF + MP4), style mixing;
  * jobs.project: one array task of the dataset's images projected into the 1-GPU run's snapshot (a VGG16-shaped
    stand-in with random weights for NVIDIA's vgg16.pt), a walk and style mixing between the projections, and
    evaluate's VGG16 metrics (precision/recall, path length);
  * jobs.convert: the pickle to .pt, a snapshot to .safetensors and to an NVIDIA-loadable .pkl, sampled again to the
    same pixels (benchmarks/export_reference.py runs NVIDIA's own loader and gen_images.py on such a file);
  * configs/stylegan1-textures64.yaml from a StyleGAN (2018) pickle of karras2019stylegan-ffhq-1024x1024's shape
    (random weights, the tests' builder), SIGTERM and resume, evaluate, and the seed's sampling (seeds at 0.7, the
    walk 200,1000,2500,4000,200, style mixing);
  * progressive growing from scratch (StyleGAN (2018), 32x32 then the fade to 64x64), SIGTERM inside the fade and the
    resume at the same lod and image count.
One line per check (PASS/FAIL and its figure), a summary last; exit 1 if any check failed. `--code` runs the jobs
of another checkout (e.g. an older commit) against the same checks, to show what they catch. `--parallel` runs the
StyleGAN (2018) legs beside the StyleGAN2 legs, which do not depend on each other: the run takes less of a session's
device time (the cold compiles overlap), the GPU must hold both (the StyleGAN (2018) preset alone reserves 56 GB
compiled on an H200: benchmarks/RESULTS.md), and the speed figures in its lines are then those of a shared GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.nvidia_pickles import write_nvidia_pickle, write_stylegan1_pickle
from benchmarks.projector_reference import save_stand_in_vgg
from stylegan.metrics.inception import FIDInceptionV3
from stylegan.models import stylegan1
from stylegan.models.stylegan2 import Discriminator, Generator
from stylegan.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
FFHQ_G = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, mapping_kwargs=dict(num_layers=8),
              channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256)
FFHQ_D = dict(c_dim=0, img_resolution=1024, img_channels=3, channel_base=32768, channel_max=512, num_fp16_res=4,
              conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=4))
SG1_FFHQ_G = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, fmap_base=8192, fmap_max=512,
                  mapping_kwargs=dict(num_layers=8))  # karras2019stylegan-ffhq-1024x1024.pkl's
SG1_FFHQ_D = dict(c_dim=0, img_resolution=1024, img_channels=3, fmap_base=8192, fmap_max=512, mbstd_group_size=4)
EXIT_WITHIN_S = 30.0


def image_size(path: Path) -> tuple[int, int] | None:
    """An image file's (width, height); None when the job did not write it (a FAIL line, not a traceback)."""
    return Image.open(path).size if path.is_file() else None


class Acceptance:
    def __init__(self, work: Path, code: Path, gpus: int):
        self.work, self.code, self.gpus = work, code, gpus
        self.results: list[dict] = []
        self.logs_lock = threading.Lock()  # with --parallel, two legs may start a job of one name at once
        self.cache = work / "cache"  # the jobs' compile cache, not the user's: its state is the run's own
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "STYLEGAN_CACHE": str(self.cache),
                    "TORCHINDUCTOR_CACHE_DIR": str(self.cache / "torch-compile"),
                    "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def check(self, name: str, ok: bool, figure: str) -> bool:
        self.results.append({"check": name, "ok": bool(ok), "figure": figure})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {figure}", flush=True)
        return ok

    def job(self, name: str, args: list[str], launcher: list[str] | None = None, timeout: float = 540
            ) -> subprocess.CompletedProcess:
        """Run `python -m jobs.<name> args` (or under `launcher`) from the checkout under test. Its output streams
        into logs/<name>-<n>.out and .err, so a run cut short from outside still leaves what it printed."""
        cmd = [*(launcher or [sys.executable]), "-m", f"jobs.{name}", *args]
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        with self.logs_lock:
            n = len(list(logs.glob(f"{name}-*.out")))  # numbered on, so a later `--only` call keeps earlier logs
            out, err = (logs / f"{name}-{n}.{ext}" for ext in ("out", "err"))
            out.touch(), err.touch()  # the number is taken
        start, code = time.time(), 124
        with open(out, "w") as out_file, open(err, "w") as err_file:
            try:
                code = subprocess.run(cmd, cwd=self.code, env=self.env, stdout=out_file, stderr=err_file,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                err_file.write(f"\ntimed out ({timeout} s)\n")
        result = subprocess.CompletedProcess(cmd, code, *(f.read_text(errors="replace") for f in (out, err)))
        result.seconds = time.time() - start
        return result

    # ------------------------------------------------------------------------------------------------------------

    def prepare(self, images: int) -> tuple[Path, Path]:
        data, pkl = self.work / "data", self.work / "ffhq-config-f.pkl"
        if not (data / "dataset.json").is_file():
            self.job("make_textures", ["--count", str(images), "--resolution", "64", "--dest", str(self.work / "tex")])
            self.job("preprocess", ["--source", str(self.work / "tex"), "--dest", str(data), "--resolution", "64"])
        if not pkl.is_file():
            torch.manual_seed(0)
            G, D = Generator(**FFHQ_G).eval(), Discriminator(**FFHQ_D).eval()
            write_nvidia_pickle(pkl, G, D, FFHQ_G, FFHQ_D, augment_p=0.0)
        return data, pkl

    def train_args(self, data: Path, pkl: Path, name: str, kimg: float, config: str = "textures64.yaml") -> list[str]:
        """The preset's run; compiled from its first step, so that these short runs check the compiled graphs
        (`train_background_compile` checks the default, eager until helpers have compiled them)."""
        return ["--config", str(self.code / "configs" / config), f"data={data}", f"resume={pkl}",
                f"outdir={self.work / 'runs'}", f"run_name={name}", f"kimg={kimg}", "tick_kimg=0.5", "snap=1",
                "aug_p=0.2", "workers=4", "compile_start=first-step"]

    def preset_as_users_start(self, data: Path, pkl: Path, name: str) -> list[str]:
        """The preset with its default `compile_start` (background), ticks of 1 kimg, no snapshot before the stop."""
        return [*self.train_args(data, pkl, name, 500), "compile_start=background", "tick_kimg=1", "snap=1000"]

    def exit_delay(self, run: RunDir, exited: float) -> float:
        return exited - run.latest().stat().st_mtime

    def train_until(self, args: list[str], run: RunDir, until: Callable[[str], bool]) -> tuple[int, str, float]:
        """Train a fresh run on 1 GPU and SIGTERM it once `until(its output so far)` holds (or after 480 s).
        Returns its exit code, its output and its start time."""
        shutil.rmtree(run.path, ignore_errors=True)  # a fresh run each time (the data and the pickle are kept)
        start, log = time.time(), self.work / "logs" / f"train-{run.path.name}-a.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "jobs.train", *args], cwd=self.code,
                                    env={**self.env, "CUDA_VISIBLE_DEVICES": "0"}, stdout=log_file,
                                    stderr=subprocess.STDOUT)
            while proc.poll() is None and not until(log.read_text(errors="replace")) and time.time() - start < 480:
                time.sleep(0.2)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        return proc.returncode, log.read_text(errors="replace"), start

    def preempt_and_resume(self, args: list[str], run: RunDir, what: str, stop_after_nimg: int = 0) -> str | None:
        """Train on 1 GPU, SIGTERM it once a snapshot past `stop_after_nimg` exists, then resume to the end,
        checking each exit. Returns the first part's log (None when it failed)."""
        code, out, start = self.train_until(args, run, lambda _: any(n > stop_after_nimg for n, _ in run.snapshots()))
        exited = time.time()
        first_tick = re.search(r"tick 0 kimg .* time (\S+)", out)
        error = next((line for line in out.splitlines() if re.match(r"\w*(Error|Exception)\b", line)), "")
        if not self.check(f"{what}, snapshot, SIGTERM", code == 3 and "stopping on signal 15" in out,
                          f"exit {code}, {exited - start:.0f} s, first tick after "
                          f"{first_tick.group(1) if first_tick else '-'}; first error: {error[:300]!r}"):
            return None
        stopped = run.snapshots()[-1][0]
        self.check(f"{what}: exit after the signal-time snapshot", self.exit_delay(run, exited) <= EXIT_WITHIN_S,
                   f"{self.exit_delay(run, exited):.1f} s after it was written")
        resumed = self.job("train", args)
        exited = time.time()
        self.check(f"{what}: resume at the same kimg, run to the end", resumed.returncode == 0
                   and f"at kimg {stopped / 1000:.3f}" in resumed.stdout and "training complete" in resumed.stdout,
                   f"exit {resumed.returncode}, resumed at {stopped / 1000:.3f} kimg, {resumed.seconds:.0f} s")
        self.check(f"{what}: exit after the last snapshot", self.exit_delay(run, exited) <= EXIT_WITHIN_S,
                   f"{self.exit_delay(run, exited):.1f} s")
        return out

    def train_background_compile(self, data: Path, pkl: Path) -> None:
        """The preset as users start it (`compile_start: background`), first in the run so that the compile cache
        is cold: eager from the first step while helper processes compile, compiled from a tick on; stopped two
        ticks after the switch."""
        run = RunDir(self.work / "runs" / "background")
        args = self.preset_as_users_start(data, pkl, run.path.name)
        switched = re.compile(r"kimg ([\d.]+): compiled main phases from the next step on \(compiled in the "
                              r"background in (\d+) s")

        def two_ticks_after(out: str) -> bool:
            return (found := switched.search(out)) is not None and len(re.findall(r"\ntick ", out[found.end():])) >= 2

        code, out, start = self.train_until(args, run, two_ticks_after)
        found, rows = switched.search(out), run.ticks()
        at = float(found.group(1)) if found else float("inf")
        eager = [r["sec_per_kimg"] for r in rows[1:] if r["kimg"] <= at]
        compiled = [r["sec_per_kimg"] for r in rows if r["kimg"] > at]
        nan = float("nan")
        self.check("train, compile in the background (the default, cold cache): eager from the first step, "
                   "compiled from a tick on, faster", code == 3 and found is not None and len(compiled) >= 2
                   and bool(eager) and compiled[-1] < min(eager) and all(
                       np.isfinite([r["loss_G"], r["loss_D"]]).all() for r in rows),
                   f"exit {code}; launch to first tick {rows[0]['timestamp'] - start:.0f} s; helpers "
                   f"{found.group(2) if found else '-'} s, switched at kimg {at:g}; sec/kimg eager "
                   f"{np.median(eager) if eager else nan:.2f}, the first compiled tick "
                   f"{compiled[0] if compiled else nan:.2f}, then {compiled[-1] if compiled else nan:.2f}"
                   if rows else f"exit {code}, no ticks")

    def train_warm_start(self, data: Path, pkl: Path) -> None:
        """The preset as users start it again, on the cache the first leg filled: its record of the graphs there makes
        the run compile at its first step, which loads them, with no helpers; stopped after two ticks."""
        run = RunDir(self.work / "runs" / "background-warm")
        args = self.preset_as_users_start(data, pkl, run.path.name)
        code, out, start = self.train_until(args, run, lambda out: out.count("\ntick ") >= 2)
        rows = run.ticks()
        self.check("train again on the filled cache (the default compile_start): compiled from the first step, no "
                   "helpers", code == 3 and len(rows) >= 2 and "the compile cache holds these graphs" in out
                   and "helper processes" not in out and "torch.compile on first use" in out,
                   f"exit {code}; launch to first tick {rows[0]['timestamp'] - start:.0f} s; sec/kimg "
                   f"{rows[-1]['sec_per_kimg']:.2f}" if rows else f"exit {code}, no ticks")

    def train_one_gpu(self, data: Path, pkl: Path) -> RunDir | None:
        run = RunDir(self.work / "runs" / "gpu1")
        out = self.preempt_and_resume(self.train_args(data, pkl, "gpu1", 2.0), run,
                                      "train 1 GPU, ADA p>0, R1 + path length")
        if out is None:
            return None
        g = re.search(r"G: copied (\d+)/(\d+) tensors", out)
        d_random = re.search(r"D: start random \(not in the source\): (.*)", out)
        self.check("transfer from the config-f pickle", g and g.group(1) == g.group(2) and d_random
                   and d_random.group(1) == "b64.fromrgb.weight, b64.fromrgb.bias" and "WARNING" not in out,
                   f"G {g.group(0) if g else '?'}, D random: {d_random.group(1) if d_random else '?'}")
        rows = run.ticks()
        regs = [r for r in rows if "r1_penalty" in r and "pl_penalty" in r]
        self.check("R1 and path length ran with augment p > 0", bool(regs) and all(
            np.isfinite([r["r1_penalty"], r["pl_penalty"], r["loss_G"], r["loss_D"]]).all() for r in regs)
            and min(r["augment_p"] for r in rows) > 0,
            f"{len(regs)} ticks with both, p {rows[0]['augment_p']:.3f} -> {rows[-1]['augment_p']:.3f}, "
            f"sec/kimg last tick {rows[-1]['sec_per_kimg']:.2f}, peak {rows[-1]['gpumem_gb']:.1f} GB")
        return run

    def project(self, run: RunDir, data: Path) -> None:
        """Task 3 of 25 of the dataset (20 images: a batch of 16 and one of 4), eager and compiled, then walks, mixing
        and metrics from the VGG16 file."""
        vgg, out, snap = self.vgg_stand_in(), self.work / "projected", str(run.latest())
        distances = {}
        for flags in ([], ["--compile"]):
            folder = out / "compiled" if flags else out
            shutil.rmtree(folder, ignore_errors=True)
            result = self.job("project", ["--network", snap, "--images", str(data), "--outdir", str(folder), "--vgg",
                                          str(vgg), "--steps", "200", "--batch", "16", "--log-every", "10",
                                          "--num-tasks", "25", "--task-index", "3", *flags])
            ws = sorted(folder.glob("*.npz"))
            dists = [np.mean([float(d) for d in line.split("dist ")[1].split()])
                     for line in result.stdout.splitlines() if line.startswith("step ")]
            distances[bool(flags)] = dists[-1] if dists else float("nan")
            targets = list(folder.glob("*-target.png"))
            self.check(f"project{' --compile' if flags else ''}: one array task of the dataset, 200 steps, the "
                       "distance falls", result.returncode == 0 and len(ws) == len(targets) == 20 and len(dists) > 1
                       and dists[-1] < dists[0], f"{len(ws)} w files in {result.seconds:.0f} s, mean distance of "
                       f"the last batch at step 10 {dists[-20] if len(dists) >= 20 else float('nan'):.3f}, at 200 "
                       f"{distances[bool(flags)]:.3f}")
        self.check("project --compile ends where eager projection ends (mean distance within 10%)",
                   abs(distances[True] - distances[False]) <= 0.1 * distances[False],
                   f"{distances[True]:.3f} compiled, {distances[False]:.3f} eager")
        ws = sorted(out.glob("*.npz"))
        if len(ws) < 3:
            return
        walk = self.job("sample", ["--network", snap, "--outdir", str(out / "walk"), "--walk",
                                   f"{ws[0]},{ws[1]},{ws[2]},{ws[0]}", "--frames", "8"])
        mix = self.job("sample", ["--network", snap, "--outdir", str(out / "mix"), "--style-mix",
                                  f"{ws[0]},{ws[1]}", f"{ws[2]},1"])
        self.check("sample: a walk and style mixing between projections", walk.returncode == mix.returncode == 0
                   and (out / "walk" / "walk.gif").is_file() and image_size(out / "mix" / "style-mix.png")
                   == (192, 192), f"walk {walk.seconds:.0f} s, mix {mix.seconds:.0f} s")
        metrics = self.job("evaluate", ["--run", str(run.path), "--metrics", "pr1k3_full,ppl1k_wend", "--vgg",
                                        str(vgg)])
        values = {name: [r["value"] for r in run.results(name)]
                  for name in ("pr1k3_full_precision", "pr1k3_full_recall", "ppl1k_wend")}
        self.check("evaluate: precision/recall and path length from the VGG16 file", metrics.returncode == 0 and all(
            len(v) == len(run.snapshots()) and np.isfinite(v).all() for v in values.values()),
            f"{metrics.seconds:.0f} s, " + ", ".join(f"{k} {[round(x, 3) for x in v]}" for k, v in values.items()))

    def stylegan1_pickle(self) -> Path:
        pkl = self.work / "karras2019-shaped.pkl"
        if not pkl.is_file():
            torch.manual_seed(0)
            write_stylegan1_pickle(pkl, stylegan1.Generator(**SG1_FFHQ_G), stylegan1.Discriminator(**SG1_FFHQ_D),
                                   SG1_FFHQ_G, SG1_FFHQ_D)
        return pkl

    def vgg_stand_in(self) -> Path:
        vgg = self.work / "vgg16-stand-in.pt"
        if not vgg.is_file():
            save_stand_in_vgg(vgg, "vgg16")
        return vgg

    def stylegan1(self, data: Path) -> None:
        """configs/stylegan1-textures64.yaml from a StyleGAN (2018) pickle of FFHQ's shape, preempted and resumed,
        then evaluated and sampled as the seed's workflow does (seeds at 0.7, its walk, style mixing)."""
        pkl = self.stylegan1_pickle()
        run = RunDir(self.work / "runs" / "sg1")
        out = self.preempt_and_resume(self.train_args(data, pkl, "sg1", 1.5, "stylegan1-textures64.yaml"), run,
                                      "StyleGAN (2018) preset, ADA p>0, R1 in every D step")
        if out is None:
            return
        copied = re.findall(r"(G|D): copied (\d+)/(\d+) tensors", out)
        self.check("StyleGAN (2018) transfer by resolution", len(copied) == 2 and all(a == b for _, a, b in copied)
                   and "WARNING" not in out, ", ".join(f"{n} {a}/{b}" for n, a, b in copied))
        rows = run.ticks()
        self.check("StyleGAN (2018): losses finite, p > 0", bool(rows) and all(
            np.isfinite([r["r1_penalty"], r["loss_G"], r["loss_D"]]).all() for r in rows)
            and min(r["augment_p"] for r in rows) > 0,
            f"{len(rows)} ticks, sec/kimg last tick {rows[-1]['sec_per_kimg']:.2f}, peak "
            f"{rows[-1]['gpumem_gb']:.1f} GB" if rows else "no ticks")
        swd = self.job("evaluate", ["--run", str(run.path), "--metrics", "swd"])
        self.check("StyleGAN (2018): evaluate swd", swd.returncode == 0 and len(run.results("swd"))
                   == len(run.snapshots()), f"{[round(r['value'], 1) for r in run.results('swd')]}")
        out_dir, snap = self.work / "samples-sg1", str(run.latest())
        shutil.rmtree(out_dir, ignore_errors=True)
        seeds = self.job("sample", ["--network", snap, "--trunc", "0.7", "--outdir", str(out_dir / "seeds"),
                                    "--seeds", "0-499"])
        walk = self.job("sample", ["--network", snap, "--trunc", "0.8", "--outdir", str(out_dir / "walk"),
                                   "--walk", "200,1000,2500,4000,200", "--frames", "10"])
        mix = self.job("sample", ["--network", snap, "--outdir", str(out_dir / "mix"), "--style-mix", "1,2,3",
                                  "4,5,6"])
        pngs = list((out_dir / "seeds").rglob("seed*.png"))
        self.check("StyleGAN (2018): seeds at 0.7, the walk 200,1000,2500,4000,200, style mixing",
                   seeds.returncode == walk.returncode == mix.returncode == 0 and len(pngs) == 500
                   and (out_dir / "walk" / "walk.gif").is_file() and (out_dir / "mix" / "style-mix.png").is_file(),
                   f"{len(pngs)} PNGs in {seeds.seconds:.0f} s, walk {walk.seconds:.0f} s, mix {mix.seconds:.0f} s")

    def progressive(self, data: Path) -> None:
        """StyleGAN (2018) from scratch, growing as NVIDIA's schedule does (here 0.5 kimg at 32x32, 0.5 kimg of fade
        to 64x64, then 64x64), stopped by SIGTERM inside the fade and resumed there."""
        run = RunDir(self.work / "runs" / "grow")
        args = ["--config", str(self.code / "configs" / "stylegan1-textures64.yaml"), f"data={data}", "resume=none",
                f"outdir={self.work / 'runs'}", "run_name=grow", "kimg=1.5", "tick_kimg=0.25", "snap=1",
                "workers=4", "lod_initial_resolution=32", "lod_training_kimg=0.5", "lod_transition_kimg=0.5",
                "compile_start=first-step"]
        out = self.preempt_and_resume(args, run, "progressive growing 32 -> 64, SIGTERM in the fade", 600)
        if out is None:
            return
        stopped = re.search(r"stopping on signal \S+ at kimg ([\d.]+)", out)
        rows = run.ticks()

        def nvidia_lod(kimg: float) -> float:  # NVIDIA's schedule for these settings: 0.5 kimg at 32, 0.5 of fade
            return max(1 - kimg // 1.0 - max(kimg % 1.0 - 0.5, 0) / 0.5, 0)

        # a tick's lod is that of its last step, which began one batch (32 images) earlier
        off = max((abs(r["lod"] - nvidia_lod(r["kimg"] - 0.032)) for r in rows), default=1.0)
        lods = [round(r["lod"], 2) for r in rows]
        self.check("progressive: lod 1 (32x32), the fade, lod 0 (64x64), losses finite", bool(rows)
                   and lods[0] == 1 and lods[-1] == 0 and any(0 < lod < 1 for lod in lods)
                   and all(np.isfinite([r["loss_G"], r["loss_D"]]).all() for r in rows),
                   f"lod by tick {lods}, sec/kimg last tick {rows[-1]['sec_per_kimg']:.2f}" if rows else "no ticks")
        self.check("progressive: stopped inside the fade, resumed on NVIDIA's schedule", stopped is not None
                   and 0.5 < float(stopped.group(1)) < 1.0 and off <= 0.035,
                   f"stopped at kimg {stopped.group(1) if stopped else '-'}, largest lod off the schedule {off:.3f}")

    def train_all_gpus(self, data: Path, pkl: Path) -> None:
        run = RunDir(self.work / "runs" / f"gpu{self.gpus}x")
        shutil.rmtree(run.path, ignore_errors=True)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.gpus}"]
        result = self.job("train", self.train_args(data, pkl, run.path.name, 1.5), launcher)
        exited = time.time()
        ok = result.returncode == 0 and "training complete" in result.stdout
        rows = run.ticks()
        self.check(f"torchrun over {self.gpus} GPU(s)", ok and len(rows) >= 3,
                   f"exit {result.returncode}, {result.seconds:.0f} s, sec/kimg last tick "
                   f"{rows[-1]['sec_per_kimg']:.2f}" if rows else f"exit {result.returncode}: "
                   f"{result.stderr.strip()[-300:]!r}")
        if ok:
            self.check(f"torchrun over {self.gpus} GPU(s): exit after the last snapshot",
                       self.exit_delay(run, exited) <= EXIT_WITHIN_S, f"{self.exit_delay(run, exited):.1f} s")

    def evaluate(self, run: RunDir) -> None:
        detector = self.work / "random-inception.pth"
        torch.manual_seed(0)
        torch.save(FIDInceptionV3().state_dict(), detector)
        result = self.job("evaluate", ["--run", str(run.path), "--metrics", "swd,fid2k", "--compile", "--detector",
                                       str(detector)])
        swd, fid = run.results("swd"), run.results("fid2k")
        self.check("evaluate --compile (swd, fid2k with a random-weight detector)", result.returncode == 0
                   and len(swd) == len(fid) == len(run.snapshots()) and all(np.isfinite(r["value"]) for r in swd + fid),
                   f"{len(swd)} snapshots, {result.seconds:.0f} s, swd {[round(r['value'], 1) for r in swd]}")

    def sample(self, run: RunDir, pkl: Path) -> None:
        out, snap = self.work / "samples", str(run.latest())
        shutil.rmtree(out, ignore_errors=True)
        common = ["--checkpoint", snap, "--trunc", "0.7", "--compile"]
        seeds = self.job("sample", [*common, "--outdir", str(out / "seeds"), "--seeds", "0-1999", "--png-level", "0"])
        pngs = sorted((out / "seeds").rglob("seed*.png"))
        self.check("sample --compile seeds (psi 0.7)", seeds.returncode == 0 and len(pngs) == 2000
                   and np.asarray(Image.open(pngs[-1])).shape == (64, 64, 3),
                   f"{len(pngs)} PNGs, {seeds.seconds:.0f} s")
        grid = self.job("sample", [*common, "--outdir", str(out / "grid"), "--seeds", "0-63", "--grid", "8x8"])
        self.check("sample --compile grid", grid.returncode == 0 and image_size(out / "grid" / "grid0000.png")
                   == (512, 512), f"{grid.seconds:.0f} s")
        walk = self.job("sample", [*common, "--outdir", str(out / "walk"), "--walk", "0,1,2,0", "--frames", "8"])
        mp4 = out / "walk" / "walk.mp4"
        self.check("sample --compile walk (GIF + MP4)", walk.returncode == 0 and (out / "walk" / "walk.gif").is_file()
                   and mp4.is_file() and mp4.stat().st_size > 0, f"{walk.seconds:.0f} s" if mp4.is_file() else
                   "no walk.mp4: is imageio-ffmpeg installed where the jobs run?")
        mix = self.job("sample", [*common, "--outdir", str(out / "mix"), "--style-mix", "1,2,3", "4,5,6"])
        self.check("sample --compile style mixing", mix.returncode == 0 and image_size(out / "mix" / "style-mix.png")
                   == (256, 256), f"{mix.seconds:.0f} s")
        converted = self.job("convert", ["--source", str(pkl), "--dest", str(self.work / "ffhq.pt")])
        diffs, ok = [], converted.returncode == 0
        for dest in ("net.safetensors", "net.pkl"):  # ours for sharing; NVIDIA's PyTorch tools
            ok &= self.job("convert", ["--source", snap, "--dest", str(self.work / dest)]).returncode == 0
            again = self.job("sample", ["--checkpoint", str(self.work / dest), "--trunc", "0.7", "--outdir",
                                        str(out / f"again-{dest}"), "--seeds", "1999"])
            if again.returncode == 0 and pngs:  # eager, compiled above: the fp16 blocks may round differently by 1
                diffs.append(int(np.abs(np.asarray(Image.open(out / f"again-{dest}" / "0001" / "seed1999.png"),
                                                   np.int16) - np.asarray(Image.open(pngs[-1]), np.int16)).max()))
        self.check("convert (.pkl -> .pt, snapshot -> .safetensors and NVIDIA .pkl), same pixels", ok
                   and len(diffs) == 2 and max(diffs) <= 1,
                   f"max differences {diffs}/255; {converted.stdout.strip()[-100:]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/gpu-acceptance")
    parser.add_argument("--gpus", type=int, default=torch.cuda.device_count())
    parser.add_argument("--images", type=int, default=500, help="textures in the dataset")
    parts = ("train", "torchrun", "evaluate", "sample", "project", "stylegan1", "progressive")
    parser.add_argument("--only", nargs="+", choices=parts, default=list(parts))
    parser.add_argument("--code", default=str(REPO), help="checkout whose jobs run (default: this one)")
    parser.add_argument("--json", help="write the checks to this file")
    parser.add_argument("--parallel", action="store_true", help="the StyleGAN (2018) legs beside the StyleGAN2 legs")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device: this is the GPU acceptance run (the CPU paths are the test suite's)")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    acc = Acceptance(work, Path(args.code).resolve(), args.gpus)
    if "train" in args.only:  # the preset's first leg starts cold, as a user's first run (no compile record either)
        shutil.rmtree(acc.cache, ignore_errors=True)
    print(f"GPU acceptance: {torch.cuda.get_device_name()} x {args.gpus}, torch {torch.__version__}, code "
          f"{acc.code}", flush=True)
    data, pkl = acc.prepare(args.images)
    # weights drawn from torch's global generator before any leg runs: the same files whether or not legs overlap
    if "stylegan1" in args.only:
        acc.stylegan1_pickle()
    if "project" in args.only:
        acc.vgg_stand_in()
    run = RunDir(work / "runs" / "gpu1")  # --only evaluate/sample: a run left by an earlier call
    if "train" not in args.only and run.latest() is None and {"evaluate", "sample", "project"} & set(args.only):
        sys.exit(f"error: {run.path} has no snapshot: run the train part first (--only train)")

    def stylegan2_legs() -> None:
        if "train" in args.only:
            acc.train_background_compile(data, pkl)
            acc.train_warm_start(data, pkl)
        latest = acc.train_one_gpu(data, pkl) if "train" in args.only else run
        if "torchrun" in args.only:
            acc.train_all_gpus(data, pkl)
        if latest is not None and "evaluate" in args.only:
            acc.evaluate(latest)
        if latest is not None and "sample" in args.only:
            acc.sample(latest, pkl)
        if latest is not None and "project" in args.only:
            acc.project(latest, data)

    def stylegan1_legs() -> None:
        if "stylegan1" in args.only:
            acc.stylegan1(data)
        if "progressive" in args.only:
            acc.progressive(data)

    with ThreadPoolExecutor(2 if args.parallel else 1) as pool:  # one worker: one leg after the other, as listed
        for done in [pool.submit(legs) for legs in (stylegan2_legs, stylegan1_legs)]:
            done.result()
    failed = [r for r in acc.results if not r["ok"]]
    print(f"RESULT gpu_acceptance: {len(acc.results) - len(failed)}/{len(acc.results)} checks passed in "
          f"{time.time() - start:.0f} s on {torch.cuda.get_device_name()} x {args.gpus}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(acc.results, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
