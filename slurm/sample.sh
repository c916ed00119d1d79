#!/usr/bin/env bash
# Generate images. Per-seed PNGs are split over array tasks (and over GPUs within a task, torchrun):
#   sbatch --array=0-7 --gpus-per-node=1 slurm/sample.sh --checkpoint run/checkpoints/network-snapshot-001000.000.pt \
#          --outdir /shared/samples/run1 --seeds 0-999999 --trunc 0.7
# A grid, a walk or a style-mixing figure is one file: submit it without --array (in an array, task 0 writes it and
# the other tasks have nothing to do). A rerun skips the seeds already written.
#SBATCH --job-name=sample
#SBATCH --nodes=1
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
# Slurm runs a copy of this script from its spool folder. The suite is $STYLEGAN_HOME, else the folder above this
# script as it was submitted (relative to the submission folder), else the checkout python3 imports it from.
# Slurm's Command= is the script's path and the arguments, joined by spaces: the script is its longest prefix that
# is a file (a path may hold spaces). These lines open every script in slurm/, alike: they run before common.sh
# can be found (tests/test_structure.py keeps them identical).
submitted=$(scontrol show job "${SLURM_JOB_ID:?submit this script with sbatch}" | sed -n 's/^ *Command=//p' | head -n 1)
while [[ "$submitted" == *" "* ]] && ! (cd "$SLURM_SUBMIT_DIR" && [ -f "$submitted" ]); do submitted=${submitted% *}; done
for STYLEGAN_HOME in ${STYLEGAN_HOME:+"$STYLEGAN_HOME"} "$(cd "$SLURM_SUBMIT_DIR" && cd "$(dirname "$submitted")/.." \
    && pwd)" "$("${PYTHON:-python3}" -c 'import jobs, pathlib; print(pathlib.Path(jobs.__file__).parents[1])')"; do
    [ -f "$STYLEGAN_HOME/slurm/common.sh" ] && break
done 2>/dev/null
[ -f "$STYLEGAN_HOME/slurm/common.sh" ] || { echo "error: $submitted: the suite is neither above this copy of the" \
    "script nor importable by ${PYTHON:-python3}: set STYLEGAN_HOME=/path/to/the/suite (its checkout)" >&2; exit 2; }
# shellcheck source=slurm/common.sh
source "$STYLEGAN_HOME/slurm/common.sh"
run_job jobs.sample "$@"
