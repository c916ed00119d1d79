#!/usr/bin/env bash
# `<image> <job> ARGS...` runs the job (`stylegan <job>`, i.e. `python -m jobs.<job>`); `<image> --help` lists the
# jobs; any other command runs as given (python3 -m jobs.launch ..., bash, ...).
set -euo pipefail

if [ $# -eq 0 ] || [[ "$1" == -* ]] || stylegan --list | grep -xF -- "$1" >/dev/null; then
    exec stylegan "$@"
fi
exec "$@"
