"""Compare the tables of two results folders value for value, timing columns aside.

    python tests/tables_diff.py RESULTS_A RESULTS_B

Every ``tables/*.csv`` must exist in both with the same rows and columns, and every cell must be equal, except
the columns that hold measured times (forward and step times, wall and time-to-target seconds), which differ
between any two runs. Exit 0 and one line per table when they agree; else exit 1 naming each difference.
Used by CI (a run in a folder whose name needs quoting against one through SLURM) and the rerun tests.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

TIMING = re.compile(r"(^|_)(ms|s|seconds|time|wall)(_|$)|forward|time_to")


def timing_column(name: str) -> bool:
    """Whether a CSV column holds a measured time (or its spread), which no rerun reproduces."""
    return bool(TIMING.search(name))


def _read(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def differences(a: str | Path, b: str | Path) -> tuple[list[str], list[str]]:
    """(tables compared, differences) between ``a/tables`` and ``b/tables``."""
    a, b = Path(a) / "tables", Path(b) / "tables"
    names_a = sorted(p.name for p in a.glob("*.csv"))
    names_b = sorted(p.name for p in b.glob("*.csv"))
    problems = [] if names_a == names_b else [f"tables differ: {names_a} against {names_b}"]
    if not names_a:
        problems.append(f"no tables in {a}")
    for name in sorted(set(names_a) & set(names_b)):
        head_a, rows_a = _read(a / name)
        head_b, rows_b = _read(b / name)
        if head_a != head_b or len(rows_a) != len(rows_b):
            problems.append(f"{name}: columns or row count differ ({head_a}, {len(rows_a)} rows against {head_b}, "
                            f"{len(rows_b)} rows)")
            continue
        for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
            for column, va, vb in zip(head_a, ra, rb):
                if va != vb and not timing_column(column):
                    problems.append(f"{name} row {i + 1} ({ra[0]}) column {column}: {va!r} against {vb!r}")
    return names_a, problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    names, problems = differences(*argv)
    for problem in problems:
        print(f"DIFFERS: {problem}", file=sys.stderr)
    if not problems:
        print(f"{len(names)} tables identical but for timing columns: {', '.join(names)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
