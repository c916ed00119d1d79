"""Memory and time of each training phase, one phase at a time: what a phase allocates above what was
alive before it (its peak), and the ops whose outputs make that peak.

    python -m benchmarks.phase_memory [--res 64] [--batch 4] [--calls 3] [--ops 12] [--cudnn-benchmark off] \
        [--compiled] [key=value ...]
config-f's networks (channel_base 32768, 8 mapping layers) and ADA's 'bgc' at p = 0.2, as the per-kimg runs at 512
and 1024; compile=false, so the regularisers' eager graphs and the main phases' eager ones are measured alike
(`--compiled`: Gmain and Dmain compiled, as a run compiled from its first step has them; their first call compiles;
with `compile_memory_budget=B` < 1 the compiler's partitioner recomputes in the backward what it would keep, so that
at most about B of the activations stay saved). On a GPU the peak is
`torch.cuda.max_memory_allocated` (reset before each call); on a CPU it is replayed from torch.profiler's allocation
events, which also name the op each allocation came from (`--ops`: the largest groups alive at the peak). Seconds:
the first call of each phase (a run's first step pays these one-time costs: cuDNN's search for each convolution's
kernel with `--cudnn-benchmark on`, the trainer's setting, and the first use of each kernel), then the median of
`--calls` unprofiled calls.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import sync, synthetic_dataset, timed
from benchmarks.speed_vs_official import AUG_P, WIDTHS
from stylegan.distributed import init_distributed
from stylegan.train.config import load_config
from stylegan.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--ops", type=int, default=0, help="list this many op groups alive at each phase's peak")
    parser.add_argument("--cudnn-benchmark", choices=["on", "off"], default="on",
                        help="off: cuDNN picks kernels by its heuristics instead of timing them at their first call")
    parser.add_argument("--compiled", action="store_true", help="the main phases compiled, as training runs them")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp), args.res, 16)
        widths = WIDTHS["config-f"]
        cfg = load_config(None, [f"data={data}", f"resolution={args.res}", f"batch={args.batch}", f"outdir={tmp}",
                                 f"channel_base={widths['cbase']}", f"map_layers={widths['map']}", "aug=fixed",
                                 f"aug_p={AUG_P}", "mirror=true", "workers=0", "compile=false", *args.overrides])
        env = init_distributed()
        trainer = Trainer(cfg, env)
        if args.compiled:
            trainer.use_compiled()
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
        reals = [next(trainer.reals) for _ in range(trainer.rounds)]
        for phase in trainer.phases:
            call = functools.partial(trainer.accumulate_gradients, phase, reals)
            first = timed(call, env.device)
            seconds = statistics.median(timed(call, env.device) for _ in range(args.calls))
            peak, groups = phase_peak(call, env.device)
            print(f"RESULT {phase.name} {args.res} batch {args.batch}: first call {first:.2f} s, then {seconds:.3f} s "
                  f"a call, peak {peak / 2**20:.0f} MiB above the phase's start; cudnn benchmark "
                  f"{args.cudnn_benchmark}; {args.overrides}", flush=True)
            for op, (size, count) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:args.ops]:
                print(f"    {size / 2**20:8.1f} MiB {count:4d} x {op}")
            for p in phase.params:
                p.grad = None
        trainer.close()


def phase_peak(call, device: torch.device) -> tuple[int, dict[str, list[int]]]:
    """The bytes `call` allocates above what was alive at its start, at their peak, and (CPU) the op groups alive
    then: {"parent > op [MiB each]": [bytes, count]}."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before, {}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    allocations = []  # (ns, address, bytes: < 0 frees, the op it ran under)

    def walk(node, op: str) -> None:
        if node.tag == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.extra_fields.ptr, node.extra_fields.alloc_size, op))
        if node.tag == _EventType.TorchOp:
            op = " > ".join([*op.split(" > ")[-1:], node.name]) if op else node.name
        for child in node.children:
            walk(child, op)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root, "")
    allocations.sort(key=lambda a: a[0])
    live, current, peak, peak_at = {}, 0, 0, -1
    for i, (_, ptr, size, op) in enumerate(allocations):
        if size > 0:
            live[ptr] = (size, op)
            current += size
        elif ptr in live:  # frees of what was alive before the call do not count
            current -= live.pop(ptr)[0]
        if current > peak:
            peak, peak_at = current, i
    live = {}
    for _, ptr, size, op in allocations[:peak_at + 1]:
        if size > 0:
            live[ptr] = (size, op)
        else:
            live.pop(ptr, None)
    groups = defaultdict(lambda: [0, 0])
    for size, op in live.values():
        group = groups[f"{op} [{size / 2**20:.1f}]"]
        group[0] += size
        group[1] += 1
    return peak, dict(groups)


if __name__ == "__main__":
    main()
