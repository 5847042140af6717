"""Peak memory per rule of a finished workflow run, beside each rule's ``mem_mb`` request.

Reads the run's Snakemake log (``.snakemake/log/<time>.snakemake.log``: every job's rule, log files and
resources) and, in each job's rule log, the peak-memory line that every successful ``segbench`` command writes last
(``segbench.infra.memory``). SLURM's own accounting (sacct MaxRSS) needs slurmdbd, which small clusters and CI
do not run; this works with or without it, and also for the local rules.

    python benchmarks/rehearsal_memory.py [SNAKEMAKE_LOG] [--json OUT]

Without a log it takes the newest one under .snakemake/log/. Prints a Markdown table (docs/cluster.md,
"The rehearsal"): per rule the jobs, the largest peak RSS of a job's main process, the largest child process
(loader or HHA workers; they run beside the main process, so a job may need up to main + workers x child), the
``mem_mb`` each job asked for, and the request over the peak.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from segbench.infra.memory import PATTERN

JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.M)


def jobs(snakemake_log: Path) -> list[dict]:
    """Every job of the log: its rule, its first log file and its requested mem_mb (None where not given)."""
    found = []
    for rule, body in JOB.findall(snakemake_log.read_text()):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, flags=re.M))
        if "log" not in fields or "jobid" not in fields:
            continue
        mem = re.search(r"\bmem_mb=(\d+)", fields.get("resources", ""))
        found.append({"rule": rule, "jobid": int(fields["jobid"]), "log": fields["log"].split(", ")[0],
                      "mem_mb": int(mem.group(1)) if mem else None})
    unique = {job["jobid"]: job for job in found}  # a retried job is listed again: its last attempt
    return list(unique.values())


def per_rule(snakemake_log: Path, root: Path) -> dict[str, dict]:
    """rule -> jobs, jobs with a peak line, largest main and child peak (MB), largest mem_mb request."""
    table: dict[str, dict] = {}
    for job in jobs(snakemake_log):
        row = table.setdefault(job["rule"], {"jobs": 0, "measured": 0, "peak_mb": 0, "child_mb": 0, "mem_mb": None})
        row["jobs"] += 1
        if job["mem_mb"] is not None:
            row["mem_mb"] = max(row["mem_mb"] or 0, job["mem_mb"])
        path = root / job["log"]
        peaks = PATTERN.findall(path.read_text(errors="replace")) if path.is_file() else []
        if peaks:
            own, child = (int(v) for v in peaks[-1])
            row["measured"] += 1
            row["peak_mb"], row["child_mb"] = max(row["peak_mb"], own), max(row["child_mb"], child)
    return table


def markdown(table: dict[str, dict]) -> str:
    lines = ["| rule | jobs | peak RSS, main (MB) | largest child (MB) | mem_mb asked | asked / peak |",
             "|---|---:|---:|---:|---:|---:|"]
    for rule, row in sorted(table.items(), key=lambda kv: -kv[1]["peak_mb"]):
        if not row["measured"]:
            lines.append(f"| {rule} | {row['jobs']} | (no segbench log) | | {row['mem_mb'] or ''} | |")
            continue
        ratio = f"{row['mem_mb'] / row['peak_mb']:.1f}" if row["mem_mb"] and row["peak_mb"] else ""
        jobs_text = str(row["jobs"]) + ("" if row["measured"] == row["jobs"] else f" ({row['measured']} measured)")
        asked = f"{row['mem_mb']:,}" if row["mem_mb"] else ""
        lines.append(f"| {rule} | {jobs_text} | {row['peak_mb']:,} | {row['child_mb']:,} | {asked} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, nargs="?", help="a Snakemake log (default: the newest in .snakemake/log)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the run's working directory (log paths)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    a = parser.parse_args(argv)
    log = a.log or max((a.root / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime,
                       default=None)
    if log is None or not log.is_file():
        print(f"no Snakemake log at {log or a.root / '.snakemake/log'}: run the workflow first", file=sys.stderr)
        return 1
    table = per_rule(log, a.root)
    print(f"from {log}\n\n{markdown(table)}")
    if a.json:
        a.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
