"""The README opens with exactly the two commands a new user copies, and CI runs the second one."""

import re

from conftest import ROOT


def _commands():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_the_run_and_test_commands():
    run, test = _commands()[:2]
    assert run.endswith("snakemake --cores all") and "pip install -e ." in run
    assert "pytest" in test and "\n" not in run + test


def test_ci_runs_the_readme_test_command():
    assert _commands()[1] in (ROOT / ".ci" / "run").read_text()
