"""Submit the suite's jobs with submitit: to Slurm, or as local processes (`--cluster local`).

    python -m jobs.submit train --nodes 2 --gpus-per-node 8 --partition gpu --time 48:00:00 -- \
        --config configs/ffhq256.yaml
    python -m jobs.submit preprocess --array 8 -- --source raw/ --dest data/tex64 --resolution 64
    python -m jobs.submit sample --array 4 --gpus-per-node 1 -- --checkpoint net.pt --outdir out --seeds 0-99999
    python -m jobs.submit evaluate --cluster local -- --run runs/textures64 --metrics swd
Training is a submitit Checkpointable: on preemption or timeout Slurm requeues it and it resumes (resume=auto).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import submitit

from jobs.cli import job_names, run, run_job
from stylegan.cluster import EXIT_PREEMPTED, SIGNAL_LEAD_S, parse_minutes, rendezvous_port
from stylegan.errors import UserError


def submittable() -> list[str]:
    return [name for name in job_names() if name != "submit"]


class JobCall:
    """Runs `python -m jobs.<name> <argv>` inside the submitit job process (its main(), called directly);
    picklable, so it can be requeued."""

    def __init__(self, name: str, argv: list[str]):
        self.name, self.argv = name, list(argv)

    def __call__(self) -> None:
        code = self.run_module()
        if code:
            raise RuntimeError(f"{self!r} exited with code {code}")

    def run_module(self) -> int:
        """The job's exit code."""
        self.setup_distributed()
        try:
            run_job(self.name, self.argv)
        except SystemExit as e:
            return 0 if e.code is None else int(e.code)
        return 0

    def setup_distributed(self) -> None:
        """Under srun without torchrun, describe the process group from Slurm (submitit's JobEnvironment) in the
        variables torchrun would set, so the job code has one way to read it (stylegan.cluster)."""
        if "RANK" in os.environ or "SLURM_JOB_ID" not in os.environ:
            return
        env = submitit.JobEnvironment()
        os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
                          MASTER_ADDR=env.hostnames[0], MASTER_PORT=str(rendezvous_port(int(env.job_id))))

    def __repr__(self) -> str:
        return f"jobs.{self.name} {' '.join(self.argv)}"


UNLIMITED_TIMEOUTS = 2 ** 31 - 1  # submitit counts down from this at each time limit

# The signal submitit's sbatch asks for before the time limit, and that its handler answers with a requeue.
SUBMITIT_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class TrainCall(JobCall, submitit.helpers.Checkpointable):
    """Training that requeues itself. On submitit's signal (time limit) or SIGTERM (preemption) the trainer writes a
    snapshot, puts submitit's signal handlers back and returns EXIT_PREEMPTED; the call then hands the signal to
    submitit, which requeues the job with checkpoint() below (rank 0; the other ranks just return). The requeued
    call resumes from the snapshot."""

    def __call__(self) -> None:
        code = self.run_module()
        if code == EXIT_PREEMPTED:
            os.kill(os.getpid(), SUBMITIT_SIGNAL)
        elif code:
            raise RuntimeError(f"{self!r} exited with code {code}")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(TrainCall(self.name, self.argv))


def make_executor(folder: Path, cluster: str | None, nodes: int = 1, gpus_per_node: int = 0, cpus: int = 2,
                  partition: str | None = None, time_min: int = 60, name: str = "stylegan",
                  tasks_per_node: int = 1) -> submitit.AutoExecutor:
    # submitit stops requeueing after 3 time limits by default; training resumes after every one, as slurm/train.sh
    # does (jobs that cannot checkpoint are never requeued at a time limit anyway)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster, slurm_max_num_timeout=UNLIMITED_TIMEOUTS)
    params = dict(name=name, nodes=nodes, tasks_per_node=tasks_per_node, cpus_per_task=cpus,
                  timeout_min=time_min)
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    if partition and executor.cluster == "slurm":
        params["slurm_partition"] = partition
    if executor.cluster == "slurm":
        params["slurm_signal_delay_s"] = SIGNAL_LEAD_S  # SUBMITIT_SIGNAL before the time limit: time for a snapshot
    executor.update_parameters(**params)
    return executor


