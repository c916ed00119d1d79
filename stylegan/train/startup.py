"""The start-up plan: everything a training run decides before it builds a network, decided in one place.

`plan_start` checks, for a number of processes, the config, the dataset and its labels, the batch split, the run
folder (writable; this run's newest snapshot fits the config, else a new run may start there), the starting weights
(a resume source must fit: the transfer runs on networks on the meta device) and D's frozen layers. The Trainer builds
from the plan, and `train --dry-run` prints it, so the two cannot disagree. Nothing is written, no GPU is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from stylegan.data.reader import load_dataset_info
from stylegan.errors import UserError
from stylegan.fileio import check_can_create
from stylegan.formats.checkpoint import load_any, load_training_snapshot
from stylegan.formats.transfer import fine_tune
from stylegan.models import FAMILIES
from stylegan.rundir import RunDir
from stylegan.train.config import TrainConfig

NAMES = {"stylegan2": "StyleGAN2", "stylegan1": "StyleGAN (2018)"}
RESUME_MISSING = ("config key 'resume': point it at an existing .pkl, .pt or .safetensors file, or set resume=none "
                  "to train from scratch")


@dataclass
class StartPlan:
    cfg: TrainConfig                    # resolved: no automatic values left
    world: int                          # processes taking part
    rundir: RunDir
    images: int                         # images in the dataset
    c_dim: int                          # label dimension; 0 = unconditional
    batch_gpu: int                      # images per process per round
    rounds: int                         # rounds accumulated per step
    G_kwargs: dict
    D_kwargs: dict
    frozen: list[str]                   # D layers that never train (`freezed`), input side first
    snapshot: Path | None = None        # this run's newest snapshot: the run resumes from it
    snapshot_state: dict | None = None  # its contents, checked against the config
    source: dict | None = None          # a new run's starting weights (`resume`); None: random
    transfer: list[str] = field(default_factory=list)  # what the transfer from `source` copies, as the log says it
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """The run's newest snapshot has reached `kimg`: there is nothing left to train."""
        return self.snapshot_state is not None and self.snapshot_state["progress"]["cur_nimg"] >= self.cfg.kimg * 1000

    def summary(self) -> str:
        """What the run will do, as `train --dry-run` prints it."""
        if self.complete:
            kimg = self.snapshot_state["progress"]["cur_nimg"] / 1000
            return (f"run complete: {self.snapshot} is at kimg {kimg:g} of kimg={self.cfg.kimg:g}; nothing to train "
                    "(set a larger kimg to train on)")
        if self.snapshot is not None:
            start = f"resumes {self.snapshot}"
        else:
            start = f"new run {self.rundir} from {self.cfg.resume if self.source is not None else 'random weights'}"
        lines = [f"config OK: {start} ({self.images} images, batch {self.batch_gpu} x {self.rounds} x {self.world})",
                 f"  networks: {self.cfg.resolution}x{self.cfg.resolution}, {self.c_dim} label classes, "
                 f"frozen D layers: {', '.join(self.frozen) or 'none'}"]
        if self.cfg.lod_initial_resolution:
            lines.append(f"  progressive growing from {self.cfg.lod_initial_resolution}x"
                         f"{self.cfg.lod_initial_resolution}: {self.cfg.lod_training_kimg:g} kimg per resolution, "
                         f"{self.cfg.lod_transition_kimg:g} of fade, batch by resolution "
                         f"{self.cfg.batch_per_res or self.cfg.batch}")
        lines += [f"  {line}" for text in self.transfer for line in text.splitlines()]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def plan_start(cfg: TrainConfig, world: int) -> StartPlan:
    """The plan for `world` processes; a UserError names what does not fit and how to fix it."""
    cfg = cfg.resolved()
    info = load_dataset_info(cfg.data, cfg.resolution)
    c_dim = info.get("label_count", 0) if cfg.cond else 0
    if cfg.cond and not c_dim:
        raise UserError(f"{cfg.data}: cond: true but the dataset has no labels (preprocess with --labels, or set "
                        "cond=false)")
    batch_gpu, rounds = cfg.split_batch(world)
    for batch in cfg.batch_per_res.values() if cfg.lod_initial_resolution else ():
        cfg.split_batch(world, batch - batch % world)  # every stage's batch splits over the processes
    rundir = RunDir(Path(cfg.outdir) / cfg.run_name)
    check_can_create(rundir.path, "outdir or run_name")
    G_kwargs, D_kwargs = cfg.generator_kwargs(c_dim), cfg.discriminator_kwargs(c_dim)
    Generator, Discriminator = FAMILIES[cfg.family]
    with torch.device("meta"):  # shapes only: layer names here, the transfer's checks below
        G, D = Generator(**G_kwargs), Discriminator(**D_kwargs)
    plan = StartPlan(cfg, world, rundir, info["total_images"], c_dim, batch_gpu, rounds, G_kwargs, D_kwargs,
                     frozen=D.layer_names()[:cfg.freezed])
    if info.get("shuffle_seed") is None:
        plan.warnings.append(f"{cfg.data}: its shards hold the images in file-name order (written by a preprocess "
                             "older than --shuffle-seed), so batches follow that order: a class-sorted folder gives "
                             "one-class batches; preprocess again")
    if (snapshot := rundir.latest()) is not None:
        plan.snapshot = snapshot
        plan.snapshot_state = load_training_snapshot(snapshot, cfg.family, G_kwargs, D_kwargs)
        return plan
    rundir.check_new_run()
    starts_random = D.layer_names()
    if cfg.fine_tuning:
        plan.source = load_any(cfg.resume, missing=RESUME_MISSING)
        if (family := plan.source.get("family", "stylegan2")) != cfg.family:
            preset = " (configs/stylegan1-textures64.yaml fine-tunes one)" if family == "stylegan1" else ""
            raise UserError(f"config key 'resume': {cfg.resume} holds a {NAMES[family]} network and the config "
                            f"builds {NAMES[cfg.family]} ones: set family={family}{preset}")
        plan.transfer, plan.warnings, starts_random = fine_tune(plan.source, cfg.resume, G, G, D, G_kwargs, D_kwargs,
                                                                cfg.transfer_partial)
    if frozen_random := [n for n in plan.frozen if n in starts_random]:
        plan.warnings.append(f"freezed={cfg.freezed} freezes D layers that start from random weights and stay "
                             f"random: {', '.join(frozen_random)}; lower freezed (to "
                             f"{plan.frozen.index(frozen_random[0])} or less) or fine-tune from a network that has "
                             "them")
    return plan
