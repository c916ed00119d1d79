"""The StyleGAN2 training loop: data -> G/D phases -> EMA -> ADA -> tick log -> snapshot, resumable and preemptible.

Semantics follow NVIDIA's StyleGAN2-ADA trainer: phases Gmain, Greg (path length, every pl_interval steps),
Dmain, Dreg (R1, every r1_interval steps) with the lazy-regularisation lr/beta correction; gradients are averaged
over ranks by one all-reduce of the flattened gradients (no DDP wrapper: the double backward of R1 and path length
needs none). Two deliberate refinements, both world-size invariant and Adam-neutral:
  * each minibatch round's loss is divided by the number of rounds, so the gradient is the mean over the whole
    batch however it is split over GPUs and rounds;
  * all randomness of a round (latents, style mixing, noise, augmentation) is drawn from a seed of (seed, step,
    phase, global round index), so N GPUs reproduce 1 GPU with gradient accumulation.
"""

from __future__ import annotations

import copy
import json
import signal
import time
import types
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.tensorboard import SummaryWriter

from stylegan import losses
from stylegan.augment import AugmentPipe
from stylegan.checkpoint import (
    FORMAT,
    capture_rng,
    check_same_architecture,
    latest_snapshot,
    load_any,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    snapshot_name,
)
from stylegan.cluster import EXIT_PREEMPTED, STOP_SIGNALS
from stylegan.config import TrainConfig, config_dict
from stylegan.data.reader import load_dataset_info, make_loader, training_pipeline
from stylegan.distributed import DistEnv, all_reduce_max, all_reduce_sum, broadcast_module
from stylegan.errors import UserError
from stylegan.fileio import write_text_atomic
from stylegan.networks import Discriminator, Generator
from stylegan.sampling import save_png, tile
from stylegan.seeds import to_uint8
from stylegan.transfer import transfer_weights

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
TICK_STATS = ("G_loss", "pl_penalty", "D_loss", "r1_penalty", "signs_sum", "signs_n", "steps")


