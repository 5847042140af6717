"""Progress of long work: a live bar on a terminal, plain lines in a log file.

Every rule sends its job's output to a log file, which is not a terminal: a bar redrawn with carriage returns
leaves hundreds of states on one line there. ``progress_bar`` gives tqdm's bar when stderr is a terminal and
otherwise a ``LogProgress``, which prints one plain line at most every ``every_s`` seconds, and the last one.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, TextIO

EVERY_S = 10.0


def progress_bar(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None, initial: int = 0,
             unit: str = "it", unit_scale: bool = False, disable: bool | None = False, every_s: float = EVERY_S,
             file: TextIO | None = None):
    """A progress display over ``iterable`` (or updated by hand with ``update``), as tqdm's arguments.

    ``disable`` True shows nothing; False or None shows a tqdm bar on a terminal and plain lines elsewhere.
    """
    file = file or sys.stderr
    if not disable and _is_terminal(file):
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit, unit_scale=unit_scale, file=file)
    return LogProgress(iterable, desc=desc, total=total, initial=initial, unit=unit, unit_scale=unit_scale,
                       disable=bool(disable), every_s=every_s, file=file)


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """tqdm's interface as used here (iteration, ``update``, ``set_postfix``, ``close``, a context manager),
    writing ``desc: n/total (pct) rate, postfix`` lines with no carriage return."""

    def __init__(self, iterable=None, *, desc="", total=None, initial=0, unit="it", unit_scale=False,
                 disable=False, every_s=EVERY_S, file=None):
        self.iterable = iterable
        self.desc, self.unit, self.unit_scale = desc, unit, unit_scale
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n = self.initial = initial
        self.disable, self.every_s, self.file = disable, every_s, file or sys.stderr
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._write(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._write(time.monotonic())

    def line(self, now: float) -> str:
        done = self._amount(self.n)
        count = f"{done}/{self._amount(self.total)}" if self.total else done
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        elapsed = now - self.start
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {count}{pct}", f"{elapsed:.0f} s", f"{self._amount(rate)} {self.unit}/s"]
        return ", ".join(parts + ([self.postfix] if self.postfix else []))

    def _amount(self, value) -> str:
        if not self.unit_scale:
            return f"{value:.3g}" if isinstance(value, float) else str(value)
        for prefix in ("", "k", "M", "G"):
            if abs(value) < 1000:
                return f"{value:.1f}{prefix}"
            value /= 1000
        return f"{value:.1f}T"

    def _write(self, now: float) -> None:
        if not self.disable:
            print(self.line(now), file=self.file, flush=True)
