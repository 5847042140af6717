#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started: cancel leftover jobs, then stop each daemon listed in
# $SEGBENCH_SLURM_DIR/started by the pid in its pid file (TERM, KILL after 15 s), newest first.
# Daemons that were already running before slurm-up.sh are not listed there and keep running.
set -uo pipefail
if [[ $EUID -ne 0 ]]; then exec sudo -E "$0" "$@"; fi

DIR=${SEGBENCH_SLURM_DIR:-/tmp/segbench-slurm}
T0=$(date +%s%N)
say() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '[%s %d.%03ds] %s\n' slurm-down $((ms / 1000)) $((ms % 1000)) "$*"; }
[[ -s $DIR/started ]] || { say "nothing recorded in $DIR/started; nothing to stop"; exit 0; }

if grep -q '^slurmctld ' "$DIR/started"; then
    jobs=$(squeue -h -o %i -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null | tr '\n' ' ')
    if [[ -n ${jobs// /} ]]; then
        say "cancelling jobs $jobs"
        # shellcheck disable=SC2086
        scancel $jobs
    fi
fi

tac "$DIR/started" | while read -r name pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null) || { say "$name: no pid file $pidfile"; continue; }
    if ! kill -0 "$pid" 2>/dev/null; then say "$name (pid $pid) not running"; continue; fi
    kill -TERM "$pid"
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        say "$name (pid $pid) ignored TERM for 15 s: killed"
    else
        say "$name (pid $pid) stopped"
    fi
done
: >"$DIR/started"
