#!/usr/bin/env bash
# Project real images into W (NVIDIA's projector, many images per batch). Images are split over array tasks:
#   sbatch --array=0-7 --gpus-per-node=1 slurm/project.sh --network run/checkpoints/network-snapshot-001000.000.pt \
#          --images /shared/photos --outdir /shared/projections/run1
# A rerun (or a requeue) skips the images already projected. Needs NVIDIA's vgg16.pt in $STYLEGAN_CACHE
# (`python -m jobs.fetch_weights --which vgg16` on the login node).
#SBATCH --job-name=project
#SBATCH --nodes=1
#SBATCH --time=04:00:00
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
run_job jobs.project "$@"
