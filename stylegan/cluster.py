"""Where a process sits in a cluster job: its Slurm array task and its torchrun rank. Every job asks here."""

from __future__ import annotations

import os
import signal

from stylegan.errors import UserError

EXIT_PREEMPTED = 3  # training stopped on a signal after writing a snapshot: requeue the job to go on
# Snapshot and stop: TERM (preemption, scancel), USR1 (slurm/train.sh's time-limit warning), USR2 (submitit's).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


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


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
