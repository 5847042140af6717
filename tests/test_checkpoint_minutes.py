"""train.checkpoint_minutes: a checkpoint once that much wall time has passed, or every checkpoint_every
iterations, whichever comes first; on an injected clock, without sleeps."""

import functools
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, write_mixed_store

from segbench import cli
from segbench.training import checkpoint
from segbench.training.train import train


class Clock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_checkpoint_is_due_by_iteration_count_or_by_wall_time():
    clock = Clock(step=0.0)
    schedule = checkpoint.CheckpointSchedule(3, 1.0, clock=clock)
    due = []
    for iteration, now in enumerate([20, 65, 70, 110, 200, 250], start=1):
        clock.now = now
        if schedule.due(iteration, schedule.time_due()):
            due.append(iteration)
            schedule.saved()
    # 65 s: a minute since the start; 3 and 6 by count; 200 s: more than a minute since the save at 70 s
    assert due == [2, 3, 5, 6]
    assert not checkpoint.CheckpointSchedule(0, None, clock=clock).due(1000, False)  # only on a signal


def test_the_schedule_refuses_settings_that_say_what_was_wrong():
    with pytest.raises(ValueError, match=r"checkpoint_minutes must be > 0 .* got 0"):
        checkpoint.CheckpointSchedule(100, 0)
    with pytest.raises(ValueError, match=r"checkpoint_every must be an integer >= 0 .* got -1"):
        checkpoint.CheckpointSchedule(-1, None)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_mixed_store(tmp_path_factory.mktemp("minutes") / "train.h5")


@pytest.mark.parametrize("every,expected", [(0, [2, 4, 6]), (3, [2, 3, 5, 6])])
def test_training_checkpoints_by_wall_time_and_removes_the_checkpoint_at_the_end(store, tmp_path, monkeypatch, every,
                                                                                  expected):
    # each reading of the clock is 61 s later: once per iteration, and once after each checkpoint
    monkeypatch.setattr(checkpoint, "CheckpointSchedule",
                        functools.partial(checkpoint.CheckpointSchedule, clock=Clock(step=61.0)))
    saved = []
    save = checkpoint.save_checkpoint
    monkeypatch.setattr(checkpoint, "save_checkpoint",
                        lambda path, **kw: saved.append(kw["iteration"]) or save(path, **kw))
    train(train_store=store, out_dir=tmp_path / "run", model_name="fcn32s_vgg16", width=0.0625, recipe="heavy",
          lr=1e-7, iterations=6, checkpoint_every=every, checkpoint_minutes=2.0, seed=1, device="cpu", threads=1,
          progress=False)
    assert saved == expected
    assert not (tmp_path / "run" / checkpoint.CHECKPOINT_NAME).exists() and (tmp_path / "run" / "model.pt").exists()


def test_the_train_rule_passes_the_wall_time_interval_and_the_micro_batch(tmp_path):
    (tmp_path / "c.yaml").write_text("train: {checkpoint_minutes: 30, micro_batch: 20}\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--nolock", "-p",
                             "--configfile", "config/config.yaml", "tests/tiny-config.yaml", tmp_path / "c.yaml",
                             "--config", f"results={tmp_path}/r"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = re.findall(r"^rule train:\n.*?^Shell command: segbench ([^\n]*?) >", result.stdout, flags=re.M | re.S)
    assert commands
    for command in commands:
        args = cli.build_parser().parse_args(shlex.split(command))
        assert (args.checkpoint_minutes, args.micro_batch) == (30.0, 20), command
    defaults = cli.build_parser().parse_args(["train", "--train-store", "s.h5", "--out-dir", "o", "--model",
                                              "fcn32s_vgg16"])
    assert (defaults.checkpoint_minutes, defaults.micro_batch) == (None, None)
