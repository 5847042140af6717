"""One base class for the errors a user can fix; the CLI prints those as one line and lets bugs keep their traceback."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import segbench
from segbench.cli import main
from segbench.errors import ChecksumError, DivergenceError, MissingInputError, SegbenchError, StoreError
from segbench.training.checkpoint import Preempted


def _package_exceptions():
    for info in pkgutil.walk_packages(segbench.__path__, "segbench."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                yield cls


def test_every_exception_of_the_package_derives_from_the_base():
    found = {cls.__qualname__: cls for cls in _package_exceptions()}
    assert {"Preempted", "DatasetError", "NyudError", "SiftFlowError", "StoreError", "StatsError", "ChecksumError",
            "DownloadError", "ExtractError", "SubmissionError", "DivergenceError", "MissingInputError"} <= set(found)
    assert [name for name, cls in found.items() if not issubclass(cls, SegbenchError)] == []


def test_kinds_keep_the_builtin_they_refine():
    assert issubclass(MissingInputError, FileNotFoundError) and issubclass(DivergenceError, FloatingPointError)
    assert not issubclass(StoreError, RuntimeError) and not issubclass(ChecksumError, RuntimeError)


def test_cli_prints_a_user_error_as_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "segbench.cli", "preprocess-voc", "--voc2011", str(missing),
                           "--sbd", str(missing), "--out-dir", str(tmp_path / "out")], capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "ERROR DatasetError: split list" in lines[0] and str(missing / "train.txt") in lines[0]
    assert "check data paths" in lines[0]  # what to do
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bug", [KeyError("no_such_key"), RuntimeError("internal"), AttributeError("x"),
                                 PermissionError(13, "Permission denied")])
def test_cli_lets_a_bug_propagate_with_its_traceback(monkeypatch, tmp_path, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr("segbench.data.voc.preprocess_voc", broken)
    with pytest.raises(type(bug)):
        main(["preprocess-voc", "--voc2011", str(tmp_path), "--sbd", str(tmp_path), "--out-dir", str(tmp_path)])


@pytest.mark.parametrize("error, code", [(MissingInputError("x does not exist: run y"), 1),
                                         (ValueError("expected a, got b"), 1),
                                         (Preempted("stopped by a signal"), Preempted.exit_code)])
def test_cli_exit_codes_of_handled_errors(monkeypatch, tmp_path, caplog, error, code):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr("segbench.data.voc.preprocess_voc", failing)
    args = ["preprocess-voc", "--voc2011", str(tmp_path), "--sbd", str(tmp_path), "--out-dir", str(tmp_path)]
    assert main(args) == code
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(error) in errors[0].getMessage() and errors[0].exc_info is None
