"""Training configuration: one dataclass with documented defaults, read from YAML plus `key=value` overrides.

Unknown keys and wrong types fail at start with a message that lists the valid keys. Defaults are those of
stylegan2-ada-pytorch's `--cfg=auto` below 512x512 (channel_base 16384, 2 mapping layers, lr 0.0025, R1 gamma
0.0002 * resolution^2 / batch, EMA half-life batch * 10/32 kimg with a 0.05 ramp-up, ADA target 0.6 over 500 kimg),
and a resume from a network file takes NVIDIA's `--resume` settings (ADA over 100 kimg, no EMA ramp-up). The
stylegan3 repository's `--cfg=stylegan2` differs: 8 mapping layers, lr 0.002, channel_base 32768
(configs/paper256.yaml). Loss defaults live in `stylegan.train.losses.LossConfig`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stylegan.errors import UserError
from stylegan.models import FAMILIES
from stylegan.train.losses import LossConfig

AUTO = -1.0  # "derive this value" for the keys that say so


def auto_r1_gamma(resolution: int, batch: int) -> float:
    """NVIDIA's heuristic R1 weight (stylegan2-ada-pytorch's `auto` config): 0.0002 * resolution^2 / batch."""
    return 0.0002 * resolution ** 2 / batch


@dataclass
class TrainConfig:
    # Run and data
    data: str = ""                      # preprocessed dataset folder (holds dataset.json)
    outdir: str = "runs"                # the run directory is <outdir>/<run_name>
    run_name: str = ""                  # default: the config file's name; Slurm jobs pass their job name
    resolution: int = 64                # must equal the dataset's
    cond: bool = False                  # condition on the dataset's labels
    mirror: bool = False                # random x-flips of the reals (NVIDIA's --mirror: opt-in, as theirs)
    workers: int = 2                    # data loader processes per rank
    seed: int = 0                       # weights, batches, flips, augmentation: a CPU run repeats step for step

    # Networks (constructor arguments of Generator/Discriminator)
    family: str = "stylegan2"           # stylegan2 | stylegan1: NVIDIA's 2018 StyleGAN (configs/stylegan1-textures64)
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 2                 # mapping network depth (8 in the 2020 paper configs)
    channel_base: int = 16384           # channels at resolution r: channel_base / r (StyleGAN 2018's fmap_base x 2)
    channel_max: int = 512
    num_fp16_res: int = 4               # highest-resolution blocks in half precision (GPU only)
    conv_clamp: float = 256.0
    mbstd_group: int = 4

    # Optimisation
    batch: int = 32                     # total over all GPUs; split into batch_gpu per round and accumulated
    batch_gpu: int = 0                  # at most this many images per GPU per round; 0 = batch / world size
    glr: float = 0.0025
    dlr: float = 0.0025
    betas: list = field(default_factory=lambda: [0.0, 0.99])
    eps: float = 1e-8
    r1_gamma: float = AUTO              # -1: 0.0002 * resolution^2 / batch
    r1_interval: int = 16               # lazy R1 every 16 minibatches; 1: in D's every step (StyleGAN 2018)
    pl_weight: float = LossConfig.pl_weight
    pl_interval: int = 4
    pl_batch_shrink: int = LossConfig.pl_batch_shrink
    pl_decay: float = LossConfig.pl_decay
    style_mixing: float = LossConfig.style_mixing
    ema_kimg: float = AUTO              # G_ema half-life; -1: batch * 10 / 32
    ema_rampup: float = AUTO            # -1: 0.05, or 0 (off) when fine-tuning from `resume`; 0 = off

    # Progressive growing (StyleGAN 2018, stylegan.train.progressive; NVIDIA's FFHQ schedule: 8, 600, 600)
    lod_initial_resolution: int = 0     # start at this resolution; 0 = off (train at `resolution` throughout)
    lod_training_kimg: float = 600.0    # images per resolution before the next one fades in
    lod_transition_kimg: float = 600.0  # images over which it fades in
    batch_per_res: dict = field(default_factory=dict)  # total batch by resolution while growing, e.g. {8: 256}
    lr_per_res: dict = field(default_factory=dict)     # G's and D's learning rate by resolution, e.g. {128: 0.0015}

    # Augmentation
    aug: str = "ada"                    # ada | fixed | noaug
    augpipe: str = "bgc"
    aug_p: float = 0.0                  # initial (ada) or constant (fixed) probability
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = AUTO              # how fast p can move (0 -> 1 in this many kimg); -1: 500, 100 fine-tuning

    # Transfer learning
    resume: str = "none"                # starting weights of a new run: a .pt/.pkl/.safetensors file, or none;
                                        # a run that has snapshots always resumes from its latest one
    transfer_partial: bool = False      # copy what fits when the resume source's mapping depth or channels differ
    freezed: int = 0                    # freeze this many D layers, counted from the input side

    # Schedule and logging
    kimg: float = 25000.0               # total training length
    tick_kimg: float = 4.0              # progress line, stats and TensorBoard every tick
    snap: int = 50                      # snapshot (checkpoint + fakes grid) every `snap` ticks
    keep_snapshots: int = 0             # keep only the newest N snapshots; 0 = keep all
    grid_size: int = 8                  # fakes grid is grid_size x grid_size

    # Speed
    compile: bool = True                # GPU: torch.compile Gmain/Dmain (benchmarks/RESULTS.md); CPU: eager
    compile_mode: str = "default"       # or reduce-overhead: the compiled phases replay as CUDA graphs: 1.4-1.5x
                                        # at 64x64, where launching kernels limits a step; at 256x256 +3% for
                                        # 43 instead of 17 GB of GPU memory in use (benchmarks/RESULTS.md)
    compile_start: str = "background"   # background: train eagerly while helper processes (one per compiled phase,
                                        # each holding a copy of the networks on the node's first GPU) compile the
                                        # graphs into the compile cache, compiled from the first tick after they
                                        # end, unless the cache holds them already (a record an earlier run
                                        # left: fastpath.CompileRecord); first-step: compile before the first
                                        # step, the run waits for it
    compile_helper_nice: int = 10       # the helpers' nice increment over the run's: they take the CPU time the
                                        # eager steps leave; 0 on a node whose cores nothing else needs compiles
                                        # sooner (benchmarks/RESULTS.md, #40)
    compile_greg: bool = False          # also compile the path-length regulariser (its inner gradient as
                                        # torch.func.grad in the graph): 10% less per kimg and half the
                                        # memory on an H200; off until parity shows it learns the same (#40)
    compile_backend: str = "inductor"   # torch.compile's backend; aot_eager traces and differentiates without
                                        # generating kernels, on any device (compile problems, the CPU tests)
    compile_memory_budget: float = 1.0  # < 1: the compiled phases save at most about this share of their
                                        # activations for the backward and recompute the rest (the partitioner's
                                        # activation_memory_budget): less memory for more GPU work (RESULTS.md)

    # Fault handling
    nan_rollback: int = 5               # this many non-finite steps in a row: roll back to the last snapshot
    dist_timeout_s: int = 600           # collective timeout, so a dead rank fails the job instead of hanging
    inject_nan_steps: list = field(default_factory=list)  # testing only: make the G loss NaN at these steps

    def validate(self) -> None:
        if not self.data:
            raise UserError("config: 'data' is required (a folder written by `python -m jobs.preprocess`)")
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise UserError(f"config: resolution {self.resolution} must be a power of two >= 4")
        if self.family not in FAMILIES:
            raise UserError(f"config: family {self.family!r} must be {' or '.join(FAMILIES)}")
        if self.family == "stylegan1" and self.cond:
            raise UserError("config: cond: StyleGAN (2018) networks take no labels; set cond=false or "
                            "family=stylegan2")
        if self.lod_initial_resolution:
            self.check_progressive()
        if self.aug not in ("ada", "fixed", "noaug"):
            raise UserError(f"config: aug {self.aug!r} must be ada, fixed or noaug")
        if self.batch < 1 or self.batch_gpu < 0:
            raise UserError("config: batch must be >= 1 and batch_gpu >= 0")
        if len(self.betas) != 2:
            raise UserError("config: betas must be a list of two numbers, e.g. [0.0, 0.99]")
        if self.compile_mode not in ("default", "reduce-overhead"):
            raise UserError(f"config: compile_mode {self.compile_mode!r} must be default or reduce-overhead")
        if self.compile_start not in ("background", "first-step"):
            raise UserError(f"config: compile_start {self.compile_start!r} must be background or first-step")
        if self.compile_backend not in ("inductor", "aot_eager"):
            raise UserError(f"config: compile_backend {self.compile_backend!r} must be inductor or aot_eager")
        if not 0 < self.compile_memory_budget <= 1:
            raise UserError(f"config: compile_memory_budget {self.compile_memory_budget} must be in (0, 1]: the share "
                            "of the compiled phases' activations kept for the backward (1: all)")
        if not 0 <= self.compile_helper_nice <= 19:
            raise UserError(f"config: compile_helper_nice {self.compile_helper_nice} must be a nice increment from 0 "
                            "to 19")
        if self.freezed < 0 or self.keep_snapshots < 0 or self.r1_interval < 1 or self.pl_interval < 1:
            raise UserError("config: freezed and keep_snapshots must be >= 0, r1_interval and pl_interval >= 1")

    def check_progressive(self) -> None:
        start = self.lod_initial_resolution
        if self.family != "stylegan1":
            raise UserError("config: lod_initial_resolution: progressive growing needs StyleGAN (2018) networks "
                            "(family=stylegan1); set lod_initial_resolution=0")
        if start < 4 or start & (start - 1) or start > self.resolution:
            raise UserError(f"config: lod_initial_resolution {start} must be a power of two from 4 to resolution "
                            f"{self.resolution}, or 0 (off)")
        if self.lod_training_kimg < 0 or self.lod_transition_kimg < 0:
            raise UserError("config: lod_training_kimg and lod_transition_kimg must be >= 0")
        for key in ("batch_per_res", "lr_per_res"):
            table = getattr(self, key)
            if not all(isinstance(k, int) and not isinstance(v, bool) and isinstance(v, int | float) and v > 0
                       for k, v in table.items()):
                raise UserError(f"config: {key} must map resolutions to positive numbers, e.g. {{8: 256, 16: 128}}; "
                                f"got {table!r:.80}")

    @property
    def fine_tuning(self) -> bool:
        """A new run starts from the weights of a network file."""
        return self.resume not in ("", "none", "auto")

    def resolved(self) -> TrainConfig:
        """A copy with every automatic (-1) value replaced by the value it stands for."""
        auto = {
            "r1_gamma": auto_r1_gamma(self.resolution, self.batch),
            "ema_kimg": self.batch * 10 / 32,
            "ema_rampup": 0.0 if self.fine_tuning else 0.05,
            "ada_kimg": 100.0 if self.fine_tuning else 500.0,
        }
        return dataclasses.replace(self, **{k: v for k, v in auto.items() if getattr(self, k) == AUTO})

    def loss_config(self) -> LossConfig:
        return LossConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LossConfig)})

    def split_batch(self, world: int, batch: int = 0) -> tuple[int, int]:
        """(images per GPU per round, rounds accumulated per step) for `world` GPUs and a total of `batch` (0: the
        config's); batch_gpu caps the images per GPU per round."""
        batch = batch or self.batch
        batch_gpu = min(self.batch_gpu, batch // world) if self.batch_gpu else batch // world
        if batch_gpu < 1 or batch % (batch_gpu * world):
            raise UserError(f"config: batch {batch} must be a multiple of batch_gpu {batch_gpu} x {world} GPUs")
        return batch_gpu, batch // (batch_gpu * world)

    def generator_kwargs(self, c_dim: int) -> dict:
        if self.family == "stylegan1":
            return dict(z_dim=self.z_dim, c_dim=c_dim, w_dim=self.w_dim, img_resolution=self.resolution,
                        img_channels=3, fmap_base=self.channel_base // 2, fmap_max=self.channel_max,
                        mapping_kwargs=dict(num_layers=self.map_layers))
        return dict(z_dim=self.z_dim, c_dim=c_dim, w_dim=self.w_dim, img_resolution=self.resolution,
                    img_channels=3, mapping_kwargs=dict(num_layers=self.map_layers),
                    channel_base=self.channel_base, channel_max=self.channel_max, num_fp16_res=self.num_fp16_res,
                    conv_clamp=self.conv_clamp)

    def discriminator_kwargs(self, c_dim: int) -> dict:
        if self.family == "stylegan1":
            return dict(c_dim=c_dim, img_resolution=self.resolution, img_channels=3, fmap_base=self.channel_base // 2,
                        fmap_max=self.channel_max, mbstd_group_size=self.mbstd_group)
        return dict(c_dim=c_dim, img_resolution=self.resolution, img_channels=3, channel_base=self.channel_base,
                    channel_max=self.channel_max, num_fp16_res=self.num_fp16_res, conv_clamp=self.conv_clamp,
                    epilogue_kwargs=dict(mbstd_group_size=self.mbstd_group))


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_type(key: str, value: Any, source: str) -> Any:
    hint = typing.get_type_hints(TrainConfig)[key]
    base = typing.get_origin(hint) or hint
    if isinstance(hint, types.UnionType):
        base = tuple(typing.get_args(hint))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is str and value is None:
        return ""
    if (isinstance(value, bool) and base is not bool) or not isinstance(value, base):
        name = getattr(base, "__name__", str(base))
        raise UserError(f"{source}: '{key}' must be {name}, got {value!r}")
    return value


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    """YAML file (optional) then `key=value` overrides (values parsed as YAML: 64, 0.5, true, [0, 0.99])."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise UserError(f"{p}: config file does not exist") from None
        except yaml.YAMLError as e:
            raise UserError(f"{p}: invalid YAML ({' '.join(str(e).split())})") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{p}: a config file must be a mapping of key: value")
        values.update(loaded)
        sources.update({k: str(p) for k in loaded})
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}': use key=value")
        key, text = item.split("=", 1)
        values[key] = yaml.safe_load(text) if text else ""
        sources[key] = "command line"
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        close = {k: difflib.get_close_matches(k, FIELDS, n=1) for k in unknown}
        hints = "".join(f"; did you mean {close[k][0]}?" for k in unknown if close[k])
        raise UserError(f"unknown config key(s) {', '.join(unknown)} (from {sources[unknown[0]]}){hints} Valid keys: "
                        f"{', '.join(FIELDS)}")
    checked = {k: _check_type(k, v, sources[k]) for k, v in values.items()}
    cfg = TrainConfig(**checked)
    if not cfg.run_name and path:
        cfg.run_name = Path(path).stem
    cfg.run_name = cfg.run_name or "run"
    cfg.validate()
    return cfg


def config_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
