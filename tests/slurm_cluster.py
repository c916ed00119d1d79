"""A real Slurm cluster on this host for the launcher tests: slurmctld plus two slurmd daemons (nodes n1, n2) on
loopback, every file in a temporary folder, daemons stopped by pid. Needs Debian's slurmctld, slurmd, slurm-client
and munge (tests/install-system-packages.sh) and root, as the daemons run as root here."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n1", "n2")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch")


def missing_requirements() -> str | None:
    """Why a cluster cannot start here, or None."""
    missing = [d for d in DAEMONS if not (shutil.which(d) or Path("/usr/sbin", d).exists())]
    if missing:
        return f"{', '.join(missing)} not installed (run tests/install-system-packages.sh as root)"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs its daemons as root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, root: Path, cpus_per_node: int = 2):
        self.root, self.cpus = root, cpus_per_node
        self.conf = root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.pids: list[int] = []

    def write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        ports = [free_port() for _ in range(2 + len(NODES))]
        for d in ("state", "log", "spool"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        nodes = "\n".join(f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus} "
                          "RealMemory=4000 State=UNKNOWN" for n, p in zip(NODES, ports[2:], strict=True))
        self.conf.write_text(f"""\
ClusterName=local
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool/%n
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd-%n.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SlurmdTimeout=30
InactiveLimit=0
KillWait=30
MinJobAge=300
{nodes}
PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")

    def start(self) -> LocalSlurm:
        self.write_config()
        self.start_munge()
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(self.conf)], env=self.env, check=True)
        self.pids.append(self.wait_pid(self.root / "slurmctld.pid"))
        for node in NODES:
            subprocess.run(["/usr/sbin/slurmd", "-f", str(self.conf), "-N", node], env=self.env, check=True)
            self.pids.append(self.wait_pid(self.root / f"slurmd-{node}.pid"))
        self.wait_for(lambda: self.run("sinfo", "-h", "-o", "%t %D").strip() == f"idle {len(NODES)}",
                      60, "nodes idle")
        return self

    def start_munge(self) -> None:
        """munged authenticates every Slurm message; one system-wide instance, started if none answers."""
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True)
        self.pids.append(self.wait_pid(Path("/run/munge/munged.pid")))

    def stop(self) -> None:
        for pid in reversed(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.pids.clear()

    def wait_pid(self, path: Path, timeout: float = 20) -> int:
        self.wait_for(lambda: path.is_file() and path.read_text().strip(), timeout, f"{path}")
        return int(path.read_text())

    def wait_for(self, predicate, timeout: float, what: str, poll: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((self.root / "log").glob("*.log")))
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")

    def run(self, *cmd: str, cwd: Path | None = None, env: dict | None = None) -> str:
        out = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> int:
        out = self.run("sbatch", "--parsable", *args, cwd=cwd, env=env)
        return int(out.strip().split(";")[0])

    def job_state(self, job_id: int) -> dict[str, str]:
        """Fields of `scontrol show job` for a plain job (an array's first task only; see array_states)."""
        text = self.run("scontrol", "show", "job", "-o", str(job_id))
        return dict(re.findall(r"(\w+)=(\S*)", text.splitlines()[0])) if text.strip() else {}

    def array_states(self, job_id: int) -> list[str]:
        text = self.run("scontrol", "show", "job", "-o", str(job_id))
        return re.findall(r"JobState=(\S+)", text)

    def start_requeued_now(self, job_id: int, restarts: int = 1) -> None:
        """Wait for a job's requeue, then let it start at once instead of after Slurm's ~2 minute requeue delay.
        Its previous run must be gone first: a job started while a slurmstepd of its previous run still tears
        down, or in the same second as its requeue, is killed ("Job credential revoked")."""
        self.wait_for(lambda: (s := self.job_state(job_id)).get("Restarts") == str(restarts) and
                      s["JobState"] == "PENDING", 120, f"job {job_id} to be requeued")
        self.wait_for(lambda: not self.step_daemons(job_id), 120, f"the previous run of job {job_id} to end")
        # slurmd compares a credential's creation time with the revocation time in whole seconds: a start within the
        # second of the requeue is still refused as revoked (seen once in CI), so let that second pass
        time.sleep(2)
        self.run("scontrol", "update", f"jobid={job_id}", "StartTime=now")

    def step_daemons(self, job_id: int) -> list[int]:
        """Pids of this job's slurmstepd processes (every node of this cluster is this host). Another cluster on the
        host (a second test run) numbers its jobs the same way: a step daemon is this cluster's when it carries this
        cluster's SLURM_CONF, which it inherits from our slurmd."""
        pids, ours = [], f"SLURM_CONF={self.conf}".encode()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (proc / "cmdline").read_bytes().startswith(f"slurmstepd: [{job_id}.".encode()) \
                        and ours in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
        return pids

    def wait_job(self, job_id: int, timeout: float = 300) -> list[str]:
        """Wait until every task of the job has ended; returns their states (COMPLETED, FAILED, ...)."""
        ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                 "DEADLINE", "PREEMPTED"}
        return self.wait_for(lambda: (s := self.array_states(job_id)) and all(x in ended for x in s) and s,
                             timeout, f"job {job_id}", poll=1)
