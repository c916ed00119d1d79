#!/usr/bin/env bash
# Preprocess images into WebDataset shards, one array task per slice of the inputs:
#   sbatch --array=0-7 slurm/preprocess.sh --source /shared/raw --dest /shared/data/tex64 --resolution 64
# The last task to finish writes dataset.json. Rerunning a task resumes it.
#SBATCH --job-name=preprocess
#SBATCH --array=0-3
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=%x-%A_%a.out

# sbatch runs a copy of this script from its spool directory: find the checkout from the submit directory.
STYLEGAN_HOME="${STYLEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
# shellcheck source=slurm/common.sh
source "$STYLEGAN_HOME/slurm/common.sh"
share_cpus "${SLURM_CPUS_PER_TASK:-1}"  # one thread per worker process
log "preprocess task ${SLURM_ARRAY_TASK_ID:-0} of ${SLURM_ARRAY_TASK_COUNT:-1}: $*"
in_container "$PYTHON" -m jobs.preprocess --workers "${SLURM_CPUS_PER_TASK:-1}" "$@"
