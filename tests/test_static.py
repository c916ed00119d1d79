"""Static checks of what Python's tests do not run: every shell script (shellcheck) and the Dockerfile
(hadolint), plus the container entrypoint's job dispatch, run here without Docker."""

from __future__ import annotations

import subprocess
import sys

from stylegan.cluster import SIGNAL_LEAD_S, rendezvous_port
from tests.conftest import REPO

SCRIPTS = sorted([*REPO.glob("slurm/*.sh"), *REPO.glob("docker/*.sh"), *REPO.glob("tests/*.sh"), REPO / ".ci/run"])


def check(cmd: list[str]) -> None:
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_shellcheck_every_script():
    assert len(SCRIPTS) >= 7
    check(["shellcheck", "--external-sources", *map(str, SCRIPTS)])


def test_hadolint_dockerfile():
    check(["hadolint", "docker/Dockerfile"])


def test_every_build_argument_has_a_default():
    """buildah warns at every build about an ARG that has no default and was not passed (a plain build passes
    none): each ARG names its default."""
    bare = [line for line in (REPO / "docker" / "Dockerfile").read_text().splitlines()
            if line.startswith("ARG ") and "=" not in line]
    assert not bare, bare


def test_entrypoint_runs_jobs_by_name_and_other_commands_as_given():
    out = subprocess.run(["docker/entrypoint.sh", "sample", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "--checkpoint" in out.stdout
    out = subprocess.run(["docker/entrypoint.sh", sys.executable, "-c", "print('as given')"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.stdout == "as given\n"


def test_the_shell_twins_of_the_launcher_policy_agree_with_stylegan_cluster():
    """#SBATCH lines and the batch shell cannot import Python: train.sh restates the signal lead and the port rule,
    and this holds them to stylegan/cluster.py."""
    script = (REPO / "slurm" / "train.sh").read_text()
    assert f"#SBATCH --signal=B:USR1@{SIGNAL_LEAD_S}\n" in script
    port_line = next(line for line in script.splitlines() if line.startswith("rdzv_port="))
    for job_id in (1, 19999, 20000, 4242424):
        port = subprocess.run(["bash", "-c", f"{port_line}\necho \"$rdzv_port\""], capture_output=True, text=True,
                              env={"SLURM_JOB_ID": str(job_id), "PATH": "/usr/bin:/bin"}, check=True).stdout
        assert int(port) == rendezvous_port(job_id)
