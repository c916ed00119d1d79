"""Train StyleGAN2 or StyleGAN (2018) (`family=stylegan1`): a plain process (1 CPU/GPU) or under torchrun (GPUs,
nodes).

    python -m jobs.train --config configs/textures64.yaml data=/shared/data/tex64
    torchrun --nproc-per-node=8 -m jobs.train --config configs/ffhq256.yaml resume=ffhq.pkl
Exit code 3 means "stopped by SIGTERM/SIGUSR1/SIGUSR2 after writing a snapshot": requeue the job (slurm/train.sh
and jobs.submit do), and the requeued job continues from that snapshot.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import run
from stylegan.cluster import torchrun_rank
from stylegan.distributed import init_distributed, shutdown
from stylegan.rundir import RunOwner
from stylegan.train.config import FIELDS, load_config
from stylegan.train.startup import plan_start
from stylegan.train.trainer import Trainer


def main(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.overrides)
    plan = plan_start(cfg, torchrun_rank()[1])
    if args.dry_run or plan.complete:  # a finished run resubmitted is a no-op, on every rank alike
        if args.dry_run:
            RunOwner(plan.rundir).check()
        print(plan.summary())
        return
    env = init_distributed(cfg.dist_timeout_s)
    trainer = Trainer(cfg, env, plan)
    try:
        code = trainer.run()
    finally:
        trainer.close()
        shutdown()
    sys.exit(code)


class TrainParser(argparse.ArgumentParser):
    """Flags and key=value overrides in any order: slurm/train.sh adds run_name= after the user's arguments, which
    may end in a flag."""

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        return self.parse_intermixed_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = TrainParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="config keys: " + ", ".join(FIELDS))
    parser.add_argument("--config", help="YAML file (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. batch=64 kimg=1000")
    parser.add_argument("--dry-run", action="store_true", help="print the start-up plan that training would follow "
                        "(for $WORLD_SIZE processes): config, dataset, run folder, resume source, batch split, frozen "
                        "layers; train nothing, write nothing")
    return parser


if __name__ == "__main__":
    run(main, build_parser())
