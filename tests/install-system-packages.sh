#!/usr/bin/env bash
# System packages the tests use beyond pip: Slurm and munge for the real-cluster tests (tests/test_slurm.py).
# Installs them with apt when run as root and they are missing; otherwise says what is missing, and those tests
# are skipped.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)
if command -v sbatch >/dev/null && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: ${packages[*]} are not installed and this is not a root Debian/Ubuntu shell:" \
         "the Slurm tests will be skipped (install them with your package manager to run them)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${packages[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${packages[@]}" >/dev/null; }
echo "installed ${packages[*]}"
