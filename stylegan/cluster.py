"""Where a process sits in a cluster job: its Slurm array task and its torchrun rank. Every job asks here."""

from __future__ import annotations

import os
import signal

from stylegan.errors import UserError

EXIT_PREEMPTED = 3  # training stopped on a signal after writing a snapshot: requeue the job to go on
# How long before its time limit a job is told to snapshot and stop (slurm/train.sh: #SBATCH --signal=B:USR1@120).
SIGNAL_LEAD_S = 120
# Snapshot and stop: TERM (preemption, scancel), USR1 (slurm/train.sh's time-limit warning), USR2 (submitit's).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def leave_interrupts_to_parent() -> None:
    """For worker processes (a pool's initializer): a Ctrl-C reaches the whole process group, and the parent stops
    its workers itself, so they ignore SIGINT instead of each printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """While active, the first of STOP_SIGNALS is recorded in `signum` instead of ending the process; the handlers
    that were there before (submitit's, say) are back in place on exit."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signum: int | None = None
        self.signals, self.previous = signals, {}

    def _record(self, signum: int, frame) -> None:
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequest:
        self.previous = {sig: signal.signal(sig, self._record) for sig in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def array_task(index: int | None, count: int | None) -> tuple[int, int]:
    """(task, num_tasks) from explicit flags, else from Slurm's array variables, else (0, 1)."""
    if index is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        index = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
    if count is None and "SLURM_ARRAY_TASK_COUNT" in os.environ:
        count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    index, count = (0 if index is None else index), (1 if count is None else count)
    if count < 1 or not 0 <= index < count:
        raise UserError(f"task index {index} is outside 0..{count - 1} (--task-index/--num-tasks or "
                        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT)")
    return index, count


def task_range(num_items: int, task: int, num_tasks: int) -> tuple[int, int]:
    """The contiguous [start, end) slice of num_items that task `task` of `num_tasks` owns."""
    return num_items * task // num_tasks, num_items * (task + 1) // num_tasks


def torchrun_rank() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) for a plain process."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def restart_attempt() -> int:
    """How many times torchrun has restarted this job's workers (0 on the first attempt or without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


def rendezvous_port(job_id: int) -> int:
    """The torchrun rendezvous / process-group port of a Slurm job: one per job, so jobs sharing a node do not
    collide (slurm/train.sh computes the same in shell)."""
    return 20000 + job_id % 20000


def parse_minutes(text: str) -> int:
    """A Slurm time limit (`MM`, `HH:MM:SS`, `D-HH:MM:SS`, `D-HH`) in whole minutes, rounded up."""
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    try:
        parts = [int(p) for p in clock.split(":")]
        days_n = int(days)
    except ValueError:
        raise UserError(f"--time {text!r}: use MM, HH:MM:SS or D-HH:MM:SS") from None
    if "-" in text:  # after D-, the fields are HH[:MM[:SS]]
        parts += [0] * (3 - len(parts))
    elif len(parts) == 1:
        parts = [0, parts[0], 0]
    elif len(parts) == 2:
        parts = [0, *parts]
    if len(parts) != 3 or min(parts + [days_n]) < 0:
        raise UserError(f"--time {text!r}: use MM, HH:MM:SS or D-HH:MM:SS")
    hours, minutes, seconds = parts
    return days_n * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