def format_time(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s // 60 % 60:02d}m"


def lazy_adam(params: list, lr: float, betas: list, eps: float, interval: int) -> torch.optim.Adam:
    """Adam for a loss whose regulariser runs every `interval` steps (its own optimizer step): scale lr and betas
    by interval / (interval + 1), as the official trainer."""
    ratio = interval / (interval + 1) if interval > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio), eps=eps)


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        self.device = env.device
        self.run_dir = Path(cfg.outdir) / cfg.run_name
        self.ckpt_dir = self.run_dir / "checkpoints"
        if env.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True

        info = load_dataset_info(cfg.data, cfg.resolution)
        self.c_dim = info["label_count"] if cfg.cond else 0
        if cfg.cond and not self.c_dim:
            raise UserError(f"{cfg.data}: cond: true but the dataset has no labels (preprocess with --labels)")
        batch_gpu = cfg.batch_gpu or cfg.batch // env.world
        if batch_gpu < 1 or cfg.batch % (batch_gpu * env.world):
            raise UserError(f"config: batch {cfg.batch} must be a multiple of batch_gpu {batch_gpu} x "
                            f"{env.world} GPUs")
        self.batch_gpu = batch_gpu
        self.rounds = cfg.batch // (batch_gpu * env.world)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (rank 0's are broadcast anyway)
        self.G_kwargs, self.D_kwargs = cfg.generator_kwargs(self.c_dim), cfg.discriminator_kwargs(self.c_dim)
        self.G = Generator(**self.G_kwargs).train().requires_grad_(False).to(self.device)
        self.D = Discriminator(**self.D_kwargs).train().requires_grad_(False).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        # Gmain and Dmain may run compiled graphs of the same modules. The regularisation phases differentiate
        # twice (R1, path length), which compiled graphs cannot, so they always call the eager modules. CPU runs
        # stay eager: Inductor's CPU backend fails on these backward graphs (torch 2.13) and CPUs gain little.
        self.G_main, self.D_main = self.G, self.D
        if cfg.compile and self.device.type == "cuda":
            self.G_main = types.SimpleNamespace(mapping=torch.compile(self.G.mapping, dynamic=False),
                                                synthesis=torch.compile(self.G.synthesis, dynamic=False))
            self.D_main = torch.compile(self.D, dynamic=False)
        self.augment = AugmentPipe(cfg.augpipe, cfg.aug_p).to(self.device) if cfg.aug != "noaug" else None
        frozen = tuple(n + "." for n in self.D.layer_names()[: cfg.freezed])
        self.G_params = list(self.G.parameters())
        self.D_params = [p for n, p in self.D.named_parameters() if not n.startswith(frozen)]
        self.G_opt = lazy_adam(self.G_params, cfg.glr, cfg.betas, cfg.eps, cfg.pl_interval)
        self.D_opt = lazy_adam(self.D_params, cfg.dlr, cfg.betas, cfg.eps, cfg.r1_interval)
        self.loss_cfg = losses.LossConfig(cfg.r1_gamma, cfg.pl_weight, cfg.pl_batch_shrink, cfg.pl_decay,
                                          cfg.style_mixing)
        self.pl_mean = torch.zeros([], device=self.device)
        self.ada_signs = torch.zeros(2, device=self.device)  # sum and count of sign(D(real)) since the last ADA update
        self.progress = {"cur_nimg": 0, "cur_tick": 0, "batch_idx": 0, "resumes": 0}
        self.faults = {"nonfinite_steps": 0, "rollbacks": 0, "consecutive_nonfinite": 0}
        self.stop_signal: int | None = None
        self.resume()
        for module in (self.G, self.D, self.G_ema, self.augment):
            if module is not None:
                broadcast_module(module)

        self.loader = iter(make_loader(
            training_pipeline(cfg.data, rank=env.rank, world=env.world, seed=cfg.seed + self.progress["resumes"],
                              xflip=cfg.mirror, resolution=cfg.resolution),
            batch_size=batch_gpu, workers=cfg.workers, pin_memory=self.device.type == "cuda", drop_last=True))
        grid_gen = torch.Generator().manual_seed(cfg.seed + 123)
        self.grid_z = torch.randn(cfg.grid_size ** 2, self.G.z_dim, generator=grid_gen).to(self.device)
        self.grid_c = torch.zeros(cfg.grid_size ** 2, self.c_dim, device=self.device)
        if self.c_dim:
            self.grid_c[torch.arange(cfg.grid_size ** 2), torch.arange(cfg.grid_size ** 2) % self.c_dim] = 1
        self.writer = SummaryWriter(str(self.run_dir)) if env.is_main else None
        if env.is_main:
            write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))

    # ------------------------------------------------------------------------------------------------------------
    # Logging and snapshots

    def log(self, text: str) -> None:
        if self.env.is_main:
            print(text, flush=True)
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(text + "\n")

    def checkpoint_state(self) -> dict:
        return {
            "format": FORMAT, "G_kwargs": self.G_kwargs, "D_kwargs": self.D_kwargs,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "G_opt": self.G_opt.state_dict(), "D_opt": self.D_opt.state_dict(),
            "augment": {"p": float(self.augment.p) if self.augment is not None else 0.0},
            "progress": dict(self.progress), "faults": dict(self.faults), "pl_mean": self.pl_mean.cpu(),
            "ada_signs": self.ada_signs.cpu(),
            "rng": capture_rng(), "config": config_dict(self.cfg),
        }

    def save_snapshot(self) -> Path | None:
        if not self.env.is_main:
            return None
        kimg = self.progress["cur_nimg"] // 1000
        path = self.ckpt_dir / snapshot_name(kimg)
        save_checkpoint(path, self.checkpoint_state())
        with torch.no_grad():
            images = [to_uint8(self.G_ema(z, c, noise_mode="const")).cpu()
                      for z, c in zip(self.grid_z.split(self.batch_gpu), self.grid_c.split(self.batch_gpu),
                                      strict=True)]
        grid = tile(torch.cat(images).numpy(), self.cfg.grid_size, self.cfg.grid_size)
        save_png(grid, self.run_dir / f"fakes{kimg:06d}.png")
        self.writer.add_image("fakes", grid, kimg, dataformats="HWC")
        return path

    def resume(self) -> None:
        """The run's own latest snapshot wins, so a requeued job continues; else `resume` names starting weights
        (transfer). `resume: none` starts from scratch even when the run directory holds snapshots."""
        own = latest_snapshot(self.ckpt_dir)
        if own is not None and self.cfg.resume != "none":
            self.load_full(own)
        elif self.cfg.resume not in ("auto", "none", ""):
            self.load_transfer(self.cfg.resume)

    def load_full(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        check_same_architecture(path, "G", self.G_kwargs, ckpt["G_kwargs"])
        check_same_architecture(path, "D", self.D_kwargs, ckpt["D_kwargs"])
        self.G.load_state_dict(ckpt["G"])
        self.D.load_state_dict(ckpt["D"])
        self.G_ema.load_state_dict(ckpt["G_ema"])
        self.G_opt.load_state_dict(ckpt["G_opt"])
        self.D_opt.load_state_dict(ckpt["D_opt"])
        if self.augment is not None:
            self.augment.p.fill_(ckpt["augment"]["p"])
        self.pl_mean.copy_(ckpt["pl_mean"])
        self.ada_signs.copy_(ckpt["ada_signs"])
        self.progress = dict(ckpt["progress"])
        self.progress["resumes"] += 1
        self.faults.update({k: v for k, v in ckpt.get("faults", {}).items() if k != "consecutive_nonfinite"})
        restore_rng(ckpt["rng"])
        self.log(f"resumed from {path} at kimg {self.progress['cur_nimg'] / 1000:.3f}")

    def load_transfer(self, source: str) -> None:
        ckpt = load_any(source)
        min_fraction = self.cfg.transfer_min_fraction
        for name, module in (("G", self.G), ("G_ema", self.G_ema)):
            report = transfer_weights(ckpt.get(name, ckpt["G_ema"]), module, name, source, min_fraction)
            self.log(report.summary())
        if "D" in ckpt:
            self.log(transfer_weights(ckpt["D"], self.D, "D", source, min_fraction).summary())
        else:
            self.log(f"{source} has no discriminator: D starts from random weights")

    # ------------------------------------------------------------------------------------------------------------
    # One training step

    def round_seed(self, phase: int, rnd: int) -> int:
        global_round = self.env.rank * self.rounds + rnd
        seq = np.random.SeedSequence([self.cfg.seed, self.progress["batch_idx"], phase, global_round])
        return int(seq.generate_state(1, dtype=np.uint64)[0] % (2 ** 63))

    def next_reals(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for _ in range(self.rounds):
            img, c = next(self.loader)
            img = img.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1
            out.append((img, c.to(self.device, non_blocking=True)))
        return out

    def apply_gradients(self, params: list, opt: torch.optim.Optimizer) -> bool:
        """Average gradients over ranks; step only if all are finite. Returns whether the step was taken."""
        params = [p for p in params if p.grad is not None]
        if not params:
            return True
        flat = torch.cat([p.grad.flatten() for p in params])
        flat = all_reduce_sum(flat) / self.env.world
        finite = bool(torch.isfinite(flat).all())
        if finite:
            for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
                p.grad = g.reshape(p.shape)
            opt.step()
        opt.zero_grad(set_to_none=True)
        return finite

    def train_step(self, stats: dict[str, torch.Tensor]) -> bool:
        """Gmain, Greg, Dmain, Dreg on one global batch. Returns False if any phase had non-finite gradients."""
        cfg, step = self.cfg, self.progress["batch_idx"]
        reals = self.next_reals()
        ok = True
        for phase_idx, phase in enumerate(PHASES):
            interval = {"Greg": cfg.pl_interval, "Dreg": cfg.r1_interval}.get(phase, 1)
            if phase == "Greg" and (cfg.pl_weight == 0 or step % interval):
                continue
            if phase == "Dreg" and (cfg.r1_gamma == 0 or step % interval):
                continue
            is_g = phase.startswith("G")
            params, opt = (self.G_params, self.G_opt) if is_g else (self.D_params, self.D_opt)
            for p in params:
                p.requires_grad_(True)
            running_old = {"pl_mean": self.pl_mean.clone(), "w_avg": self.G.mapping.w_avg.clone()}
            running_new: dict[str, list[torch.Tensor]] = {"pl_mean": [], "w_avg": []}
            for rnd, (real, real_c) in enumerate(reals):
                torch.manual_seed(self.round_seed(phase_idx, rnd))
                z = torch.randn(self.batch_gpu, self.G.z_dim, device=self.device)
                gen_c = real_c[torch.randperm(len(real_c), device=self.device)]
                gain = interval / self.rounds
                if phase == "Gmain":
                    loss = losses.g_main_loss(self.G_main, self.D_main, self.augment, z, gen_c, self.loss_cfg)
                    if step in cfg.inject_nan_steps:
                        loss = loss * float("nan")
                    stats["G_loss"] += loss.detach() / self.rounds
                elif phase == "Greg":
                    pl_mean = running_old["pl_mean"].clone()
                    loss = losses.g_pl_loss(self.G, z, gen_c, pl_mean, self.loss_cfg)
                    running_new["pl_mean"].append(pl_mean)
                    stats["pl_penalty"] += loss.detach() / self.rounds
                elif phase == "Dmain":
                    self.G.mapping.w_avg.copy_(running_old["w_avg"])
                    loss = losses.d_fake_loss(self.G_main, self.D_main, self.augment, z, gen_c, self.loss_cfg)
                    running_new["w_avg"].append(self.G.mapping.w_avg.clone())
                    real_loss, signs = losses.d_real_loss(self.D_main, self.augment, real, real_c, self.loss_cfg,
                                                          main=True, r1=False)
                    loss = loss + real_loss
                    stats["D_loss"] += loss.detach() / self.rounds
                    stats["signs_sum"] += signs.sum()
                    stats["signs_n"] += signs.numel()
                    self.ada_signs += torch.stack([signs.sum(), torch.tensor(signs.numel(), device=self.device)])
                else:
                    loss, _ = losses.d_real_loss(self.D, self.augment, real, real_c, self.loss_cfg,
                                                 main=False, r1=True)
                    stats["r1_penalty"] += loss.detach() / self.rounds
                (loss * gain).backward()
            for p in params:
                p.requires_grad_(False)
            # Running statistics (path-length mean, w_avg) were lerped from their pre-phase value in every round;
            # the lerp is linear, so the mean over all rounds of all ranks is one lerp with the global batch mean.
            for name, target in (("pl_mean", self.pl_mean), ("w_avg", self.G.mapping.w_avg)):
                if running_new[name]:
                    target.copy_(all_reduce_sum(torch.stack(running_new[name]).mean(0)) / self.env.world)
            ok &= self.apply_gradients(params, opt)
        return ok

    def update_ema(self) -> None:
        cfg = self.cfg
        ema_nimg = (cfg.ema_kimg if cfg.ema_kimg >= 0 else cfg.batch * 10 / 32) * 1000
        if cfg.ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.progress["cur_nimg"] * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)

    def update_ada(self) -> None:
        signs = all_reduce_sum(self.ada_signs.clone())
        rt = signs[0] / signs[1].clamp(min=1)
        adjust = torch.sign(rt - self.cfg.ada_target) * (self.cfg.batch * self.cfg.ada_interval) / (
            self.cfg.ada_kimg * 1000)
        self.augment.p.copy_((self.augment.p + adjust).clamp(min=0))
        self.ada_signs.zero_()

    # ------------------------------------------------------------------------------------------------------------
    # The loop

    def new_stats(self) -> dict[str, torch.Tensor]:
        """Per-tick accumulators, kept on the device so a step never waits for the host."""
        return {k: torch.zeros([], device=self.device) for k in TICK_STATS}

    def step(self, stats: dict[str, torch.Tensor]) -> None:
        """One training iteration as the loop runs it: the G/D phases, EMA (or the non-finite bookkeeping and
        rollback), the progress counters and the ADA adjustment. Benchmarks time exactly this."""
        cfg = self.cfg
        if self.train_step(stats):
            self.faults["consecutive_nonfinite"] = 0
            self.update_ema()
            stats["steps"] += 1
        else:
            self.faults["nonfinite_steps"] += 1
            self.faults["consecutive_nonfinite"] += 1
            self.log(f"non-finite gradients at step {self.progress['batch_idx']}: step skipped "
                     f"({self.faults['consecutive_nonfinite']} in a row)")
            if self.faults["consecutive_nonfinite"] >= cfg.nan_rollback:
                self.rollback()
        self.progress["cur_nimg"] += cfg.batch
        self.progress["batch_idx"] += 1
        if cfg.aug == "ada" and self.progress["batch_idx"] % cfg.ada_interval == 0:
            self.update_ada()

    def handle_signal(self, signum: int, frame) -> None:
        self.stop_signal = signum

    def run(self) -> int:
        """Train to cfg.kimg. Returns 0 when done, EXIT_PREEMPTED after a signal-triggered checkpoint. The signal
        handlers that were there before (submitit's, say) are back in place on return."""
        previous = {sig: signal.signal(sig, self.handle_signal) for sig in STOP_SIGNALS}
        try:
            return self.train_loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def train_loop(self) -> int:
        cfg, env = self.cfg, self.env
        stats = self.new_stats()
        start_time = tick_start_time = time.time()
        tick_start_nimg = self.progress["cur_nimg"]
        maintenance = 0.0
        self.log(f"training {cfg.run_name}: {env.world} process(es) on {self.device}, batch {cfg.batch} = "
                 f"{self.batch_gpu} x {self.rounds} round(s) x {env.world}, {cfg.kimg} kimg, run dir {self.run_dir}")
        first_tick = True
        while True:
            self.step(stats)

            stop = all_reduce_max(torch.tensor(float(self.stop_signal is not None), device=self.device))
            done = self.progress["cur_nimg"] >= cfg.kimg * 1000
            if not (done or stop or first_tick or
                    self.progress["cur_nimg"] >= tick_start_nimg + cfg.tick_kimg * 1000):
                continue
            first_tick = False
            tick_time = time.time()
            self.report_tick(stats, tick_time - start_time, tick_time - tick_start_time,
                             self.progress["cur_nimg"] - tick_start_nimg, maintenance)
            for k in TICK_STATS:
                stats[k].zero_()
            maintenance_start = time.time()
            if stop or done or self.progress["cur_tick"] % cfg.snap == 0:
                path = self.save_snapshot()
                if path is not None:
                    self.log(f"snapshot {path}")
            self.progress["cur_tick"] += 1
            tick_start_nimg, tick_start_time = self.progress["cur_nimg"], time.time()
            maintenance = tick_start_time - maintenance_start
            if stop:
                self.log(f"stopping on signal {self.stop_signal or 'from another rank'} at kimg "
                         f"{self.progress['cur_nimg'] / 1000:.3f}: checkpoint written, exit {EXIT_PREEMPTED}")
                return EXIT_PREEMPTED
            if done:
                self.log("training complete")
                return 0

    def rollback(self) -> None:
        path = latest_snapshot(self.ckpt_dir)
        self.faults["rollbacks"] += 1
        self.faults["consecutive_nonfinite"] = 0
        if path is None:
            raise RuntimeError(f"{self.cfg.nan_rollback} non-finite steps in a row and no snapshot to roll back to")
        progress, faults = dict(self.progress), dict(self.faults)
        self.load_full(path)  # networks, optimizers, augmentation; the schedule and the fault counts go on
        self.progress, self.faults = progress, faults
        self.log(f"rolled back to {path} after {self.cfg.nan_rollback} non-finite steps")

    def report_tick(self, stats: dict, total: float, tick_seconds: float, tick_nimg: int, maintenance: float):
        values = all_reduce_sum(torch.stack([stats[k] for k in TICK_STATS]))
        values = values.cpu().tolist()
        steps = max(values[6] / self.env.world, 1)
        kimg = self.progress["cur_nimg"] / 1000
        sec_per_kimg = tick_seconds / max(tick_nimg / 1000, 1e-9)
        mem = torch.cuda.max_memory_allocated(self.device) / 2 ** 30 if self.device.type == "cuda" else 0.0
        p = float(self.augment.p) if self.augment is not None else 0.0
        row = {
            "tick": self.progress["cur_tick"], "kimg": kimg, "time_s": total, "sec_per_tick": tick_seconds,
            "sec_per_kimg": sec_per_kimg, "maintenance_s": maintenance, "gpumem_gb": mem, "augment_p": p,
            "loss_G": values[0] / self.env.world / steps, "loss_D": values[2] / self.env.world / steps,
            "pl_penalty": values[1] / self.env.world / steps, "r1_penalty": values[3] / self.env.world / steps,
            "real_sign": values[4] / max(values[5], 1), "images_per_sec_per_gpu":
                tick_nimg / max(tick_seconds, 1e-9) / self.env.world,
            "pl_mean": float(self.pl_mean), "glr": self.cfg.glr, "dlr": self.cfg.dlr, **{
                k: v for k, v in self.faults.items() if k != "consecutive_nonfinite"},
        }
        self.log(f"tick {row['tick']} kimg {kimg:.1f} time {format_time(total)} sec/tick {tick_seconds:.1f} "
                 f"sec/kimg {sec_per_kimg:.2f} maintenance {maintenance:.1f} gpumem {mem:.1f} augment {p:.3f}")
        if not self.env.is_main:
            return
        with open(self.run_dir / "stats.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        step = self.progress["cur_nimg"] // 1000
        for key, tag in (("loss_G", "Loss/G/loss"), ("loss_D", "Loss/D/loss"), ("pl_penalty", "Loss/G/pl_penalty"),
                         ("r1_penalty", "Loss/D/r1_penalty"), ("pl_mean", "Loss/G/pl_mean"),
                         ("real_sign", "Loss/signs/real"), ("augment_p", "Progress/augment"),
                         ("kimg", "Progress/kimg"), ("sec_per_kimg", "Timing/sec_per_kimg"),
                         ("images_per_sec_per_gpu", "Timing/images_per_sec_per_gpu"),
                         ("gpumem_gb", "Resources/gpu_mem_gb"), ("glr", "Progress/glr"), ("dlr", "Progress/dlr"),
                         ("nonfinite_steps", "Faults/nonfinite_steps"), ("rollbacks", "Faults/rollbacks")):
            self.writer.add_scalar(tag, row[key], step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
