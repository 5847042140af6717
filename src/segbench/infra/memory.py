"""Peak memory of a job: the last line of every successful ``segbench`` command's log (what the rehearsal's
per-rule memory table reads, ``benchmarks/rehearsal_memory.py``; SLURM's own accounting needs slurmdbd). A
command stopped by an error ends with the error instead."""

from __future__ import annotations

import re
import resource
import sys

PATTERN = re.compile(r"peak memory: (\d+) MB \(largest child process (\d+) MB\)")


def peak_rss_mb() -> tuple[int, int]:
    """Peak resident memory (MB) of this process and of its largest finished child process (data-loading and
    HHA workers; 0 without children). Linux reports kilobytes, macOS bytes."""
    unit = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * unit
    return round(own / 2**20), round(child / 2**20)


def peak_line() -> str:
    """``peak memory: <n> MB (largest child process <m> MB)``, as :data:`PATTERN` reads it back."""
    return "peak memory: {} MB (largest child process {} MB)".format(*peak_rss_mb())
