"""The `slurm` profile against a real SLURM (.ci/slurm-up.sh starts one): failures, retries, preemption.

Each test runs a small workflow of its own through `--profile <repo>/slurm`, as a user would, and reads
what Snakemake reports. Skipped where no SLURM answers `sinfo`.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT


def _slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


pytestmark = [pytest.mark.slurm, pytest.mark.skipif(not _slurm_answers(), reason="no SLURM cluster answers sinfo")]


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    # jobs inherit the environment (sbatch --export=ALL): put this interpreter's snakemake first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "--profile", str(ROOT / "slurm"),
                           *args], cwd=workdir, capture_output=True, text=True, env=env)


def test_a_failed_job_is_reported_with_its_logs_and_independent_jobs_still_run(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
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
    """))
    result = _snakemake(tmp_path, "--retries", "0")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert (tmp_path / "ok.txt").read_text() == "ok\n"  # keep-going
    error = out[out.index("Error in rule bad:"):]
    assert "SLURM status is: 'FAILED'" in error
    slurm_log = re.search(r"log: logs/bad\.log, (\S+/\.snakemake/slurm_logs/rule_bad/\d+\.log)", error)
    assert slurm_log, error
    assert "returned non-zero exit status 3" in Path(slurm_log.group(1)).read_text()
    assert (tmp_path / "logs" / "bad.log").read_text() == "bad: failing on purpose\n"


def test_the_profile_retries_a_failed_job(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
        rule flaky:
            output: "flaky.txt"
            resources: mem_mb=200, runtime=2
            shell: "if [ -e attempt1 ]; then echo done > {output}; else touch attempt1; exit 1; fi"
    """))
    result = _snakemake(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert len(re.findall(r"has been submitted with SLURM jobid (\d+)", out)) == 2


LOOP = """
import subprocess, sys, os
from pathlib import Path
import torch
from segbench.training.checkpoint import Preempted, PreemptionGuard, latest_checkpoint, load_checkpoint, save_checkpoint

run_dir, total = Path(sys.argv[1]), int(sys.argv[2])
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
start = 0
if (ckpt := latest_checkpoint(run_dir)) is not None:
    start, _ = load_checkpoint(ckpt, model=model, optimizer=optimizer)
history = open(run_dir / "history.txt", "a")  # Snakemake empties the rule log before a retry
print(f"start {start}", file=history, flush=True)
try:
    with PreemptionGuard() as guard:
        for it in range(start, total):
            if it == 3 and start == 0:  # stand-in for preemption: SLURM signals every step of this job
                subprocess.run(["scancel", "--signal=TERM", os.environ["SLURM_JOB_ID"]], check=True)
            model(torch.randn(2, 4)).sum().backward()
            optimizer.step()
            if guard.requested:
                save_checkpoint(run_dir / "checkpoint.pt", model=model, optimizer=optimizer, iteration=it + 1)
                print(f"stopped at {it + 1} by signal {guard.received}", file=history, flush=True)
                raise Preempted()
except Preempted:
    sys.exit(Preempted.exit_code)
print("finished", file=history, flush=True)
(run_dir / "model.txt").write_text(f"{start}\\n")
"""


def test_sigterm_from_slurm_checkpoints_exits_75_and_the_retry_resumes(tmp_path):
    # A rule named train gets the profile's `--signal=TERM@300`: that signal comes 4 to 5 minutes into a
    # 10-minute job, after the loop's own scancel and its retry (seconds each). With 5 minutes it came at the
    # start, before Python ran (train.time_limit's minimum of 10 is for that).
    (tmp_path / "loop.py").write_text(LOOP)
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        rule train:
            output: "run/model.txt"
            log: "train.log"
            resources: mem_mb=500, runtime=10
            shell: "mkdir -p run; {sys.executable} loop.py run 300000 >> {{log}} 2>&1"
    """))
    result = _snakemake(tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert len(re.findall(r"has been submitted with SLURM jobid (\d+)", out)) == 2  # one retry
    log = (tmp_path / "run" / "history.txt").read_text().splitlines()
    assert log[0] == "start 0" and log[1].startswith("stopped at ") and log[1].endswith(" by signal 15"), log
    stopped = int(log[1].split()[2])
    assert log[2:] == [f"start {stopped}", "finished"], log
    assert 3 < stopped < 300000
    assert (tmp_path / "run" / "model.txt").read_text() == f"{stopped}\n"
