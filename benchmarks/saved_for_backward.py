"""What each training phase keeps for its backward pass, and the eager phases' peaks, at a GPU's resolution and
precision, in seconds on any CPU.

    python -m benchmarks.saved_for_backward [--res 1024] [--batch 4] [--compiled] [--largest 12] [key=value ...]
        [--phases Gmain Dmain]
The phases run on the meta device (shapes, no arithmetic) with the half-precision blocks a GPU runs
(`num_fp16_res`), config-f's networks and ADA's 'bgc' at p = 0.2 as `benchmarks.phase_memory`; `--compiled` runs
Gmain and Dmain through Inductor's decompositions and partitioner, without generating kernels
(`aot_eager_decomp_partition`), with the run's `compile_memory_budget`. Counted: the distinct storages the phase's
autograd graph saves (torch.autograd.graph.saved_tensors_hooks), by dtype and by loss term (the trainer
backpropagates each term before the next, so it holds one term's at a time), and the `--largest` shapes; for the
phases that run eagerly, also the peak of the live bytes that ops create, the backward included (`LiveBytes`; under a
dispatch mode a compiled graph would run eagerly). On the GPU a compiled phase peaks about its saved bytes above its
start, and an eager one about its peak (benchmarks/RESULTS.md); cuDNN's workspaces and the caching allocator's
rounding are not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import weakref
from collections import Counter
from collections.abc import Callable
from itertools import pairwise

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from benchmarks.speed_vs_official import AUG_P, WIDTHS
from stylegan.models import FAMILIES, stylegan2
from stylegan.train.augment import AugmentPipe
from stylegan.train.config import load_config
from stylegan.train.fastpath import compiled_networks, compiled_phases
from stylegan.train.losses import StyleGAN2Loss, Terms

GPU_LIKE = torch.device("meta")


def half_on_meta(use_fp16: bool, device: torch.device) -> torch.dtype:
    """stylegan2.block_dtype with the meta device standing for CUDA: the blocks a GPU runs in float16 do here."""
    return torch.float16 if use_fp16 and device.type in ("cuda", "meta") else torch.float32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--phases", nargs="+", default=["Gmain", "Greg", "Dmain", "Dreg"],
                        choices=("Gmain", "Greg", "Dmain", "Dreg", "Dboth"))
    parser.add_argument("--compiled", action="store_true", help="Gmain and Dmain compiled, as training runs them")
    parser.add_argument("--largest", type=int, default=0, help="list this many of the largest saved shapes")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    widths = WIDTHS["config-f"]
    cfg = load_config(None, ["data=none", f"resolution={args.res}", f"batch={args.batch}", "aug=fixed",
                             f"aug_p={AUG_P}", f"channel_base={widths['cbase']}", f"map_layers={widths['map']}",
                             *args.overrides])
    stylegan2.block_dtype = half_on_meta
    Generator, Discriminator = FAMILIES[cfg.family]
    G = Generator(**cfg.generator_kwargs(0)).to(GPU_LIKE).requires_grad_(False)
    D = Discriminator(**cfg.discriminator_kwargs(0)).to(GPU_LIKE).requires_grad_(False)
    augment = AugmentPipe(cfg.augpipe, cfg.aug_p).to(GPU_LIKE) if cfg.aug != "noaug" else None
    loss = StyleGAN2Loss(G, D, augment, cfg.loss_config())
    if args.compiled:
        inductor_without_kernels = dataclasses.replace(cfg, compile_backend="aot_eager_decomp_partition")
        loss.G_main, loss.D_main, loss.G_reg = compiled_networks(G, D, augment, loss.path_lengths,
                                                                 inductor_without_kernels)
    real = torch.empty(args.batch, 3, args.res, args.res, device=GPU_LIKE)
    c = torch.empty(args.batch, 0, device=GPU_LIKE)
    z = torch.empty(args.batch, G.z_dim, device=GPU_LIKE)
    compiled = compiled_phases(cfg) if args.compiled else ()
    for phase in args.phases:
        trained = G if phase.startswith("G") else D
        trained.requires_grad_(True)
        run = functools.partial(loss, phase, real, c, z, c)
        saved, totals = saved_by_term(run)
        peak = ""
        if phase not in compiled:  # a dispatch mode would run the compiled graphs eagerly
            live = live_with_backward(run)
            peak = f"; peak {live.peak / 2**30:.2f} GiB with the backward (at {live.peak_op})"
        trained.requires_grad_(False)
        for p in trained.parameters():
            p.grad = None
        by_dtype = ", ".join(f"{dtype} {size / 2**30:.2f} in {count}" for dtype, (size, count) in saved.by_dtype())
        terms = " / ".join(f"{(after - before) / 2**30:.2f}" for before, after in pairwise([0, *totals]))
        print(f"RESULT {phase} {args.res} batch {args.batch} {'compiled' if phase in compiled else 'eager'}: saved "
              f"{saved.total() / 2**30:.2f} GiB ({by_dtype}); by term {terms} GiB{peak}; {args.overrides}",
              flush=True)
        for (dtype, shape), count in saved.largest(args.largest):
            print(f"    {count:4d} x {dtype} {list(shape)}")


def saved_by_term(run: Callable[[], Terms]) -> tuple[SavedStorages, list[int]]:
    """What the phase's graphs save, and the total after each of its terms (all the graphs stay alive)."""
    saved = SavedStorages()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        totals = [saved.total() for _ in run()]
    return saved, totals


