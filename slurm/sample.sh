#!/usr/bin/env bash
# Bulk sampling as an array job; seeds are split over array tasks, and over GPUs within a task (torchrun):
#   sbatch --array=0-7 --gpus-per-node=1 slurm/sample.sh --checkpoint run/checkpoints/network-snapshot-001000.pt \
#          --outdir /shared/samples/run1 --seeds 0-999999 --trunc 0.7
# A rerun skips the seeds already written.
#SBATCH --job-name=sample
#SBATCH --array=0-3
#SBATCH --nodes=1
#SBATCH --cpus-per-task=16
#SBATCH --time=02:00:00
#SBATCH --output=%x-%A_%a.out

STYLEGAN_HOME="${STYLEGAN_HOME:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}"
# shellcheck source=slurm/common.sh
source "$STYLEGAN_HOME/slurm/common.sh"
run_job jobs.sample "$@"
