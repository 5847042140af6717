"""The training, pretraining and evaluation functions the rules call, on a tiny twin."""

import json
import os
import signal
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch

from segbench.data.synthetic.voc import write_twin
from segbench.data.voc import preprocess_voc
from segbench.errors import DivergenceError
from segbench.evaluation.evaluate import evaluate
from segbench.pretraining.standins import pretrain_classifier
from segbench.training.checkpoint import Preempted
from segbench.training.train import initialise, train
from segbench.weights import load_model

WIDTH = 0.0625


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_twin(root / "raw", image_size=48, n_sbd_train=8, n_sbd_val=1, n_voc_train=1, n_voc_val=4, n_overlap=1,
               progress=False)
    out = preprocess_voc(root / "raw/VOCdevkit/VOC2011", root / "raw/benchmark_RELEASE/dataset", root / "pre",
                         progress=False)
    classifier = pretrain_classifier(root / "vgg16.pt", width=WIDTH, crop_size=48, crop_iterations=2, iterations=1,
                                     batch_size=2, eval_images=4, threads=1, progress=False)
    return out["train"], out["val"], classifier


def _train(stores, out_dir, **kw):
    args = dict(train_store=stores[0], out_dir=out_dir, model_name="fcn32s_vgg16", width=WIDTH, init=stores[2],
                recipe="heavy", lr=1e-7, iterations=6, checkpoint_every=2, seed=3, device="cpu", threads=1,
                progress=False)
    args.update(kw)
    return train(**args)


def test_pretrained_classifier_is_transplanted(stores):
    record = torch.load(stores[2], weights_only=True)
    assert record["backbone"] == "vgg16" and 0.0 <= record["accuracy"] <= 1.0
    model, norm = initialise("fcn32s_vgg16", 21, width=WIDTH, init=stores[2])
    assert norm == "caffe"
    torch.testing.assert_close(model.conv1_1.weight, record["state_dict"]["features.0.weight"])
    torch.testing.assert_close(model.fc6.weight.flatten(1), record["state_dict"]["classifier.0.weight"])
    assert float(model.score_fr.weight.detach().abs().sum()) == 0.0


def test_staged_init_copies_the_coarser_net_and_zero_inits_the_new_skip(stores, tmp_path):
    coarse = _train(stores, tmp_path / "32s")
    fine, _ = initialise("fcn16s_vgg16", 21, width=WIDTH, init=coarse)
    coarse_model, _ = load_model(coarse)
    torch.testing.assert_close(fine.score_fr.weight, coarse_model.score_fr.weight)
    torch.testing.assert_close(fine.fc7.weight, coarse_model.fc7.weight)
    assert float(fine.score_pool4.weight.detach().abs().sum()) == 0.0


def test_fixed_mode_trains_only_the_score_layer(stores, tmp_path):
    before, _ = initialise("fcn32s_vgg16", 21, width=WIDTH, init=stores[2])
    after, _ = load_model(_train(stores, tmp_path / "fixed", mode="fixed"))
    for name, param in after.state_dict().items():
        same = torch.equal(param, before.state_dict()[name])
        assert same == (not name.startswith("score_fr")), name