def live_with_backward(run: Callable[[], Terms]) -> LiveBytes:
    """The live bytes of the phase as the trainer runs it: each term backpropagated before the next."""
    with LiveBytes() as live:
        for term, _ in run():
            term.backward()
    return live


class SavedStorages:
    """The storages an autograd graph saves, each counted once (views of one tensor share it)."""

    def __init__(self):
        self.storages: dict[int, tuple[int, str, tuple[int, ...]]] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.storages.setdefault(storage._cdata, (storage.nbytes(), str(t.dtype).removeprefix("torch."),
                                                  tuple(t.shape)))
        return t

    def total(self) -> int:
        return sum(size for size, _, _ in self.storages.values())

    def by_dtype(self) -> list[tuple[str, tuple[int, int]]]:
        """Each dtype's bytes and count of storages, the most bytes first."""
        sizes, counts = self.grouped(lambda dtype, shape: dtype)
        return [(dtype, (size, counts[dtype])) for dtype, size in sizes.most_common()]

    def largest(self, n: int) -> list[tuple[tuple[str, tuple[int, ...]], int]]:
        """The `n` (dtype, shape) groups that hold the most bytes, with their counts."""
        sizes, counts = self.grouped(lambda dtype, shape: (dtype, shape))
        return [(group, counts[group]) for group, _ in sizes.most_common(n)]

    def grouped(self, key: Callable[[str, tuple[int, ...]], object]) -> tuple[Counter, Counter]:
        """Bytes and storage counts summed by `key(dtype, shape)`."""
        sizes, counts = Counter(), Counter()
        for size, dtype, shape in self.storages.values():
            group = key(dtype, shape)
            sizes[group] += size
            counts[group] += 1
        return sizes, counts


class LiveBytes(TorchDispatchMode):
    """The bytes of the tensors that ops create inside it and that are still alive, and their most: what a phase
    allocates above its start, its backward included (the caching allocator's rounding and cuDNN's workspaces
    aside). Views and in-place results share an input's storage and add nothing."""

    def __init__(self):
        super().__init__()
        self.alive: dict[int, weakref.ref] = {}
        self.bytes = self.peak = 0
        self.peak_op = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if storage._cdata in inputs or storage._cdata in self.alive:
                continue
            self.alive[storage._cdata] = weakref.ref(storage, functools.partial(self.freed, storage._cdata,
                                                                                storage.nbytes()))
            self.bytes += storage.nbytes()
            if self.bytes > self.peak:
                self.peak, self.peak_op = self.bytes, str(func)
        return out

    def freed(self, key: int, size: int, _: weakref.ref) -> None:
        del self.alive[key]
        self.bytes -= size


if __name__ == "__main__":
    main()
