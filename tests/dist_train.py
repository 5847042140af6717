"""``segbench train`` as one process of a data-parallel run, for tests/test_distributed.py (not a test module).

Writes one line per file the process writes (``<function> <file name> [<iteration>]``) to
``$SEGBENCH_TEST_RECORD/rank<RANK>.txt``; with ``SEGBENCH_TEST_STOP=<rank>:<iteration>`` that process sees a
stop request after that iteration, as if it alone had received SIGTERM. With ``SEGBENCH_TEST_EQUAL_PASSES=1``
the run takes its batch norm for synchronised (as SyncBatchNorm on GPUs, which the CPU cannot run), so that
processes equalise their forward passes, and each empty pass is recorded as ``empty_pass``. Exits with the
CLI's exit code.
"""

import os
import sys
from pathlib import Path

import segbench.training.train as train_module
from segbench import cli
from segbench.training import checkpoint, distributed


class StopAt:
    """``PreemptionGuard.requested`` (polled once per iteration) that turns True at poll ``at``."""

    def __init__(self, at):
        self.at, self.polls = at, 0

    def __get__(self, guard, owner=None):
        self.polls += 1
        return self.polls >= self.at


def _recording(name, function, record):
    def wrapper(path, *args, **kwargs):
        with open(record, "a") as f:
            f.write(" ".join([name, Path(path).name, *([str(kwargs["iteration"])] if "iteration" in kwargs else [])])
                    + "\n")
        return function(path, *args, **kwargs)

    return wrapper


def _take_batch_norm_for_synchronised(record):
    distributed.batch_norm_synced = lambda ctx, device: ctx.world_size > 1
    train_module._has_batch_norm = lambda model: True
    empty_pass = train_module._empty_pass

    def recorded(part):
        with open(record, "a") as f:
            f.write("empty_pass\n")
        return empty_pass(part)

    train_module._empty_pass = recorded


def main() -> int:
    rank = int(os.environ["RANK"])
    record = Path(os.environ["SEGBENCH_TEST_RECORD"]) / f"rank{rank}.txt"
    checkpoint.save_checkpoint = _recording("save_checkpoint", checkpoint.save_checkpoint, record)
    for name in ("save_model", "write_json", "write_log"):
        setattr(train_module, name, _recording(name, getattr(train_module, name), record))
    if os.environ.get("SEGBENCH_TEST_EQUAL_PASSES"):
        _take_batch_norm_for_synchronised(record)
    stop = os.environ.get("SEGBENCH_TEST_STOP")
    if stop and int(stop.split(":")[0]) == rank:
        checkpoint.PreemptionGuard.requested = StopAt(int(stop.split(":")[1]))
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
