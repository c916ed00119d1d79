#!/usr/bin/env bash
# `docker run IMAGE <job> ARGS...` runs `python -m jobs.<job> ARGS...`; any other command runs as given
# (torchrun, bash, ...).
set -euo pipefail

jobs=(train preprocess evaluate sample convert make_textures submit demo)
if [ $# -eq 0 ] || [ "$1" = --help ]; then
    echo "usage: <job> [args...] with <job> one of: ${jobs[*]}; or any command (torchrun ..., bash)"
    exit 0
fi
for job in "${jobs[@]}"; do
    if [ "$1" = "$job" ]; then
        shift
        exec python -m "jobs.$job" "$@"
    fi
done
exec "$@"
