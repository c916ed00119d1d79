"""The training loop: data -> G/D phases -> EMA -> ADA -> tick report -> snapshot, resumable and preemptible; for
StyleGAN2 and StyleGAN (2018) networks (`family`), the latter optionally growing progressively
(`stylegan.train.progressive`).

Semantics follow NVIDIA's StyleGAN2-ADA trainer: phases Gmain, Greg (path length, every pl_interval steps),
Dmain, Dreg (R1, every r1_interval steps; r1_interval 1: one phase Dboth, as StyleGAN 2018's) with the
lazy-regularisation lr/beta correction; gradients are averaged
over ranks by one all-reduce of the flattened gradients (no DDP wrapper: the double backward of R1 and path length
needs none). Two deliberate refinements, both world-size invariant and Adam-neutral:
  * each minibatch round's loss is divided by the number of rounds, so the gradient is the mean over the whole
    batch however it is split over GPUs and rounds;
  * all randomness of a round (latents, style mixing, noise, augmentation) is drawn from a seed of (seed, step,
    phase, global round index), so N GPUs reproduce 1 GPU with gradient accumulation.
What the run starts from is decided before anything is built (`stylegan.train.startup`); how the step runs fast on
a GPU lives beside it (`stylegan.train.fastpath`).
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from stylegan.cluster import EXIT_PREEMPTED, StopRequest
from stylegan.data.reader import device_batches, first_images, make_loader, training_pipeline
from stylegan.distributed import DistEnv, all_reduce_max, all_reduce_sum, broadcast_module
from stylegan.errors import UserError
from stylegan.fileio import write_text_atomic
from stylegan.formats.checkpoint import (
    FORMAT,
    TrainingSnapshot,
    capture_rng,
    load_training_snapshot,
    non_finite_networks,
    restore,
    restore_rng,
    save_checkpoint,
)
from stylegan.formats.transfer import fine_tune
from stylegan.generate import fakes_grid, grid_latents
from stylegan.imagefiles import tile
from stylegan.models import FAMILIES
from stylegan.progress import process_age
from stylegan.rundir import RunDir, RunOwner
from stylegan.train.augment import AugmentPipe
from stylegan.train.config import TrainConfig, config_dict
from stylegan.train.fastpath import (
    CompileAhead,
    CompileRecord,
    GraphRounds,
    LaggedFlags,
    average_and_step,
    compiled_networks,
    compiled_phases,
    compiles,
    ema_update,
    lazy_adam,
    lazy_ratio,
)
from stylegan.train.losses import StyleGAN2Loss, Terms
from stylegan.train.progressive import Stage, reals_at_lod, stage_at
from stylegan.train.runlog import PhaseTimes, RunLog, TickStats, memory_figures
from stylegan.train.startup import StartPlan, plan_start


@dataclass
class Phase:
    name: str  # Gmain | Greg | Dmain | Dreg | Dboth: the StyleGAN2Loss method that computes it
    index: int  # position in the step, part of each round's random seed
    params: list[torch.nn.Parameter]
    opt: torch.optim.Optimizer
    interval: int  # runs on steps that are a multiple of this


def build_phases(cfg: TrainConfig, G: nn.Module, D: nn.Module, frozen: list[str]) -> list[Phase]:
    """Gmain, Greg, Dmain, Dreg (the regularisers only when their weight is not 0; R1 with r1_interval 1 is no lazy
    regulariser but part of D's every step: Dboth, as StyleGAN 2018's); D's frozen layers train in none. The first
    phase holds G's optimizer, the last D's."""
    G_params = list(G.parameters())
    D_params = [p for n, p in D.named_parameters() if not n.startswith(tuple(f + "." for f in frozen))]
    G_lazy = cfg.pl_interval if cfg.pl_weight != 0 else 0
    D_lazy = cfg.r1_interval if cfg.r1_gamma != 0 and cfg.r1_interval > 1 else 0
    G_opt = lazy_adam(G_params, cfg.glr, cfg.betas, cfg.eps, G_lazy)
    D_opt = lazy_adam(D_params, cfg.dlr, cfg.betas, cfg.eps, D_lazy)
    phases = [Phase("Gmain", 0, G_params, G_opt, 1)]
    if G_lazy:
        phases.append(Phase("Greg", 1, G_params, G_opt, G_lazy))
    if cfg.r1_gamma != 0 and not D_lazy:
        return [*phases, Phase("Dboth", 2, D_params, D_opt, 1)]
    phases.append(Phase("Dmain", 2, D_params, D_opt, 1))
    return [*phases, Phase("Dreg", 3, D_params, D_opt, D_lazy)] if D_lazy else phases


def ema_beta(cfg: TrainConfig, cur_nimg: int, batch: int) -> float:
    """G_ema's decay per step of `batch` images: half-life ema_kimg, shortened to ema_rampup * images seen early in
    a run."""
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * cfg.ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv, plan: StartPlan | None = None):
        """Build everything `plan` (by default the start-up plan of `cfg` for env's processes) decided."""
        self.started, self.env, self.device = time.time(), env, env.device
        self.age_at_start = process_age()  # Python, imports, the plan and the process group before this
        plan = plan or plan_start(cfg, env.world)
        self.cfg, self.rundir, self.c_dim = plan.cfg, plan.rundir, plan.c_dim
        self.batch_gpu, self.rounds, self.frozen = plan.batch_gpu, plan.rounds, plan.frozen
        self.G_kwargs, self.D_kwargs = plan.G_kwargs, plan.D_kwargs
        cfg = self.cfg
        # the main process owns the folder while it trains: a second training of it stops here, before writing
        self.owner = RunOwner(self.rundir).acquire() if env.is_main else None
        if env.is_main:
            self.rundir.checkpoints.mkdir(parents=True, exist_ok=True)
        self.runlog = RunLog(self.rundir, env.is_main)
        if self.device.type == "cuda":  # TF32 off, as NVIDIA's trainer: its 10-bit mantissa changes what is learned
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (rank 0's are broadcast anyway)
        # NVIDIA's trainer draws its DataLoader's base seed from this generator before it builds its networks: the
        # same draw here makes seed s build the networks NVIDIA's seed s builds on one GPU, so runs pair by seed.
        torch.empty((), dtype=torch.int64).random_()
        Generator, Discriminator = FAMILIES[cfg.family]
        self.G = Generator(**self.G_kwargs).train().requires_grad_(False).to(self.device)
        self.D = Discriminator(**self.D_kwargs).train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.augment = AugmentPipe(cfg.augpipe, cfg.aug_p).to(self.device) if cfg.aug != "noaug" else None
        self.loss = StyleGAN2Loss(self.G, self.D, self.augment, cfg.loss_config())
        self.graphs = GraphRounds(False, self.rounds)
        self.phases = build_phases(cfg, self.G, self.D, self.frozen)
        self.G_opt, self.D_opt = self.phases[0].opt, self.phases[-1].opt
        self.ada_signs = torch.zeros(2, device=self.device)  # sum of real_sign means and their count since the update
        self.progress = {"cur_nimg": 0, "cur_tick": 0, "batch_idx": 0, "resumes": 0}
        self.faults = {"nonfinite_steps": 0, "rollbacks": 0, "consecutive_nonfinite": 0, "rollbacks_in_a_row": 0}
        self.stats = TickStats(self.device)
        self.phase_times = PhaseTimes(self.device)
        # the batch and learning rates the optimizers and the split were made for; then the run's own stage
        self.stage = Stage(0.0, cfg.resolution, cfg.batch, cfg.glr, cfg.dlr)
        if plan.snapshot is not None:
            self.load_full(plan.snapshot, plan.snapshot_state)
        else:
            self.start_new_run(plan)
        plan.snapshot_state = plan.source = None  # the networks hold these weights now: free the host copies
        for module in (self.G, self.D, self.G_ema, self.augment):
            if module is not None:
                broadcast_module(module)

        self.reals = self.real_batches()
        self.enter_stage(stage_at(cfg, self.progress["cur_nimg"], env.world), reset=plan.snapshot is not None)
        self.grid_z, self.grid_c = grid_latents(cfg.grid_size ** 2, self.G.z_dim, self.c_dim, cfg.seed + 123,
                                                self.device)
        if env.is_main:
            write_text_atomic(self.rundir.config, yaml.safe_dump(config_dict(cfg), sort_keys=False))
        self.compile_ahead, self.compile_record = None, None
        if compiles(cfg, self.device):
            self.compile_record = CompileRecord(cfg, self.c_dim, self.stage, self.batch_gpu, self.device)
            self.start_compiling(plan)

    # ------------------------------------------------------------------------------------------------------------
    # Snapshots, resume and transfer

    def checkpoint_state(self) -> TrainingSnapshot:
        return {
            "format": FORMAT, "family": self.cfg.family, "G_kwargs": self.G_kwargs, "D_kwargs": self.D_kwargs,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "G_opt": self.G_opt.state_dict(), "D_opt": self.D_opt.state_dict(),
            "augment": {"p": float(self.augment.p) if self.augment is not None else 0.0},
            "progress": dict(self.progress), "faults": dict(self.faults), "pl_mean": self.loss.pl_mean.cpu(),
            "ada_signs": self.ada_signs.cpu(), "rng": capture_rng(), "config": config_dict(self.cfg),
        }

    def save_snapshot(self) -> None:
        nimg = self.progress["cur_nimg"]
        if self.env.is_main and (bad := non_finite_networks(state := self.checkpoint_state())):
            self.runlog.warn(f"no snapshot at kimg {nimg / 1000:.3f}: {', '.join(bad)} hold non-finite values")
        elif self.env.is_main:
            save_checkpoint(self.rundir.snapshot(nimg), state)
            grid = fakes_grid(self.G_ema, self.grid_z, self.grid_c, self.cfg.grid_size, self.batch_gpu)
            self.runlog.sheet("fakes", grid, nimg, self.rundir.fakes(nimg))
            self.runlog.log(f"snapshot {self.rundir.snapshot(nimg)}")
            for old in self.rundir.prune(self.cfg.keep_snapshots):
                self.runlog.log(f"removed {old.name} (keep_snapshots={self.cfg.keep_snapshots})")

    def load_full(self, path: Path, ckpt: dict | None = None) -> None:
        """Everything of a snapshot of this run (`ckpt`: its contents, already checked): networks, optimizers,
        augmentation, schedule, random state."""
        ckpt = ckpt if ckpt is not None else load_training_snapshot(path, self.cfg.family, self.G_kwargs,
                                                                          self.D_kwargs)
        restore(path, {"G": self.G, "D": self.D, "G_ema": self.G_ema, "G_opt": self.G_opt, "D_opt": self.D_opt}, ckpt)
        if self.augment is not None:
            self.augment.p.fill_(ckpt["augment"]["p"])
        self.loss.pl_mean.copy_(ckpt["pl_mean"])
        self.ada_signs.copy_(ckpt["ada_signs"])
        self.progress = dict(ckpt["progress"])
        self.progress["resumes"] += 1
        self.faults.update({k: v for k, v in ckpt.get("faults", {}).items() if k != "consecutive_nonfinite"})
        restore_rng(ckpt["rng"])
        if self.cfg.lod_initial_resolution:  # Adam's moments are those of the level the snapshot's last step trained
            self.stage = dataclasses.replace(self.stage, lod=float(self.G.synthesis.lod))
        self.runlog.log(f"resumed from {path} at kimg {self.progress['cur_nimg'] / 1000:.3f}")

    def start_new_run(self, plan: StartPlan) -> None:
        """Weights of `resume` (G, G_ema and D as they are there), else random; the plan's transfer report and
        warnings go to the log. Ticks of an earlier start that ended before its first snapshot are dropped."""
        if self.env.is_main and self.rundir.stats.is_file():
            self.rundir.stats.unlink()
            self.runlog.log("starting again: the earlier start of this run wrote no snapshot")
        if plan.source is not None:
            # the plan checked this transfer on the meta device and holds its report
            fine_tune(plan.source, self.cfg.resume, self.G, self.G_ema, self.D, self.G_kwargs, self.D_kwargs,
                      self.cfg.transfer_partial)
            for text in plan.transfer:
                self.runlog.log(text)
            self.runlog.log(f"fine-tuning from {self.cfg.resume}: ada_kimg {self.cfg.ada_kimg:g}, ema_rampup "
                            f"{self.cfg.ema_rampup:g}")
        for text in plan.warnings:
            self.runlog.warn(text)
        reals = first_images(self.cfg.data, self.cfg.grid_size ** 2, self.cfg.resolution) if self.env.is_main else []
        if reals:  # a sheet of reals beside the fakes, once, as NVIDIA's reals.png
            grid = tile(np.stack(reals), self.cfg.grid_size, self.cfg.grid_size)
            self.runlog.sheet("reals", grid, 0, self.rundir.reals)

    def real_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches of reals (and labels) on the device, batch_gpu at a time, in an order of their own for
        each start, resume and change of batch (the seed adds the resumes and the image count)."""
        cfg, env, seed = self.cfg, self.env, self.cfg.seed + self.progress["resumes"] + self.progress["cur_nimg"]
        return device_batches(make_loader(
            training_pipeline(cfg.data, rank=env.rank, world=env.world, seed=seed,
                              xflip=cfg.mirror, resolution=cfg.resolution),
            batch_size=self.batch_gpu, workers=cfg.workers, pin_memory=self.device.type == "cuda", drop_last=True),
            self.device)

    # ------------------------------------------------------------------------------------------------------------
    # Progressive growing

    def enter_stage(self, stage: Stage, reset: bool = True) -> None:
        """Train at `stage` from the next step: the networks' lod, the learning rates, the batch split and loader
        when the batch changes, style mixing over the layers in use; Adam's moments reset when a fade starts or
        ends (NVIDIA's reset_opt_for_new_lod; `reset` False: a new run's first stage, which has no moments yet)."""
        old, self.stage = self.stage, stage
        if self.cfg.lod_initial_resolution:  # every step: a rollback restores an older snapshot's lod
            for net in (self.G.synthesis, self.G_ema.synthesis, self.D):
                net.lod.fill_(stage.lod)
            self.loss.mixing_layers = self.G.num_ws - 2 * int(stage.lod)
        if stage == old:
            return
        lazy = {p.name: p.interval for p in self.phases}
        for opt, lr, interval in ((self.G_opt, stage.glr, lazy.get("Greg", 0)),
                                  (self.D_opt, stage.dlr, lazy.get("Dreg", 0))):
            for group in opt.param_groups:
                group["lr"] = lr * lazy_ratio(interval)
        if stage.batch != old.batch:
            self.batch_gpu, self.rounds = self.cfg.split_batch(self.env.world, stage.batch)
            self.graphs.rounds = self.rounds
            self.reals = self.real_batches()
        if reset and not stage.same_level(old):
            for opt in (self.G_opt, self.D_opt):
                opt.state.clear()
        if stage.resolution != old.resolution or not stage.same_level(old):
            self.runlog.log(f"kimg {self.progress['cur_nimg'] / 1000:.3f}: lod {stage.lod:g}, {stage.resolution}x"
                            f"{stage.resolution}{' fading in' if stage.lod % 1 else ''}, batch {stage.batch} = "
                            f"{self.batch_gpu} x {self.rounds} x {self.env.world}, lr {stage.glr:g}/{stage.dlr:g}"
                            f"{', Adam state reset' if reset and not stage.same_level(old) else ''}")

    # ------------------------------------------------------------------------------------------------------------
    # Compiled main phases

    def start_compiling(self, plan: StartPlan) -> None:
        """Compile the main phases at the first step (compile_start: first-step, or a cache that holds their graphs
        already) or in helper processes while the run steps eagerly."""
        if self.cfg.compile_start == "first-step":
            self.use_compiled()
        elif self.compile_record.held_on_every_rank():
            self.runlog.log(f"the compile cache holds these graphs ({self.compile_record.path}): compiling at the "
                            "first step, which loads them, instead of in the background")
            self.use_compiled()
        else:
            compiled = compiled_phases(self.cfg)
            jobs = [(plan, self.env, self.progress["cur_nimg"], p.name) for p in self.phases if p.name in compiled]
            self.compile_ahead = CompileAhead(fill_compile_cache, jobs, self.env, self.cfg.compile_helper_nice)

    def use_compiled(self) -> None:
        """Gmain and Dmain (and Greg with compile_greg) run compiled from the next step on (the same parameters and
        functions)."""
        self.loss.G_main, self.loss.D_main, self.loss.G_reg = compiled_networks(self.G, self.D, self.augment,
                                                                               self.loss.path_lengths, self.cfg)
        self.graphs.enabled = self.cfg.compile_backend == "inductor" and self.cfg.compile_mode == "reduce-overhead"

    def switch_when_compiled(self) -> None:
        """At a tick: once every node's helpers have filled the compile cache, the main phases run compiled from the
        next step on, whose first run loads them from the cache; if a helper failed, they stay eager."""
        if self.compile_ahead is None or (state := self.compile_ahead.state()) == "running":
            return
        seconds, self.compile_ahead = time.time() - self.compile_ahead.started, None
        kimg = f"kimg {self.progress['cur_nimg'] / 1000:.3f}"
        if state == "failed":
            self.runlog.warn(f"{kimg}: the background compile failed after {seconds:.0f} s (its error is above); "
                             "training goes on eagerly (compile_start=first-step compiles in this process instead)")
            return
        self.use_compiled()
        self.runlog.log(f"{kimg}: compiled main phases from the next step on (compiled in the background in "
                        f"{seconds:.0f} s; that step loads them from the compile cache)")

    # ------------------------------------------------------------------------------------------------------------
    # One training step

    def step(self) -> torch.Tensor:
        """One training iteration as the loop runs it: the phases due, EMA, the progress counters and the ADA
        adjustment, all queued without waiting for the GPU. Returns whether every phase's gradients were finite, a
        device bool (`settle` does the host's part). Benchmarks time exactly this."""
        cfg = self.cfg
        if cfg.lod_initial_resolution:
            self.enter_stage(stage_at(cfg, self.progress["cur_nimg"], self.env.world))
        reals = [next(self.reals) for _ in range(self.rounds)]
        if self.stage.lod:
            reals = [(reals_at_lod(real, self.stage.lod), c) for real, c in reals]
        due = [p for p in self.phases if self.progress["batch_idx"] % p.interval == 0]
        stepped = []
        for phase in due:
            # profiles and the tick's Timing/<phase> show each phase by name
            with torch.profiler.record_function(phase.name), self.phase_times(phase.name):
                self.accumulate_gradients(phase, reals)
                stepped.append(average_and_step(phase.params, phase.opt, self.env.world))
        finite = torch.stack(stepped).all()
        ema_update(self.G_ema, self.G, finite * (1 - ema_beta(cfg, self.progress["cur_nimg"], self.stage.batch)),
                   finite)
        self.progress["cur_nimg"] += self.stage.batch
        self.progress["batch_idx"] += 1
        if cfg.aug == "ada" and self.progress["batch_idx"] % cfg.ada_interval == 0:
            self.update_ada()
        return finite

    def accumulate_gradients(self, phase: Phase, reals: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The phase's gradients over this rank's rounds, each round's loss weighted so that the sum is the mean
        over the global batch. The running values the phase lerps (pl_mean, w_avg) end as the mean over all rounds
        of all ranks."""
        running = self.loss.running(phase.name)
        start, ends = [t.clone() for t in running], [[] for _ in running]
        for p in phase.params:
            p.requires_grad_(True)
        for rnd, (real, real_c) in enumerate(reals):
            for t, s in zip(running, start, strict=True):
                t.copy_(s)
            self.graphs.begin()
            for loss, values in self.round_losses(phase, rnd, real, real_c):
                (loss * (phase.interval / self.rounds)).backward()
                self.stats.add(values)
                if "real_sign" in values:  # the D phases
                    self.ada_signs += torch.stack([values["real_sign"], torch.ones_like(values["real_sign"])])
            self.graphs.own_gradients(phase.params, rnd)
            for end, t in zip(ends, running, strict=True):
                end.append(t.clone())
        for p in phase.params:
            p.requires_grad_(False)
        # Each round lerped the running values from the same start, and a lerp is linear: the mean over all rounds
        # of all ranks is one lerp with the global batch mean.
        for t, end in zip(running, ends, strict=True):
            t.copy_(all_reduce_sum(torch.stack(end).mean(0)) / self.env.world)

    def round_losses(self, phase: Phase, rnd: int, real: torch.Tensor, real_c: torch.Tensor) -> Terms:
        """The phase's loss terms on one round's reals (each backpropagated before the next is asked for), every
        random draw from the round's own seed."""
        torch.manual_seed(self.round_seed(phase, rnd))
        z = torch.randn(self.batch_gpu, self.G.z_dim, device=self.device)
        gen_c = real_c[torch.randperm(len(real_c), device=self.device)]
        for loss, values in self.loss(phase.name, real, real_c, z, gen_c):
            if phase.name == "Gmain" and self.progress["batch_idx"] in self.cfg.inject_nan_steps:  # the tests' fault
                loss = loss * float("nan")
            yield loss, values

    def round_seed(self, phase: Phase, rnd: int) -> int:
        global_round = self.env.rank * self.rounds + rnd
        seq = np.random.SeedSequence([self.cfg.seed, self.progress["batch_idx"], phase.index, global_round])
        return int(seq.generate_state(1, dtype=np.uint64)[0] % (2 ** 63))

    def settle(self, flags: LaggedFlags) -> bool:
        """The host's part of the step whose flags `flags` holds, if any: count a skipped step, roll back after too
        many. Returns whether a rank asked to stop."""
        if (taken := flags.take()) is None:
            return False
        step, nonfinite, stop = taken
        if not nonfinite:
            self.faults["consecutive_nonfinite"] = self.faults["rollbacks_in_a_row"] = 0
            return stop
        self.faults["nonfinite_steps"] += 1
        self.faults["consecutive_nonfinite"] += 1
        self.runlog.log(f"non-finite gradients at step {step}: step skipped "
                        f"({self.faults['consecutive_nonfinite']} in a row)")
        if self.faults["consecutive_nonfinite"] >= self.cfg.nan_rollback:
            self.rollback()
        return stop

    def update_ada(self) -> None:
        signs = all_reduce_sum(self.ada_signs.clone())
        rt = signs[0] / signs[1].clamp(min=1)
        adjust = torch.sign(rt - self.cfg.ada_target) * (self.stage.batch * self.cfg.ada_interval) / (
            self.cfg.ada_kimg * 1000)
        self.augment.p.copy_((self.augment.p + adjust).clamp(min=0))
        self.ada_signs.zero_()

    def rollback(self) -> None:
        path, f = self.rundir.latest(), self.faults
        f.update(rollbacks=f["rollbacks"] + 1, rollbacks_in_a_row=f["rollbacks_in_a_row"] + 1, consecutive_nonfinite=0)
        if path is None or f["rollbacks_in_a_row"] > 2:  # rolling back to the same state again would loop forever
            where = f"again after 2 rollbacks to {path}" if path else "and no snapshot to roll back to"
            raise UserError(f"training diverged: {self.cfg.nan_rollback} non-finite steps in a row {where}; lower "
                            "glr/dlr or raise r1_gamma")
        progress, faults = dict(self.progress), dict(self.faults)
        self.load_full(path)  # networks, optimizers, augmentation; the schedule and the fault counts go on
        self.progress, self.faults = progress, faults
        self.runlog.log(f"rolled back to {path} after {self.cfg.nan_rollback} non-finite steps")

    # ------------------------------------------------------------------------------------------------------------
    # The loop

    def run(self) -> int:
        """Train to cfg.kimg. Returns 0 when done, EXIT_PREEMPTED after a snapshot written on a stop signal."""
        with StopRequest() as self.stop:
            return self.train_loop()

    def train_loop(self) -> int:
        cfg, env = self.cfg, self.env
        start_time = tick_start_time = time.time()
        setup_seconds = start_time - self.started
        tick_start_nimg, maintenance, first_tick = self.progress["cur_nimg"], 0.0, True
        self.runlog.log(f"training {cfg.run_name}: {env.world} process(es) on {self.device}, batch "
                        f"{self.stage.batch} = {self.batch_gpu} x {self.rounds} round(s) x {env.world}, {cfg.kimg} "
                        f"kimg, run dir {self.rundir}")
        flags = LaggedFlags(self.device)
        while True:
            finite = self.step()
            # torch.full, not torch.tensor: a host-to-device copy would wait for the queued work
            signal = torch.full([], float(self.stop.signum is not None), device=self.device)
            step_flags = all_reduce_max(torch.stack([(~finite).float(), signal]))
            stop = self.settle(flags)
            flags.put(step_flags, self.progress["batch_idx"] - 1)
            done = self.progress["cur_nimg"] >= cfg.kimg * 1000
            if not (done or stop or first_tick or self.progress["cur_nimg"] >= tick_start_nimg + cfg.tick_kimg * 1000):
                continue
            stop = self.settle(flags) or stop  # a tick reports (and may snapshot) settled steps only
            self.report_tick(time.time() - start_time, time.time() - tick_start_time,
                             self.progress["cur_nimg"] - tick_start_nimg, maintenance)
            if first_tick:
                self.runlog.startup(self.age_at_start, setup_seconds, time.time() - start_time, self.compiling())
            first_tick = False
            self.switch_when_compiled()
            if env.is_main and self.compiling() == "compiled":
                self.compile_record.write(self.rundir.path)
            maintenance_start = time.time()
            if stop or done or self.progress["cur_tick"] % cfg.snap == 0:
                self.save_snapshot()
            self.progress["cur_tick"] += 1
            tick_start_nimg, tick_start_time = self.progress["cur_nimg"], time.time()
            maintenance = tick_start_time - maintenance_start
            if stop:
                self.runlog.log(f"stopping on signal {self.stop.signum or 'from another rank'} at kimg "
                                f"{self.progress['cur_nimg'] / 1000:.3f}: snapshot written, exit {EXIT_PREEMPTED}")
                return EXIT_PREEMPTED
            if done:
                self.runlog.log("training complete")
                return 0

    def report_tick(self, total: float, tick_seconds: float, tick_nimg: int, maintenance: float) -> None:
        means = self.stats.reduce()
        self.runlog.tick({
            "tick": self.progress["cur_tick"], "kimg": self.progress["cur_nimg"] / 1000, "time_s": total,
            "timestamp": time.time(), "sec_per_tick": tick_seconds,
            "sec_per_kimg": tick_seconds / max(tick_nimg / 1000, 1e-9), "maintenance_s": maintenance,
            "augment_p": float(self.augment.p) if self.augment is not None else 0.0,
            "nimg": self.progress["cur_nimg"], **memory_figures(self.device), **self.phase_times.reduce(),
            "images_per_sec_per_gpu": tick_nimg / max(tick_seconds, 1e-9) / self.env.world,
            **means, "pl_mean": float(self.loss.pl_mean), "glr": self.stage.glr, "dlr": self.stage.dlr,
            **({"lod": self.stage.lod, "resolution": self.stage.resolution, "batch": self.stage.batch}
               if self.cfg.family == "stylegan1" else {}),
            **{k: v for k, v in self.faults.items() if k != "consecutive_nonfinite"},
        })

    def compiling(self) -> str:
        """How the main phases run: compiled, background (eager while helpers compile) or eager."""
        return "background" if self.compile_ahead is not None else "compiled" if self.loss.G_main is not self.G \
            else "eager"

    def close(self) -> None:
        if self.compile_ahead is not None:
            self.compile_ahead.stop()
        self.runlog.close()
        if self.owner is not None:
            self.owner.release()


def fill_compile_cache(plan: StartPlan, env: DistEnv, cur_nimg: int, phase: str) -> None:
    """A helper process of `compile_start: background`: the trainer of `plan`, built in a scratch folder with random
    weights (the graphs do not depend on their values), at the stage of `cur_nimg`, runs `phase` compiled once, which
    puts its graphs into the compile cache. Nothing of the run's own folder is touched. A progressive run that enters
    another stage before it switches compiles that stage's graphs itself, as without helpers."""
    scratch = Path(tempfile.mkdtemp(prefix="stylegan-compile-"))
    try:
        cfg = dataclasses.replace(plan.cfg, outdir=str(scratch), workers=0, compile_start="first-step")
        helper = dataclasses.replace(plan, cfg=cfg, rundir=RunDir(scratch / cfg.run_name), snapshot=None,
                                     snapshot_state=None, source=None, transfer=[], warnings=[])
        trainer = Trainer(cfg, DistEnv(0, env.world, env.local_rank, env.device), helper)
        trainer.progress["cur_nimg"] = cur_nimg  # a progressive run's step enters the stage of this image count
        trainer.phases = [p for p in trainer.phases if p.name == phase]
        trainer.step()
        if env.device.type == "cuda":
            torch.cuda.synchronize(env.device)
        trainer.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
