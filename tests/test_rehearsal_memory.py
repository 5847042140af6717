"""benchmarks/rehearsal_memory.py: per-rule peak memory from a Snakemake log and the rule logs' peak lines."""

import sys

from conftest import ROOT

from segbench.infra.memory import PATTERN, peak_line

sys.path.insert(0, str(ROOT / "benchmarks"))
import rehearsal_memory as rm  # noqa: E402


def _job(rule, jobid, log, mem_mb=None, local=False):
    res = f"    resources: tmpdir=<TBD>, mem_mb={mem_mb}, runtime=10\n" if mem_mb else "    resources: tmpdir=<TBD>\n"
    return (f"[Sat Dec  5 12:46:09 2026]\n{'local' if local else ''}rule {rule}:\n    input: a\n    output: b\n"
            f"    log: {log}, .snakemake/slurm_logs/{jobid}.log\n    jobid: {jobid}\n    wildcards: x=1\n{res}"
            "Shell command: segbench x > log 2>&1\n")


def test_peak_line_reads_back():
    own, child = (int(v) for v in PATTERN.search(peak_line()).groups())
    assert own > 0 and child >= 0


def test_a_command_logs_its_peak_last_only_when_it_succeeds(monkeypatch, tmp_path, caplog):
    from segbench.cli import main

    calls = []
    monkeypatch.setattr("segbench.data.voc.preprocess_voc", lambda *a, **k: calls.append(a))
    argv = ["preprocess-voc", "--voc2011", str(tmp_path), "--sbd", str(tmp_path), "--out-dir", str(tmp_path)]
    with caplog.at_level("INFO", logger="segbench"):
        assert main(argv) == 0
    assert calls and PATTERN.fullmatch(caplog.records[-1].getMessage())
    caplog.clear()

    def refuse(*args, **kwargs):
        raise ValueError("bad input")

    monkeypatch.setattr("segbench.data.voc.preprocess_voc", refuse)
    with caplog.at_level("INFO", logger="segbench"):
        assert main(argv) == 1
    assert [r.getMessage() for r in caplog.records] == ["ValueError: bad input"]  # the error stays the last line


def test_per_rule_takes_the_largest_peak_and_request_and_counts_unmeasured_jobs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "t1.log").write_text("training...\npeak memory: 900 MB (largest child process 300 MB)\n")
    (logs / "t2.log").write_text("peak memory: 1200 MB (largest child process 100 MB)\n")
    (logs / "d.log").write_text("downloading\n")  # killed before its last line
    (logs / "r.log").write_text("peak memory: 60 MB (largest child process 0 MB)\n")
    text = (_job("train", 1, "logs/t1.log", 16000) + _job("train", 2, "logs/t2.log", 12000)
            + _job("download", 3, "logs/d.log", local=True) + _job("report", 4, "logs/r.log", local=True)
            + _job("train", 2, "logs/t2.log", 12000))  # a retry lists the job again
    smk = tmp_path / "run.snakemake.log"
    smk.write_text(text)
    table = rm.per_rule(smk, tmp_path)
    assert table["train"] == {"jobs": 2, "measured": 2, "peak_mb": 1200, "child_mb": 300, "mem_mb": 16000}
    assert table["download"] == {"jobs": 1, "measured": 0, "peak_mb": 0, "child_mb": 0, "mem_mb": None}
    md = rm.markdown(table).splitlines()
    assert md[2] == "| train | 2 | 1,200 | 300 | 16,000 | 13.3 |"
    assert md[3] == "| report | 1 | 60 | 0 |  |  |"  # a local rule asks for no memory
    assert md[4] == "| download | 1 | (no segbench log) | |  | |"


def test_main_says_when_there_is_no_log(tmp_path, capsys):
    assert rm.main(["--root", str(tmp_path)]) == 1
    assert "run the workflow first" in capsys.readouterr().err
