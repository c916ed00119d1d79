"""Where a process sits in a cluster job: Slurm array tasks. (Distributed ranks live in stylegan.distributed.)"""

from __future__ import annotations

import os

from stylegan.errors import UserError


def array_task(index: int | None, count: int | None) -> tuple[int, int]:
    """(task, num_tasks) from explicit flags, else from Slurm's array variables, else (0, 1)."""
    if index is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        index = int(os.environ["SLURM_ARRAY_TASK_ID"]) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", 0))
    if count is None and "SLURM_ARRAY_TASK_COUNT" in os.environ:
        count = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
    index, count = index or 0, count or 1
    if count < 1 or not 0 <= index < count:
        raise UserError(f"task index {index} is outside 0..{count - 1} (--task-index/--num-tasks or "
                        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT)")
    return index, count


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
