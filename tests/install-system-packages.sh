#!/usr/bin/env bash
# System packages the tests use beyond pip: Slurm and munge for the real-cluster tests (tests/test_slurm.py), podman,
# buildah, runc and debootstrap to build and run the image (tests/test_container.py). Installs the missing ones
# with apt when run as root; otherwise says what is missing, and those tests are skipped.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge podman buildah runc debootstrap)
commands=(/usr/sbin/slurmctld /usr/sbin/slurmd sbatch /usr/sbin/munged podman buildah runc debootstrap)
missing=()
for i in "${!packages[@]}"; do
    command -v "${commands[$i]}" >/dev/null || missing+=("${packages[$i]}")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: ${missing[*]} are not installed and this is not a root Debian/Ubuntu shell:" \
         "the tests that need them will be skipped (install them with your package manager to run them)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
echo "installed ${missing[*]}"
