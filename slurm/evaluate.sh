#!/usr/bin/env bash
# Evaluate a run's snapshots off the training path. Two ways:
#   watcher, started alongside training (evaluates each new snapshot, exits when training is done):
#     sbatch --gpus-per-node=1 slurm/evaluate.sh --run /shared/runs/textures64 --metrics fid50k_full,swd --watch
#   one pass after a training job (or after each requeue), with a dependency:
#     sbatch --dependency=afterany:<train job id> slurm/evaluate.sh --run /shared/runs/textures64
# Evaluators never repeat a (snapshot, metric) pair, so both can run at once.
#SBATCH --job-name=evaluate
#SBATCH --nodes=1
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
# Slurm runs a copy of this script from its spool folder: find the suite from the path it was submitted as
# (relative to the submission folder), wherever that was; or set STYLEGAN_HOME.
submitted=$(scontrol show job "${SLURM_JOB_ID:?submit this script with sbatch}" \
    | awk '/^ *Command=/ && !found { sub(/^ *Command=/, ""); print $1; found = 1 }')
STYLEGAN_HOME="${STYLEGAN_HOME:-$(cd "$SLURM_SUBMIT_DIR" && cd "$(dirname "$submitted")/.." && pwd)}"
# shellcheck source=slurm/common.sh
source "$STYLEGAN_HOME/slurm/common.sh"
run_job jobs.evaluate "$@"
