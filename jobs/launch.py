"""torchrun for the sbatch scripts: the same arguments, but a stop signal (the time-limit warning, a preemption)
ends it with one line and exit code 3, "requeue me", instead of torchrun's traceback and exit code 1.

    python -m jobs.launch --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d ... -m jobs.train ...
On the signal torchrun passes SIGTERM to the training processes, which write a snapshot and exit.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main as torchrun

from stylegan.cluster import EXIT_PREEMPTED


def main(argv: list[str] | None = None) -> None:
    try:
        torchrun(argv)
    except SignalException as e:
        print(f"torchrun: stopped by signal {e.sigval.name}; the training processes wrote a snapshot: exit "
              f"{EXIT_PREEMPTED} (requeue the job to go on)", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)


if __name__ == "__main__":
    main()
