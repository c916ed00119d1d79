"""Static checks of what Python's tests do not run: every shell script (shellcheck) and the Dockerfile
(hadolint), plus the container entrypoint's job dispatch, run here without Docker."""

from __future__ import annotations

import subprocess
import sys

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


def test_entrypoint_runs_jobs_by_name_and_other_commands_as_given():
    out = subprocess.run(["docker/entrypoint.sh", "sample", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "--checkpoint" in out.stdout
    out = subprocess.run(["docker/entrypoint.sh", sys.executable, "-c", "print('as given')"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.stdout == "as given\n"
