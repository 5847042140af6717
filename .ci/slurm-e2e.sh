#!/usr/bin/env bash
# End-to-end through a running SLURM (start it with .ci/slurm-up.sh):
#   1. the pipeline with config <cfg>, locally:           snakemake --cores all --configfile <cfg>
#      (or an existing local run of <cfg>, given as <local-results>: CI passes .ci/first-run.sh's)
#   2. the same configuration through SLURM, literally:   snakemake --cores all --profile slurm --configfile <cfg>
#   3. every table of both runs must hold the same values (timing columns aside: tests/tables_diff.py).
# (A job made to fail, retries and SIGTERM through the same profile: tests/test_slurm.py, in the pytest run.)
#
#   .ci/slurm-e2e.sh tests/tiny-config.yaml [work-dir [local-results]]
#
# No device override: the configuration's device (auto) asks SLURM for no GPU, so the CPU-only CI cluster runs
# the literal command. Results go to <work-dir>/{local,slurm}.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CFG=$(realpath "${1:?usage: .ci/slurm-e2e.sh <config.yaml> [work-dir]}")
WORK=$(realpath -m "${2:-$(mktemp -d /tmp/segbench-e2e.XXXXXX)}")
mkdir -p "$WORK"
# jobs inherit this environment (sbatch --export=ALL): they must find snakemake and segbench
[[ -x $ROOT/.venv/bin/snakemake ]] && export PATH="$ROOT/.venv/bin:$PATH"
T0=$(date +%s%N)
say() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '[slurm-e2e %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
fail() { echo "slurm-e2e: FAILED: $*" >&2; exit 1; }
sinfo -h >/dev/null 2>&1 || fail "no SLURM cluster answers sinfo; run .ci/slurm-up.sh first"

cd "$ROOT"
LOCAL=${3:-$WORK/local}
if [[ -n ${3:-} ]]; then
    [[ -d $LOCAL/tables ]] || fail "no tables in the local run '$LOCAL'"
    say "local run of $CFG: '$LOCAL' (given)"
else
    say "local run of $CFG -> $LOCAL"
    snakemake --cores all --configfile "$CFG" --config results="$LOCAL" >"$WORK/local.out" 2>&1 ||
        { tail -50 "$WORK/local.out"; fail "local run (log $WORK/local.out)"; }
fi
say "SLURM run of $CFG -> $WORK/slurm"
first_job=$(($(squeue -h -t all -o %i | sort -n | tail -1) + 1))
snakemake --cores all --profile slurm --configfile "$CFG" --config results="$WORK/slurm" \
    >"$WORK/slurm.out" 2>&1 || { tail -80 "$WORK/slurm.out"; fail "SLURM run (log $WORK/slurm.out)"; }
submitted=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.out" || true)
((submitted > 0)) || fail "the SLURM run submitted no job (log $WORK/slurm.out)"
say "SLURM run done: $submitted jobs submitted (SLURM ids from $first_job)"
python3 tests/tables_diff.py "$LOCAL" "$WORK/slurm" || fail "the local and the SLURM run's tables differ"
say "table2.csv of both runs:"
cat "$WORK/slurm/tables/table2.csv"

say "OK"