def test_training_is_deterministic_and_logs_every_iteration(stores, tmp_path):
    a = torch.load(_train(stores, tmp_path / "a"), weights_only=True)["state_dict"]
    b = torch.load(_train(stores, tmp_path / "b"), weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert lines[0] == "iteration,images_seen,train_loss,wall_s,val_loss,val_mean_iu" and len(lines) == 7


def test_patch_sampling_draws_more_images_per_iteration(stores, tmp_path):
    _train(stores, tmp_path / "p", sample_p=0.25, iterations=2, val_store=stores[1], val_every=2)
    rows = [line.split(",") for line in (tmp_path / "p" / "log.csv").read_text().splitlines()[1:]]
    assert [int(r[1]) for r in rows] == [4, 8]
    assert rows[0][4] == "" and 0.0 <= float(rows[1][5]) <= 1.0  # validation on its row only


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_a_kill_or_a_stop_gives_bit_identical_weights(stores, tmp_path, sig):
    iterations = 40
    reference = torch.load(_train(stores, tmp_path / "ref", iterations=iterations), weights_only=True)["state_dict"]
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "segbench.cli", "train", "--train-store", str(stores[0]), "--out-dir", str(run),
           "--model", "fcn32s_vgg16", "--width", str(WIDTH), "--init", str(stores[2]), "--recipe", "heavy",
           "--lr", "1e-7", "--iterations", str(iterations), "--checkpoint-every", "2", "--seed", "3",
           "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not (run / "checkpoint.pt").exists():
            os.sched_yield()
    finally:
        proc.send_signal(sig)
        proc.wait()
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 75)
    assert (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    resumed = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert len((run / "log.csv").read_text().splitlines()) == iterations + 1
    assert _run_record(run)["start_iteration"] > 0 and not (run / "checkpoint.pt").exists()


def test_sigterm_writes_a_checkpoint_and_exits_with_tempfail(stores, tmp_path):
    run = tmp_path / "term"
    cmd = [sys.executable, "-m", "segbench.cli", "train", "--train-store", str(stores[0]), "--out-dir", str(run),
           "--model", "fcn32s_vgg16", "--width", str(WIDTH), "--init", str(stores[2]), "--lr", "1e-7",
           "--iterations", "100000", "--checkpoint-every", "1", "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (run / "checkpoint.pt").exists():
        os.sched_yield()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == Preempted.exit_code == 75, err
    assert "stopped by a signal" in err
    record = torch.load(run / "checkpoint.pt", weights_only=False)
    assert record["iteration"] >= 1 and not (run / "model.pt").exists()


def test_diverging_learning_rate_fails_with_a_clear_error(stores, tmp_path):
    with pytest.raises(DivergenceError, match="too high"):
        _train(stores, tmp_path / "nan", lr=1e3, iterations=20)


def test_evaluate_writes_metrics_and_checks_the_class_count(stores, tmp_path):
    weights = _train(stores, tmp_path / "e")
    result = evaluate(store_path=stores[1], model_path=weights, out_json=tmp_path / "val.json", device="cpu",
                      progress=False)
    hist = np.array(result["hist"])
    assert hist.shape == (21, 21) and hist.sum() == result["images"] * 48 * 48 - _void(stores[1])
    assert 0.0 <= result["mean_iu"] <= 1.0 and (tmp_path / "val.json").exists()


def _void(path):
    from segbench.data.store import Store

    s = Store(path)
    return sum(int((s.label(i) == 255).sum()) for i in range(len(s)))


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _run_record(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def test_a_finished_run_leaves_no_checkpoint_and_records_its_start_and_code(stores, tmp_path):
    from segbench.infra.identity import code_identity

    _train(stores, tmp_path / "run", iterations=4)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    record = _run_record(tmp_path / "run")
    assert record["start_iteration"] == 0 and record["code"] == code_identity()
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["meta"]["code"] == code_identity()


def test_a_rebuilt_starting_weights_file_at_the_same_path_retrains_from_zero(stores, tmp_path):
    init = tmp_path / "init.pt"
    init.write_bytes(stores[2].read_bytes())
    run = tmp_path / "run"
    _resumable(stores, run, init=init, iterations=6)
    record = torch.load(init, weights_only=True)
    record["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in record["state_dict"].items()}
    torch.save(record, init)  # other weights, same path
    rerun = _weights(_train(stores, run, init=init, iterations=6))
    assert _run_record(run)["start_iteration"] == 0
    fresh = _weights(_train(stores, tmp_path / "fresh", init=init, iterations=6))
    assert _same(rerun, fresh)
    old = _weights(_train(stores, tmp_path / "old", init=stores[2], iterations=6))
    assert not _same(rerun, old)


def test_a_changed_code_identity_retrains_from_zero(stores, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _resumable(stores, run, iterations=6)
    monkeypatch.setattr("segbench.training.train.code_identity", lambda: "0.1.0+edited")
    _train(stores, run, iterations=6)
    assert _run_record(run)["start_iteration"] == 0 and _run_record(run)["code"] == "0.1.0+edited"


def test_the_same_code_and_inputs_resume(stores, tmp_path):
    run = tmp_path / "run"
    _resumable(stores, run, iterations=6)
    resumed = _weights(_train(stores, run, iterations=6))
    assert _run_record(run)["start_iteration"] == 4
    assert _same(resumed, _weights(_train(stores, tmp_path / "ref", iterations=6)))


def _resumable(stores, run_dir, *, iterations, **kw):
    """Leave ``run_dir`` as a job stopped after iteration 4 of ``iterations`` leaves it: checkpoint, no model."""

    class Stopped(Exception):
        pass

    with mock.patch("segbench.training.train._finish", side_effect=Stopped), pytest.raises(Stopped):
        _train(stores, run_dir, iterations=iterations, checkpoint_every=4, **kw)
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "model.pt").exists()


def test_a_checkpoint_of_other_settings_is_not_resumed(stores, tmp_path):
    _resumable(stores, tmp_path / "run", iterations=6)  # leaves checkpoint.pt at iteration 4
    changed = torch.load(_train(stores, tmp_path / "run", iterations=4, lr=2e-7), weights_only=True)["state_dict"]
    fresh = torch.load(_train(stores, tmp_path / "fresh", iterations=4, lr=2e-7), weights_only=True)["state_dict"]
    assert all(torch.equal(changed[k], fresh[k]) for k in fresh)
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 5


def test_context_mode_trains_only_the_context_module_on_its_front_end(stores, tmp_path):
    front = _train(stores, tmp_path / "front", model_name="dilation8_vgg16", recipe="short", lr=None, iterations=2)
    before, _ = initialise("dilation8_basic_vgg16", 21, width=WIDTH, init=front, mode="context", dropout=0.5)
    assert {m.p for m in before.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}  # as on precomputed maps
    front_model, _ = load_model(front)
    torch.testing.assert_close(before.fc7.weight, front_model.fc7.weight)
    after, _ = load_model(_train(stores, tmp_path / "ctx", model_name="dilation8_basic_vgg16", init=front,
                                 mode="context", recipe="short", lr=None, iterations=2))
    for name, param in after.state_dict().items():
        same = torch.equal(param, before.state_dict()[name])
        assert same == (not name.startswith("context.")), name


def test_context_mode_needs_a_context_module(stores):
    with pytest.raises(ValueError, match="needs a net with a context module"):
        initialise("dilation8_vgg16", 21, width=WIDTH, init=None, mode="context")
