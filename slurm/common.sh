# Shared by every sbatch script: environment, container runtime, logging. Source it; do not run it.
#   CONTAINER_RUNTIME=none       run in the current Python environment (default; a virtualenv works)
#   CONTAINER_RUNTIME=apptainer  apptainer exec --nv $CONTAINER_IMAGE, with $STYLEGAN_BIND (shared FS) bound
#   CONTAINER_RUNTIME=pyxis      srun --container-image=$CONTAINER_IMAGE (enroot/pyxis)

set -euo pipefail

: "${CONTAINER_RUNTIME:=none}"
: "${CONTAINER_IMAGE:=stylegan.sif}"
: "${STYLEGAN_BIND:=$PWD}"
: "${PYTHON:=python3}"
export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"

log() {
    printf '[%s] %s: %s\n' "$(date +%H:%M:%S)" "${SLURM_JOB_ID:-local}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}" "$*"
}

# in_container CMD...: run CMD in the configured runtime.
in_container() {
    case "$CONTAINER_RUNTIME" in
        none) "$@" ;;
        apptainer) apptainer exec --nv --bind "$STYLEGAN_BIND" "$CONTAINER_IMAGE" "$@" ;;
        pyxis) srun --ntasks=1 --container-image="$CONTAINER_IMAGE" --container-mounts="$STYLEGAN_BIND" \
                    --container-workdir="$PWD" "$@" ;;
        *) echo "error: CONTAINER_RUNTIME=$CONTAINER_RUNTIME: use none, apptainer or pyxis" >&2; exit 2 ;;
    esac
}

# run_job MODULE ARGS...: one process, or one per GPU of this node under torchrun when the allocation has several.
run_job() {
    local module=$1
    shift
    local gpus="${SLURM_GPUS_ON_NODE:-0}"
    log "$module on ${gpus} GPU(s): $*"
    if [ "$gpus" -gt 1 ]; then
        in_container torchrun --standalone --nproc-per-node="$gpus" -m "$module" "$@"
    else
        in_container "$PYTHON" -m "$module" "$@"
    fi
}
