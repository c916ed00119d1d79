#!/usr/bin/env bash
# Preprocess images into WebDataset shards, one array task per slice of the inputs:
#   sbatch --array=0-7 --cpus-per-task=8 slurm/preprocess.sh --source /shared/raw --dest /shared/data/tex64 \
#       --resolution 64
# The last task to finish writes dataset.json. Rerunning a task resumes it. Each task decodes with the CPUs Slurm
# gives it (--cpus-per-task; the default asks for no more than Slurm's default, so it fits any node).
#SBATCH --job-name=preprocess
#SBATCH --array=0-3
#SBATCH --time=04:00:00
#SBATCH --output=%x-%A_%a.out
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
share_cpus 1
log "preprocess task ${SLURM_ARRAY_TASK_ID:-0} of ${SLURM_ARRAY_TASK_COUNT:-1}: $*"
in_container "$PYTHON" -m jobs.preprocess --workers "$(task_cpus)" "$@"
