#!/usr/bin/env bash
# End-to-end through a running SLURM (start it with .ci/slurm-up.sh):
#   1. the pipeline with config <cfg>, locally:           snakemake --cores all --configfile <cfg>
#   2. the same configuration through SLURM, literally:   snakemake --cores all --profile slurm --configfile <cfg>
#   3. both results/tables/table2.csv must be identical;
#   4. a workflow whose job fails on purpose, through the same profile: snakemake must exit non-zero and
#      name the failed rule and its SLURM log, which must exist and hold the job's error.
#
#   .ci/slurm-e2e.sh tests/tiny-config.yaml [work-dir]
#
# The CI node has no GPU, so device=cpu (no rule asks SLURM for one). Results go to <work-dir>/{local,slurm}.
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
say "local run of $CFG -> $WORK/local"
snakemake --cores all --configfile "$CFG" --config results="$WORK/local" device=cpu >"$WORK/local.out" 2>&1 ||
    { tail -50 "$WORK/local.out"; fail "local run (log $WORK/local.out)"; }
say "SLURM run of $CFG -> $WORK/slurm"
first_job=$(($(squeue -h -t all -o %i | sort -n | tail -1) + 1))
snakemake --cores all --profile slurm --configfile "$CFG" --config results="$WORK/slurm" device=cpu \
    >"$WORK/slurm.out" 2>&1 || { tail -80 "$WORK/slurm.out"; fail "SLURM run (log $WORK/slurm.out)"; }
submitted=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.out" || true)
((submitted > 0)) || fail "the SLURM run submitted no job (log $WORK/slurm.out)"
say "SLURM run done: $submitted jobs submitted (SLURM ids from $first_job)"
cmp "$WORK/local/tables/table2.csv" "$WORK/slurm/tables/table2.csv" ||
    fail "table2.csv differs between the local and the SLURM run"
say "table2.csv identical:"
cat "$WORK/slurm/tables/table2.csv"

# A job made to fail: `bad` exits 3 after writing its rule log; `ok` does not depend on it and must
# still run (keep-going). No retries, so the check takes one attempt.
FAILDIR=$WORK/failing
mkdir -p "$FAILDIR"
cat >"$FAILDIR/Snakefile" <<'EOF'
rule all:
    input: "ok.txt", "bad.txt"

rule ok:
    output: "ok.txt"
    resources: mem_mb=200, runtime=2
    shell: "echo ok > {output}"

rule bad:
    output: "bad.txt"
    log: "logs/bad.log"
    resources: mem_mb=200, runtime=2
    shell: "echo 'bad: failing on purpose' > {log}; exit 3"
EOF
say "failing workflow through the profile"
set +e
(cd "$FAILDIR" && snakemake --cores all --profile "$ROOT/slurm" --retries 0 >"$FAILDIR/run.out" 2>&1)
rc=$?
set -e
((rc != 0)) || fail "snakemake exited 0 although rule bad failed"
[[ -s $FAILDIR/ok.txt ]] || fail "rule ok did not run next to the failed job (keep-going)"
grep -q "Error in rule bad" "$FAILDIR/run.out" || fail "no 'Error in rule bad' in $FAILDIR/run.out"
slurm_log=$(grep -oE "[^ ,]*\.snakemake/slurm_logs/rule_bad/[0-9]+\.log" "$FAILDIR/run.out" | head -1)
[[ -n $slurm_log ]] || fail "the error report names no SLURM log of rule bad"
[[ -f $slurm_log ]] || fail "the named SLURM log $slurm_log does not exist"
grep -q "exit status 3" "$slurm_log" || fail "$slurm_log does not show the job's exit status 3"
grep -q "logs/bad.log" "$FAILDIR/run.out" || fail "the error report does not name the rule log logs/bad.log"
say "failed job reported (exit $rc) with its SLURM log $slurm_log and rule log logs/bad.log"
say "OK"