def submit(executor: submitit.AutoExecutor, name: str, argv: list[str], array: int = 0) -> list[submitit.Job]:
    if name not in submittable():
        raise UserError(f"unknown job '{name}': choose from {', '.join(submittable())}")
    call = TrainCall if name == "train" else JobCall
    if array <= 1:
        return [executor.submit(call(name, argv))]
    with executor.batch():
        jobs = [executor.submit(call(name, [*argv, "--task-index", str(i), "--num-tasks", str(array)]))
                for i in range(array)]
    return jobs


def check_fits(nodes: int, tasks_per_node: int, cpus: int, gpus_per_node: int, partition: str | None,
               time_min: int) -> None:
    """Ask Slurm whether such a job could ever start (`sbatch --test-only`, same resources), so that one that would
    pend forever (more CPUs or GPUs than any node of the partition has) is refused now, with Slurm's reason."""
    cmd = ["sbatch", "--test-only", f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}",
           f"--cpus-per-task={cpus}", f"--time={time_min}", "--wrap=true"]
    cmd += [f"--gpus-per-node={gpus_per_node}"] if gpus_per_node else []
    cmd += [f"--partition={partition}"] if partition else []
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        reason = " ".join(result.stderr.replace("sbatch: error:", "").split())
        raise UserError(f"Slurm would never start this job ({reason}): ask for fewer --cpus, --gpus-per-node or "
                        "--nodes, or another --partition (`sinfo -o '%P %D %c %G'` lists what the nodes have)")


def main(args: argparse.Namespace) -> None:
    tasks_per_node, minutes = max(args.gpus_per_node, 1) if args.job == "train" else 1, parse_minutes(args.time)
    executor = make_executor(Path(args.folder), args.cluster, args.nodes, args.gpus_per_node, args.cpus,
                             args.partition, minutes, name=args.job, tasks_per_node=tasks_per_node)
    if executor.cluster == "slurm":
        check_fits(args.nodes, tasks_per_node, args.cpus, args.gpus_per_node, args.partition, minutes)
    jobs = submit(executor, args.job, args.job_args, args.array)
    for job in jobs:
        print(f"submitted {args.job} job {job.job_id} ({executor.cluster}); logs: {job.paths.stdout}")
    if args.wait:
        for job in jobs:
            job.result()
        print(f"{len(jobs)} job(s) finished")


class SubmitParser(argparse.ArgumentParser):
    """Everything after `--` belongs to the job, untouched (its own flags included): `job_args`."""

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        argv = sys.argv[1:] if args is None else list(args)
        cut = argv.index("--") if "--" in argv else len(argv)
        parsed = super().parse_args(argv[:cut], namespace)
        parsed.job_args = argv[cut + 1:]
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = SubmitParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=submittable())
    parser.add_argument("--cluster", choices=("slurm", "local"), help="default: slurm when sbatch exists")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs per task (data loading, PNG writers): modest, so "
                        "jobs fit ordinary nodes; raise it where nodes have more")
    parser.add_argument("--partition")
    parser.add_argument("--time", default="04:00:00", help="time limit: MM, HH:MM:SS or D-HH:MM:SS")
    parser.add_argument("--array", type=int, default=0, help="split into this many array tasks")
    parser.add_argument("--folder", default="submitit-logs", help="where submitit keeps logs and pickles")
    parser.add_argument("--wait", action="store_true", help="wait for the jobs and fail if one fails")
    parser.epilog = "after --: the job's own arguments (python -m jobs.<job> --help)"
    return parser


if __name__ == "__main__":
    run(main, build_parser())
