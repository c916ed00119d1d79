#!/usr/bin/env bash
# Evaluate a run's snapshots off the training path. Two ways:
#   watcher, started alongside training (evaluates each new snapshot, exits when training is done):
#     sbatch slurm/evaluate.sh --run /shared/runs/textures64 --metrics fid50k_full,swd --watch
#   one pass after a training job (or after each requeue), with a dependency:
#     sbatch --dependency=afterany:<train job id> slurm/evaluate.sh --run /shared/runs/textures64
# Evaluators never repeat a (snapshot, metric) pair, so both can run at once.
#SBATCH --job-name=evaluate
#SBATCH --nodes=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out

STYLEGAN_HOME="${STYLEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
# shellcheck source=slurm/common.sh
source "$STYLEGAN_HOME/slurm/common.sh"
run_job jobs.evaluate "$@"
