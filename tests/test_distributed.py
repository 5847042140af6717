"""Data-parallel training (segbench.training.distributed): launcher variables, the launch command, and two CPU processes
over gloo on a tiny store, which must follow the single-process loss curve on the same total batch, leave
every file to process 0 and resume after a stop that only one process was asked for."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, write_mixed_store

from segbench.training import distributed
from segbench.training.checkpoint import Preempted
from segbench.training.train import train

WIDTH = 0.0625
ITERATIONS = 4
# the short recipe (mean loss over pixels) on batches of 4 images of two sizes; no dropout, whose masks
# come from a stream per process
FLAGS = ["--model", "fcn32s_vgg16", "--width", str(WIDTH), "--recipe", "short", "--batch-size", "4", "--dropout", "0",
         "--iterations", str(ITERATIONS), "--seed", "1", "--device", "cpu", "--threads", "1"]


def test_the_launcher_variables_give_rank_and_world_size():
    assert distributed.from_env({}) == distributed.Context(0, 1, 0)
    assert distributed.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == distributed.Context(3, 4, 1)
    slurm_step = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1", "SLURM_NTASKS": "2"}
    assert distributed.from_env(slurm_step) == distributed.Context(1, 2, 1)
    assert distributed.from_env({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}).world_size == 1  # a batch script
    assert distributed.from_env({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}).main
    with pytest.raises(ValueError, match="must all be integers"):
        distributed.from_env({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match=r"rank 2 is outside \[0, 2\)"):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_launch_command_and_processes_per_run():
    assert distributed.launch_command(1) == "segbench train"
    assert distributed.launch_command(4) == "torchrun --standalone --nproc-per-node 4 -m segbench.cli train"
    with pytest.raises(ValueError, match="processes must be an integer >= 1, got 0"):
        distributed.launch_command(0)
    assert [distributed.processes_for(4, images) for images in (1, 2, 4, 20)] == [1, 2, 4, 4]
    with pytest.raises(ValueError, match="processes=0, images_per_iter=3"):
        distributed.processes_for(0, 3)


def test_process_seeds_and_single_process_loss_weights():
    assert distributed.rank_seed(7, 0) == 7
    assert len({distributed.rank_seed(7, r) for r in range(4)}) == 4
    weights = distributed.loss_weights([((48, 48), 3.0), ((48, 64), 1.0)], [((48, 48), 3), ((48, 64), 1)], 4,
                                       distributed.Context(), torch.device("cpu"))
    assert weights == [0.75, 0.25]  # one process: each size's share of the batch's images


def test_more_processes_than_images_per_iteration_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="2 processes need at least one image each per iteration, but the batch has 1"):
        train(train_store=tmp_path / "unused.h5", out_dir=tmp_path / "run", model_name="fcn32s_vgg16", width=WIDTH,
              recipe="heavy", iterations=1, device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra):
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def _two_processes(args, record, stop=None, **env):
    """``tests/dist_train.py args`` as ranks 0 and 1 of one run (the variables torchrun would set); exit codes."""
    record.mkdir()
    common = _env(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                  SEGBENCH_TEST_RECORD=str(record), **({"SEGBENCH_TEST_STOP": stop} if stop else {}), **env)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "dist_train.py"), *args],
                              env={**common, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    return [p.returncode for p in procs], outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny store, the single-process run, and the same run in two processes started by the train rule's
    command (torchrun)."""
    root = tmp_path_factory.mktemp("dist")
    store = write_mixed_store(root / "train.h5")
    single = train(train_store=store, out_dir=root / "single", model_name="fcn32s_vgg16", width=WIDTH,
                   recipe="short", batch_size=4, dropout=0.0, iterations=ITERATIONS, checkpoint_every=2, seed=1,
                   device="cpu", threads=1, progress=False)
    launch = distributed.launch_command(2).replace("torchrun", f"{sys.executable} -m torch.distributed.run", 1)
    result = subprocess.run([*launch.split(), "--train-store", str(store), "--out-dir", str(root / "two"), *FLAGS,
                             "--checkpoint-every", "2"], env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return store, single, root / "two" / "model.pt"


def _rows(run_dir):
    return [line.split(",") for line in (run_dir / "log.csv").read_text().splitlines()[1:]]


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_two_processes_follow_the_single_process_run_on_the_same_total_batch(runs):
    _, single, two = runs
    one_rows, two_rows = _rows(single.parent), _rows(two.parent)
    assert [r[:2] for r in two_rows] == [r[:2] for r in one_rows] == [[str(i), str(4 * i)] for i in range(1, 5)]
    assert len({r[2] for r in one_rows}) > 1  # the loss moves: the steps change the net
    for a, b in zip(one_rows, two_rows):  # the log keeps 6 significant digits
        assert float(b[2]) == pytest.approx(float(a[2]), rel=2e-5)
    a, b = _weights(single), _weights(two)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    meta = torch.load(two, weights_only=True)["meta"]
    assert (meta["processes"], meta["images_per_iter"], meta["batch_size"]) == (2, 4, 4)


def test_process_0_alone_writes_and_a_stop_asked_of_process_1_is_resumed(runs, tmp_path):
    store, _, two = runs
    args = ["train", "--train-store", str(store), "--out-dir", str(tmp_path / "run"), *FLAGS]
    codes, out = _two_processes([*args, "--checkpoint-every", "0"], tmp_path / "stopped", stop="1:2")
    assert codes == [Preempted.exit_code] * 2, out  # both processes stop after the same iteration
    record = tmp_path / "stopped"
    assert not (record / "rank1.txt").exists()
    assert (record / "rank0.txt").read_text().splitlines() == ["save_checkpoint checkpoint.pt 2", "write_log log.csv"]
    assert not (tmp_path / "run" / "model.pt").exists()

    codes, out = _two_processes([*args, "--checkpoint-every", "2"], tmp_path / "resumed")
    assert codes == [0, 0], out
    record = tmp_path / "resumed"
    assert not (record / "rank1.txt").exists()
    assert (record / "rank0.txt").read_text().splitlines() == [
        "save_checkpoint checkpoint.pt 4", "write_log log.csv", "write_log log.csv", "save_model model.pt",
        "write_json run.json"]
    resumed, whole = _weights(tmp_path / "run" / "model.pt"), _weights(two)
    assert all(torch.equal(resumed[key], whole[key]) for key in whole)
    # the log of the stopped part came back from the checkpoint: one row per iteration, the uninterrupted losses
    assert [r[:3] for r in _rows(tmp_path / "run")] == [r[:3] for r in _rows(two.parent)]


def test_processes_with_fewer_forward_passes_add_empty_ones_when_batch_norm_is_synchronised(runs, tmp_path):
    """SyncBatchNorm (GPUs) makes each forward and backward pass a collective call, so every process must make as
    many. Taken as synchronised here on the CPU (SyncBatchNorm itself needs CUDA) for a successor without batch
    norm (Dilation's front end, which trains batch norm on batch statistics had it any): 5 images in passes of 1
    are 3 passes in process 0 and 2 in process 1, which adds an empty one each iteration; the weights are the
    single process's on the same batch."""
    store = runs[0]
    flags = dict(zip(FLAGS[::2], FLAGS[1::2]), **{"--model": "dilation8_vgg16", "--batch-size": "5"})
    single = train(train_store=store, out_dir=tmp_path / "single", model_name="dilation8_vgg16", width=WIDTH,
                   recipe="short", batch_size=5, dropout=0.0, iterations=ITERATIONS, checkpoint_every=0, seed=1,
                   device="cpu", threads=1, progress=False)
    five = [item for pair in flags.items() for item in pair]
    args = ["train", "--train-store", str(store), "--out-dir", str(tmp_path / "two"), *five, "--micro-batch", "1",
            "--checkpoint-every", "0"]
    codes, out = _two_processes(args, tmp_path / "record", SEGBENCH_TEST_EQUAL_PASSES="1")
    assert codes == [0, 0], out
    assert (tmp_path / "record" / "rank1.txt").read_text().splitlines() == ["empty_pass"] * ITERATIONS
    assert "empty_pass" not in (tmp_path / "record" / "rank0.txt").read_text()
    a, b = _weights(single), _weights(tmp_path / "two" / "model.pt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    assert torch.load(tmp_path / "two" / "model.pt", weights_only=True)["meta"]["sync_batch_norm"]


def test_a_process_that_would_get_fewer_images_than_a_pooling_batch_norm_needs_is_refused(tmp_path, monkeypatch):
    """Two CPU processes (gloo, no SyncBatchNorm) each normalise over their own images: PSPNet's 1 x 1 pooling
    bin needs 2 in each, so a batch of 2 is refused before anything is loaded, naming the processes that fit."""
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"pspnet_resnet50's batch norm needs at least 2 images in each process, "
                                         r"which normalises over its own images \(2 processes on the cpu: "
                                         r"SyncBatchNorm needs GPUs\), but 2 images give some process 1: use at "
                                         r"most 1 processes"):
        train(train_store=tmp_path / "unused.h5", out_dir=tmp_path / "run", model_name="pspnet_resnet50", width=WIDTH,
              recipe="short", batch_size=2, iterations=1, device="cpu")


def test_two_processes_of_two_images_train_a_pooling_batch_norm_net(tmp_path):
    """The same net with 2 images in each process trains: each process's pooling bin normalises over its 2 (one
    image size, so one forward pass each)."""
    store = write_mixed_store(tmp_path / "train.h5", sizes=((48, 48),), n=4)
    args = ["train", "--train-store", str(store), "--out-dir", str(tmp_path / "run"), "--model", "pspnet_resnet50",
            "--width", str(WIDTH), "--recipe", "short", "--batch-size", "4", "--iterations", "1", "--seed", "1",
            "--checkpoint-every", "0", "--device", "cpu", "--threads", "1"]
    codes, out = _two_processes(args, tmp_path / "record")
    assert codes == [0, 0], out
    meta = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["meta"]
    assert (meta["processes"], meta["batch_norm"], meta["sync_batch_norm"]) == (2, "batch", False)
