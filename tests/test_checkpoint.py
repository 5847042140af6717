"""Checkpoints: SIGKILL mid-training then rerun ends bit-identical, SIGTERM saves and exits 75, saves are atomic.

The training loop below stands in for the real one: SGD with momentum, dropout, and batches drawn from the
python, numpy and torch global RNGs. Run as a script it trains in a subprocess that the tests signal; with
--lockstep it prints each finished iteration and waits for a line on stdin before going on, so the test
decides exactly where a signal lands, without sleeps.
"""

import argparse
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segbench.training.checkpoint import (
    CHECKPOINT_NAME,
    Preempted,
    PreemptionGuard,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

ITERATIONS, EVERY = 20, 5


def train_loop(run_dir: Path, *, iterations: int, every: int, after_iteration=lambda it: None) -> torch.nn.Module:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x_all, y_all = torch.randn(64, 8), torch.randint(0, 3, (64,))
    start = 0
    if (ckpt := latest_checkpoint(run_dir)) is not None:
        start, extra = load_checkpoint(ckpt, model=model, optimizer=optimizer)
        print(f"resumed {start} {extra['note']}", flush=True)
    with PreemptionGuard() as guard:
        for it in range(start, iterations):
            idx = np.random.randint(0, len(x_all), size=8)
            x = x_all[idx] + random.gauss(0.0, 0.1) + 0.01 * torch.randn(8, 8)
            loss = torch.nn.functional.cross_entropy(model(x), y_all[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            after_iteration(it + 1)
            if guard.requested:
                save_checkpoint(run_dir / CHECKPOINT_NAME, model=model, optimizer=optimizer, iteration=it + 1,
                                extra={"note": "signal"})
                raise Preempted(f"stopped at iteration {it + 1}")
            if (it + 1) % every == 0:
                save_checkpoint(run_dir / CHECKPOINT_NAME, model=model, optimizer=optimizer, iteration=it + 1,
                                extra={"note": "periodic"})
    return model


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("--lockstep", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)

    def after_iteration(it):
        if a.lockstep:
            print(f"iteration {it}", flush=True)
            sys.stdin.readline()

    try:
        model = train_loop(a.run_dir, iterations=ITERATIONS, every=EVERY, after_iteration=after_iteration)
    except Preempted:
        return Preempted.exit_code
    torch.save(model.state_dict(), a.run_dir / "final.pt")
    print("done", flush=True)
    return 0


def _start(run_dir, *, lockstep=False):
    args = [sys.executable, __file__, str(run_dir)] + (["--lockstep"] if lockstep else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _run_until(proc, iteration):
    """Let a lockstep child run until it reports ``iteration`` (it then waits on stdin); returns its lines."""
    lines = []
    for line in proc.stdout:  # bounded: the child stops printing once it has finished or died
        lines.append(line.strip())
        if line.strip() == f"iteration {iteration}":
            return lines
        proc.stdin.write("go\n")
        proc.stdin.flush()
    raise AssertionError(f"child ended before iteration {iteration}: {lines}")


def _finish(run_dir, *, lockstep=False):
    proc = _start(run_dir, lockstep=lockstep)
    out, _ = proc.communicate("go\n" * ITERATIONS, timeout=300)
    assert proc.returncode == 0, out
    return out.splitlines(), torch.load(run_dir / "final.pt", weights_only=True)


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    lines, weights = _finish(run_dir)
    assert lines == ["done"]
    return weights


def test_rerun_after_sigkill_resumes_and_ends_bit_identical(tmp_path, uninterrupted):
    proc = _start(tmp_path, lockstep=True)
    _run_until(proc, EVERY + 2)
    assert load_checkpoint(latest_checkpoint(tmp_path), model=_any_model(), optimizer=None)[0] == EVERY
    proc.stdin.write("go\n")  # let it compute iteration EVERY + 3, and kill it somewhere in there
    proc.stdin.flush()
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stdout.close()
    proc.stdin.close()
    lines, weights = _finish(tmp_path)
    assert lines[0] == f"resumed {EVERY} periodic"
    _assert_identical(weights, uninterrupted)


def test_sigterm_writes_a_checkpoint_and_exits_75_then_rerun_is_bit_identical(tmp_path, uninterrupted):
    proc = _start(tmp_path, lockstep=True)
    _run_until(proc, EVERY + 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == Preempted.exit_code == 75, out
    iteration, extra = load_checkpoint(latest_checkpoint(tmp_path), model=_any_model(), optimizer=None)
    assert (iteration, extra) == (EVERY + 2, {"note": "signal"})
    lines, weights = _finish(tmp_path)
    assert lines[0] == f"resumed {EVERY + 2} signal"
    _assert_identical(weights, uninterrupted)


def test_failed_save_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    model = _any_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model=model, optimizer=optimizer, iteration=3)

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model=model, optimizer=optimizer, iteration=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert load_checkpoint(latest_checkpoint(tmp_path), model=model, optimizer=optimizer)[0] == 3


def test_kill_between_write_and_rename_leaves_the_previous_checkpoint_as_latest(tmp_path):
    # The child writes checkpoint 1, then dies by SIGKILL inside save 2 right before the rename.
    code = (
        "import os, signal, torch\n"
        "from segbench.training import checkpoint as c\n"
        "m = torch.nn.Linear(2, 2); o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        f"c.save_checkpoint({str(tmp_path / CHECKPOINT_NAME)!r}, model=m, optimizer=o, iteration=1)\n"
        "c.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"c.save_checkpoint({str(tmp_path / CHECKPOINT_NAME)!r}, model=m, optimizer=o, iteration=2)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != CHECKPOINT_NAME)
    assert leftovers == [f"{CHECKPOINT_NAME}.tmp"]
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert latest_checkpoint(tmp_path) == tmp_path / CHECKPOINT_NAME
    assert load_checkpoint(latest_checkpoint(tmp_path), model=model, optimizer=optimizer)[0] == 1
    save_checkpoint(tmp_path / CHECKPOINT_NAME, model=model, optimizer=optimizer, iteration=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # the next save clears it


def test_load_restores_every_global_rng(tmp_path):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    draws = lambda: (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()),
                     float(torch.rand(1)))
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model=model, optimizer=optimizer, iteration=0)
    expected = draws()
    draws()
    load_checkpoint(path, model=model, optimizer=optimizer)
    assert draws() == expected


def test_latest_checkpoint_is_none_for_a_fresh_run_dir(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_a_file_that_is_not_a_checkpoint_is_refused_naming_it(tmp_path):
    model = torch.nn.Linear(2, 2)
    torch.save({"state_dict": model.state_dict()}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match=f"{CHECKPOINT_NAME} is not a segbench checkpoint"):
        load_checkpoint(tmp_path / CHECKPOINT_NAME, model=model, optimizer=None)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_guard_turns_a_signal_into_a_flag_and_restores_the_handler(sig):
    before = signal.getsignal(sig)
    with PreemptionGuard() as guard:
        assert not guard.requested
        signal.raise_signal(sig)
        assert guard.requested and guard.received == sig
    assert signal.getsignal(sig) == before


def test_second_ctrl_c_interrupts_at_once():
    with PreemptionGuard() as guard, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        assert guard.requested
        signal.raise_signal(signal.SIGINT)


def _any_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3))


if __name__ == "__main__":
    sys.exit(main())


def test_a_checkpoint_of_another_run_restores_nothing(tmp_path):
    model, optimizer = _any_model(), None
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / CHECKPOINT_NAME, model=model, optimizer=sgd, iteration=5, run_key="lr=1e-7")
    other = _any_model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)  # differs from the saved model everywhere
    before = [p.detach().clone() for p in other.parameters()]
    assert load_checkpoint(path, model=other, optimizer=optimizer, run_key="lr=2e-7") is None
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))
    assert load_checkpoint(path, model=other, optimizer=optimizer, run_key="lr=1e-7")[0] == 5
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))
