#!/usr/bin/env bash
# The README's first command as a new user runs it, on a configuration: in the environment that the README's
# install step built (no test extra), `snakemake --cores all` through to report.html, then no rule log may
# hold a carriage return (a progress bar redrawn into a file). Results go to <results>, which may be a folder
# whose name needs quoting (CI uses "out dir's results": every rule must quote the paths it passes).
#
#   .ci/first-run.sh tests/tiny-config.yaml <results>
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CFG=$(realpath "${1:?usage: .ci/first-run.sh <config.yaml> <results>}")
RES=$(realpath -m "${2:?usage: .ci/first-run.sh <config.yaml> <results>}")
T0=$(date +%s)
fail() { echo "first-run: FAILED: $*" >&2; exit 1; }
mkdir -p "$(dirname "$RES")"
cd "$ROOT"
echo "[first-run] snakemake --cores all --configfile $CFG, results in '$RES'"
snakemake --cores all --configfile "$CFG" --config "results=$RES" >"$RES.out" 2>&1 ||
    { tail -60 "$RES.out"; fail "the run exited non-zero (log '$RES.out')"; }
[[ -s $RES/report.html ]] || fail "no report.html in '$RES' (log '$RES.out')"
with_cr=$(grep -rl $'\r' "$RES/logs" || true)
[[ -z $with_cr ]] || fail "rule logs with carriage returns (progress bars drawn into a file):"$'\n'"$with_cr"
echo "[first-run] OK in $(($(date +%s) - T0)) s: $(grep -c '^rule \|^localrule ' "$RES.out") jobs, report.html, no carriage return in $(find "$RES/logs" -type f | wc -l) logs"
