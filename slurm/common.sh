# shellcheck shell=bash
# Shared by every sbatch script: environment, container runtime, logging. Source it; do not run it.
#   CONTAINER_RUNTIME=none       run in the current Python environment (default; a virtualenv works)
#   CONTAINER_RUNTIME=apptainer  apptainer exec --nv $CONTAINER_IMAGE, with $STYLEGAN_BIND (shared FS) bound
#   CONTAINER_RUNTIME=pyxis      srun --container-image=$CONTAINER_IMAGE (enroot/pyxis)
#   CONTAINER_RUNTIME=podman     podman run $CONTAINER_IMAGE as the calling user (outputs are theirs), host network,
#                                $STYLEGAN_BIND mounted at the same path, working directory $PWD; PODMAN_OPTIONS are
#                                podman's own (e.g. --runtime runc), PODMAN_RUN_OPTIONS run's (GPUs through CDI:
#                                --device nvidia.com/gpu=all; podman-hpc users set what their site documents)
# The environment (NCCL_*, GLOO_*, PYTHONPATH, ...) passes through: srun exports it, apptainer keeps it unless told
# --cleanenv, pyxis keeps it; podman gets the job's SLURM_*, NCCL_*, GLOO_*, STYLEGAN_*, TORCH*, OMP_NUM_THREADS,
# CUDA_VISIBLE_DEVICES, WORLD_SIZE and MASTER_* (not PATH or PYTHONPATH: the image has its own).
# NETWORK_INTERFACE=ib0 (say) sets NCCL's and gloo's socket interface.

set -euo pipefail

: "${CONTAINER_RUNTIME:=none}"
: "${CONTAINER_IMAGE:=stylegan.sif}"
: "${STYLEGAN_BIND:=$PWD}"
: "${PYTHON:=python3}"
export PYTHONUNBUFFERED=1
if [ -n "${NETWORK_INTERFACE:-}" ]; then
    export NCCL_SOCKET_IFNAME="$NETWORK_INTERFACE" GLOO_SOCKET_IFNAME="$NETWORK_INTERFACE"
fi

# What goes in front of a command (apptainer) or into srun's options (pyxis) to run it in the container.
CONTAINER_PREFIX=()
PYXIS_OPTIONS=()
case "$CONTAINER_RUNTIME" in
    none) ;;
    apptainer) CONTAINER_PREFIX=(apptainer exec --nv --bind "$STYLEGAN_BIND" "$CONTAINER_IMAGE") ;;
    pyxis) PYXIS_OPTIONS=(--container-image="$CONTAINER_IMAGE" --container-mounts="$STYLEGAN_BIND"
                          --container-workdir="$PWD") ;;
    podman)
        read -ra podman_options <<< "${PODMAN_OPTIONS:-}"
        read -ra podman_run_options <<< "${PODMAN_RUN_OPTIONS:-}"
        # podman reads these from its own environment when it runs (a trailing * passes every match)
        podman_env=()
        for name in 'SLURM_*' 'NCCL_*' 'GLOO_*' 'STYLEGAN_*' 'TORCH*' 'MASTER_*' OMP_NUM_THREADS CUDA_VISIBLE_DEVICES \
                    WORLD_SIZE PYTHONUNBUFFERED; do
            podman_env+=(-e "$name")
        done
        CONTAINER_PREFIX=(podman "${podman_options[@]}" run --rm --network host --ipc host --user "$(id -u):$(id -g)"
                          -v "$STYLEGAN_BIND:$STYLEGAN_BIND" -w "$PWD" "${podman_env[@]}" "${podman_run_options[@]}"
                          "$CONTAINER_IMAGE") ;;
    *) echo "error: CONTAINER_RUNTIME=$CONTAINER_RUNTIME: use none, apptainer, pyxis or podman" >&2; exit 2 ;;
esac

log() {
    printf '[%s] %s: %s\n' "$(date +%H:%M:%S)" "${SLURM_JOB_ID:-local}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}" "$*"
}

# in_container CMD...: run CMD once, in the configured runtime (pyxis needs a job step for it).
in_container() {
    if [ "$CONTAINER_RUNTIME" = pyxis ]; then
        srun --ntasks=1 "${PYXIS_OPTIONS[@]}" "$@"
    else
        "${CONTAINER_PREFIX[@]}" "$@"
    fi
}

# on_every_node CMD...: one task per node of the allocation, in the configured runtime.
on_every_node() {
    srun --nodes="${SLURM_NNODES:-1}" --ntasks-per-node=1 --kill-on-bad-exit=1 "${PYXIS_OPTIONS[@]}" \
         "${CONTAINER_PREFIX[@]}" "$@"
}

# gpus_on_node: the GPUs this job has on each node (0 on a CPU allocation).
gpus_on_node() {
    local per_node="${SLURM_GPUS_PER_NODE:-0}"
    echo "${SLURM_GPUS_ON_NODE:-${per_node##*:}}"
}

# task_cpus: the CPUs this task may use (--cpus-per-task, else what Slurm gave the job on this node).
task_cpus() {
    echo "${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}"
}

# share_cpus PROCS: split the task's CPUs over PROCS processes (unless OMP_NUM_THREADS is set): more threads than
# cores makes PyTorch's CPU kernels crawl.
share_cpus() {
    local threads=$(( $(task_cpus) / $1 ))
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}"
}

# run_job MODULE ARGS...: one process, or one per GPU of this node under torchrun when the allocation has several.
run_job() {
    local module=$1
    shift
    local gpus
    gpus=$(gpus_on_node)
    log "$module on ${gpus} GPU(s): $*"
    share_cpus "$(( gpus > 1 ? gpus : 1 ))"
    if [ "$gpus" -gt 1 ]; then
        in_container "$PYTHON" -m jobs.launch --standalone --nproc-per-node="$gpus" -m "$module" "$@"
    else
        in_container "$PYTHON" -m "$module" "$@"
    fi
}

log "suite $STYLEGAN_HOME, container runtime $CONTAINER_RUNTIME"
