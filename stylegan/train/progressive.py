"""StyleGAN (2018)'s progressive growing: the stage of training at an image count (NVIDIA's `training_schedule`) and
the reals as the networks see them at a fractional level of detail (NVIDIA's `process_reals`).

The networks always run at the full resolution R; `lod` (level of detail) says how many halvings below R the
output is made: lod 3 at R = 64 is an 8x8 image, up-scaled. Training starts at `lod_initial_resolution`, trains
`lod_training_kimg` there, fades the next resolution in over `lod_transition_kimg` (lod falls linearly to the next
integer), and so on down to lod 0. Minibatch and learning rate may change with the resolution (NVIDIA's tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stylegan.train.config import TrainConfig


@dataclass(frozen=True)
class Stage:
    lod: float        # 0: full resolution
    resolution: int   # the resolution being trained: R / 2^floor(lod)
    batch: int        # total over all processes
    glr: float
    dlr: float

    def same_level(self, other: Stage) -> bool:
        """NVIDIA resets Adam's moments when the lod's floor or ceiling changes (a fade starts or ends)."""
        return math.floor(self.lod) == math.floor(other.lod) and math.ceil(self.lod) == math.ceil(other.lod)


def stage_at(cfg: TrainConfig, cur_nimg: int, world: int) -> Stage:
    """The stage at `cur_nimg` images. Without progressive growing (lod_initial_resolution 0): lod 0 throughout,
    the config's batch and learning rates. While growing, batch_per_res and lr_per_res override the batch and both
    rates by resolution; a batch is rounded down to a multiple of `world`, as NVIDIA's."""
    if not cfg.lod_initial_resolution:
        return Stage(0.0, cfg.resolution, cfg.batch, cfg.glr, cfg.dlr)
    kimg = cur_nimg / 1000
    phase = cfg.lod_training_kimg + cfg.lod_transition_kimg
    index = int(kimg // phase) if phase > 0 else 0
    lod = math.log2(cfg.resolution) - math.floor(math.log2(cfg.lod_initial_resolution)) - index
    if cfg.lod_transition_kimg > 0:
        lod -= max(kimg - index * phase - cfg.lod_training_kimg, 0.0) / cfg.lod_transition_kimg
    lod = max(lod, 0.0)
    res = cfg.resolution >> math.floor(lod)
    batch = cfg.batch_per_res.get(res, cfg.batch)
    return Stage(lod, res, batch - batch % world, cfg.lr_per_res.get(res, cfg.glr), cfg.lr_per_res.get(res, cfg.dlr))


def reals_at_lod(x: torch.Tensor, lod: float) -> torch.Tensor:
    """Reals in [-1, 1] at full resolution as NVIDIA's pipeline gives them at `lod`: the dataset's level
    floor(lod) (2^k x 2^k means of the uint8 image, rounded to uint8, as its dataset_tool stores each level),
    crossfaded with its own 2x2 means by lod's fraction, then up-scaled (nearest) to the full resolution."""
    if lod == 0:
        return x
    factor = 2 ** math.floor(lod)
    if factor > 1:
        level = F.avg_pool2d(((x + 1) * 127.5).round(), factor).round()
        x = level / 127.5 - 1
    if (frac := lod - math.floor(lod)) > 0:
        x = torch.lerp(x, F.avg_pool2d(x, 2).repeat_interleave(2, 2).repeat_interleave(2, 3), frac)
    return x.repeat_interleave(factor, 2).repeat_interleave(factor, 3) if factor > 1 else x
