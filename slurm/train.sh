#!/usr/bin/env bash
# Train with DDP on every GPU of every node of the allocation: one srun task per node runs torchrun, and the
# torchrun agents meet in a c10d rendezvous on the first node.
#   sbatch --gpus-per-node=8 slurm/train.sh --config configs/ffhq256.yaml resume=/shared/pretrained/ffhq-256.pkl
#   sbatch --nodes=4 --gpus-per-node=8 --job-name=ffhq-r1 slurm/train.sh --config configs/ffhq256.yaml batch=256
# The run directory is <outdir>/<job name> (outdir defaults to runs/ under the submit directory), so a requeued
# job resumes the same run. Two minutes before the time limit Slurm sends USR1: training writes a snapshot and
# stops, and this script requeues the job, which resumes at the same kimg. Without GPUs (tests, laptops) set
# PROCS_PER_NODE for CPU processes. The config is checked (jobs.train --dry-run) before any training process
# starts, so a config error ends the job at once with exit code 2. Give data loading CPUs with --cpus-per-task
# (the default asks for none beyond Slurm's default, so the job fits any node).
#SBATCH --job-name=train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --time=24:00:00
# USR1 120 s before the time limit: stylegan.cluster.SIGNAL_LEAD_S
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
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

gpus=$(gpus_on_node)
procs="${PROCS_PER_NODE:-$(( gpus > 0 ? gpus : 1 ))}"
share_cpus "$procs"
first_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# The node's address as Slurm knows it (NodeAddr; usually its host name).
rdzv_host=$(scontrol show node "$first_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
rdzv_port="${RDZV_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}"  # = stylegan.cluster.rendezvous_port
args=("$@")
if [[ " $* " != *" run_name="* ]]; then
    args+=("run_name=$SLURM_JOB_NAME")
fi

# USR1 (time limit) or TERM: pass TERM to the job steps (torchrun forwards it to its workers, which snapshot and
# exit), then requeue once they are done. The batch shell only gets USR1 (--signal=B:), so it decides.
stop_signal=""
# shellcheck disable=SC2317,SC2329  # called by the traps
on_signal() {
    stop_signal=$1
    log "got SIG$1: asking training to write a snapshot and stop"
    scancel --signal=TERM "$SLURM_JOB_ID"
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

log "train: $SLURM_NNODES node(s) x $procs process(es), rendezvous $rdzv_host:$rdzv_port, restart ${SLURM_RESTART_COUNT:-0}"
# User errors (exit 2) are found here, once, before torchrun could retry them MAX_RESTARTS times.
WORLD_SIZE=$(( SLURM_NNODES * procs )) in_container "$PYTHON" -m jobs.train --dry-run "${args[@]}" \
    || { code=$?; log "the config check failed (exit $code): no training process started"; exit "$code"; }
# jobs.launch is torchrun that ends a signal-time stop with exit 3 and one line instead of a traceback.
on_every_node "$PYTHON" -m jobs.launch --nnodes="$SLURM_NNODES" --nproc-per-node="$procs" \
    --max-restarts="${MAX_RESTARTS:-3}" --rdzv-backend=c10d --rdzv-endpoint="$rdzv_host:$rdzv_port" \
    --rdzv-id="$SLURM_JOB_ID" ${LOG_RANKS:+--local-ranks-filter="$LOG_RANKS"} -m jobs.train "${args[@]}" &
srun_pid=$!
# A trapped signal interrupts `wait`; wait again until srun itself has ended.
while true; do
    code=0
    wait "$srun_pid" || code=$?
    kill -0 "$srun_pid" 2>/dev/null || break
done

if [ -n "$stop_signal" ]; then
    log "training stopped on SIG$stop_signal (exit $code): requeueing; the job resumes from the last snapshot"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
log "training exited with code $code"
exit "$code"
