"""Resumable training: atomic checkpoints with every RNG state, and a guard that turns SIGTERM into a clean stop.

Clusters kill jobs: time limits and preemption send SIGTERM (then SIGKILL after a grace period), node
failures kill without warning. A training loop that saves with ``save_checkpoint`` every few iterations,
resumes with ``load_checkpoint`` and polls ``PreemptionGuard.requested`` once per iteration ends, after any
number of interruptions, with the weights of an uninterrupted run (bit-identical on the CPU).

A stop on request raises ``Preempted`` after the checkpoint is written; the CLI turns it into exit code 75
(``EX_TEMPFAIL``, "try again later"): non-zero, so Snakemake's ``--retries`` or a SLURM requeue runs the job
again, and distinct from a crash (1) or a kill (137/143) in the rule log. Under the SLURM executor the job
itself then ends FAILED with exit code 1 (the batch step is a Snakemake process).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from segbench.errors import Preempted  # noqa: F401  (part of this module: the training loop raises it)
from segbench.infra.atomic import replacing

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "segbench-checkpoint-1"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def rng_states() -> dict:
    """The global RNG states of python, numpy and torch (CPU, and every CUDA device when present)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": np_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict) -> None:
    """Restore what ``rng_states`` returned. CUDA states are restored only when the device count matches."""
    random.setstate(states["python"])
    np_state = states["numpy"]
    np.random.set_state({**np_state, "state": {"key": np.asarray(np_state["state"]["key"], dtype=np.uint32),
                                               "pos": np_state["state"]["pos"]}})
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(states["cuda"]):
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    iteration: int, extra: dict | None = None, run_key: str | None = None) -> Path:
    """Write model and optimizer state, the global RNG states and ``iteration`` (iterations done) to ``path``.

    The file is written beside ``path``, fsynced, then renamed over it (``segbench.infra.atomic.replacing`` with
    ``durable=True``): a crash at any moment leaves either the previous checkpoint or the new one, never a
    truncated file. ``extra`` holds the loop's own state (private generators, log rows); it must be plain
    Python values and tensors (``torch.load`` reads it back with ``weights_only=True``). ``run_key`` names the
    settings of the run, so that a rerun with other settings does not resume it (see :func:`load_checkpoint`).
    Returns ``path``.
    """
    path = Path(path)
    record = {
        "format": FORMAT,
        "iteration": int(iteration),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_states(),
        "extra": extra or {},
        "run_key": run_key,
    }
    with replacing(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(record, f)
    return path


def load_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    run_key: str | None = None) -> tuple[int, dict] | None:
    """Restore ``model``, ``optimizer`` (unless None) and the global RNG states from ``path``.

    Tensors are loaded to the CPU and copied onto the devices ``model`` and ``optimizer`` already use.
    Returns ``(iteration, extra)``: the loop continues with iteration ``iteration`` (0-based). With
    ``run_key``, a checkpoint saved under another key restores nothing and returns None.
    """
    path = Path(path)
    record = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a segbench checkpoint (format {record.get('format')!r}, expected "
                         f"{FORMAT!r}); delete it to start training from scratch")
    if run_key is not None and record.get("run_key") != run_key:
        return None
    model.load_state_dict(record["model"])
    if optimizer is not None:
        optimizer.load_state_dict(record["optimizer"])
    set_rng_states(record["rng"])
    return record["iteration"], record["extra"]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume ``run_dir`` from, or None. Temporary files of interrupted saves never count."""
    path = Path(run_dir) / CHECKPOINT_NAME
    return path if path.is_file() else None


class CheckpointSchedule:
    """When the loop writes a checkpoint: every ``every`` iterations (0: never by count), and once ``minutes``
    of wall time (``clock``, in seconds) have passed since the run started or the last checkpoint was written
    (None: never by time); whichever comes first. On a GPU, 1,000 iterations are minutes apart and a
    checkpoint of a full-width VGG16 with its optimizer state is about 1 GB written and fsynced: the wall-time
    interval bounds the work a kill can lose without writing one every few seconds.

    The loop asks ``time_due()`` once per iteration (with several processes it sums the answers, so that all
    save together), ``due(iteration, time_due)`` whether to save, and calls ``saved()`` after writing one.
    """

    def __init__(self, every: int, minutes: float | None = None, *, clock: Callable[[], float] = time.monotonic):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0 (0: only by time and on a signal), got "
                             f"{every!r}")
        if minutes is not None and not minutes > 0:
            raise ValueError(f"checkpoint_minutes must be > 0 (or None: only every checkpoint_every iterations), got "
                             f"{minutes!r}")
        self.every, self.clock = every, clock
        self.seconds = None if minutes is None else 60.0 * minutes
        self.last = clock()

    def time_due(self) -> bool:
        """Whether ``minutes`` have passed since the start or the last checkpoint."""
        return self.seconds is not None and self.clock() - self.last >= self.seconds

    def due(self, iteration: int, time_due: bool) -> bool:
        """Whether to save after ``iteration`` iterations done, given what ``time_due`` said."""
        return time_due or (self.every > 0 and iteration % self.every == 0)

    def saved(self) -> None:
        """A checkpoint was written now: the wall-time interval starts again."""
        self.last = self.clock()


class PreemptionGuard:
    """Within ``with PreemptionGuard() as guard:``, SIGTERM, SIGINT and SIGUSR1 only set ``guard.requested``.

    The loop polls ``guard.requested`` after each iteration, saves a checkpoint and raises ``Preempted``.
    A second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once. Handlers can only be installed from the
    main thread; the previous handlers come back on exit.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> PreemptionGuard:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
