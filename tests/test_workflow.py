"""The whole workflow at a tiny size, as a user runs it: `snakemake --cores N` from the repository root."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args, cwd=ROOT, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "results"
    args = ["--configfile", "config/config.yaml", "tests/tiny-config.yaml", "--config", f"results={out}",
            "--nolock"]
    _snakemake("--cores", "2", *args)
    return out, args


@pytest.mark.slow
def test_workflow_runs_end_to_end_and_writes_every_table(tiny_run):
    out, _ = tiny_run
    for name in ("table1", "table2", "fig5"):
        for ext in ("csv", "tex", "md"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    assert (out / "figures" / "fig5.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "tables" / "table2.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["FCN-32s-fixed", "FCN-32s", "FCN-16s", "FCN-8s"]
    assert (out / "logs" / "train" / "fcn8s.log").exists()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_run):
    _, args = tiny_run
    result = _snakemake("--cores", "2", "--dry-run", *args)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_lint_is_clean():
    result = _snakemake("--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("override, key", [
    ("train={'iterationz': 3}", "iterationz"),
    ("seed=abc", "seed"),
])
def test_bad_config_fails_naming_the_key(override, key):
    result = _snakemake("--dry-run", "--config", override, check=False)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr
