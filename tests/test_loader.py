"""Training batches through torch.utils.data (segbench.training.loader): the same index draw as the loop without a
loader, the same batches and weights with any number of workers, and resumed runs equal to uninterrupted ones."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, write_mixed_store

from segbench.data.store import Store
from segbench.data.tensors import modality_input
from segbench.evaluation import losses, objective
from segbench.infra import precision, runtime
from segbench.training import checkpoint, loader, recipes
from segbench.training.train import initialise, train

WIDTH = 0.0625
HEADS = {"label": 3}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_mixed_store(tmp_path_factory.mktemp("mixed") / "train.h5")


def _train(store, out_dir, **kw):
    args = dict(train_store=store, out_dir=out_dir, model_name="fcn32s_vgg16", width=WIDTH, recipe="short",
                batch_size=3, iterations=6, checkpoint_every=2, seed=4, device="cpu", threads=1, progress=False)
    args.update(kw)
    return train(**args)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def test_the_sampler_draws_what_the_loop_without_a_loader_drew():
    draws = list(loader.RandomBatches(8, 3, seed=11, iterations=(0, 20)))
    rng = np.random.default_rng(11)
    assert [d.iteration for d in draws] == list(range(20))
    for draw in draws:
        assert draw.indices == tuple(rng.integers(0, 8, size=3).tolist())
        assert draw.data_rng == rng.bit_generator.state


def test_the_sampler_continues_from_the_state_of_a_draw():
    draws = list(loader.RandomBatches(8, 3, seed=11, iterations=(0, 10)))
    resumed = list(loader.RandomBatches(8, 3, seed=11, iterations=(4, 10), state=draws[3].data_rng))
    assert resumed == draws[4:] and len(loader.RandomBatches(8, 3, seed=11, iterations=(4, 10))) == 6


def test_the_sampler_refuses_empty_draws():
    with pytest.raises(ValueError, match="got num_samples=0, images=3"):
        loader.RandomBatches(0, 3, seed=0, iterations=(0, 1))


def test_a_batch_groups_images_by_size_and_each_process_keeps_its_share(store):
    data = Store(store)
    draw = loader.Draw(7, (0, 1, 2, 5, 4), {"state": 1})  # sizes: 48x48, 48x64, 48x48, 48x64, 48x48
    batch = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe")[draw]
    assert (batch.iteration, batch.data_rng, batch.images) == (7, {"state": 1}, 5)
    assert batch.sizes == [((48, 48), 3), ((48, 64), 2)]
    assert [g.indices for g in batch.groups] == [[0, 2, 4], [1, 5]]
    for group in batch.groups:
        assert group.size == tuple(group.x.shape[-2:])
        assert torch.equal(group.x, modality_input(data, group.indices, "rgb", "caffe"))
        assert torch.equal(group.y["label"], objective.targets(data, group.indices, HEADS)["label"])
    shares = [loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", rank=r, world_size=2)[draw]
              for r in range(2)]
    assert [[g.indices for g in s.groups] for s in shares] == [[[0, 2, 4]], [[1, 5]]]  # indices[rank::2]
    assert all(s.sizes == batch.sizes and s.images == 5 for s in shares)  # the whole batch's, for the loss weights
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", rank=2, world_size=2)


CROP = loader.Augmentation(crop=40, scale_range=(0.5, 1.5), flip=True, rotate=10.0)


def test_a_recipes_augmentation_crops_a_mixed_size_batch_to_one_size(store):
    data = Store(store)
    draw = loader.Draw(7, (0, 1, 2, 5, 4), {"state": 1})
    batch = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", augmentation=CROP, seed=4)[draw]
    assert batch.sizes == [((40, 40), 5)] and batch.images == 5
    (group,) = batch.groups
    assert group.indices == [0, 1, 2, 5, 4] and group.x.shape == (5, 3, 40, 40) and group.size == (40, 40)
    labels = group.y["label"]
    assert set(labels.unique().tolist()) <= {0, 1, 2, 255}  # only copied labels, 255 where padded or rotated in
    # each pixel's class is its brightest channel: flipped and cropped pairs (no resampling) agree exactly
    flipped = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", seed=4,
                                     augmentation=loader.Augmentation(crop=56, flip=True))[draw].groups[0]
    bgr = flipped.x + torch.tensor([104.0, 117.0, 123.0])[:, None, None]
    kept = flipped.y["label"] != 255  # padding and the labelled border
    assert torch.equal(bgr.flip(1).argmax(dim=1)[kept], flipped.y["label"][kept])  # RGB order, as numpy's argmax
    assert 0.5 < kept.float().mean() < 1.0
    again = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", augmentation=CROP, seed=4)[draw]
    assert torch.equal(again.groups[0].x, group.x) and torch.equal(again.groups[0].y["label"], labels)
    later = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", augmentation=CROP,
                                   seed=4)[draw._replace(iteration=8)]
    assert not torch.equal(later.groups[0].x, group.x)


def test_augmented_shares_of_two_processes_are_the_single_process_batch(store):
    data = Store(store)
    draw = loader.Draw(2, (3, 0, 6, 1, 2, 7), {})
    whole = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", augmentation=CROP, seed=9)[draw]
    for rank in range(2):
        share = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", augmentation=CROP, seed=9,
                                       rank=rank, world_size=2)[draw]
        assert share.sizes == whole.sizes and share.images == 6
        assert torch.equal(share.groups[0].x, whole.groups[0].x[rank::2])
        assert torch.equal(share.groups[0].y["label"], whole.groups[0].y["label"][rank::2])


def test_augmentation_is_refused_where_it_cannot_apply(store):
    data = Store(store)
    with pytest.raises(ValueError, match=r"colour input with one label field; got modality 'hha'"):
        loader.TrainingBatches(data, heads=HEADS, modality="hha", norm="caffe", augmentation=CROP)
    with pytest.raises(ValueError, match="without a crop leaves images of random sizes"):
        loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", world_size=2,
                               augmentation=loader.Augmentation(scale_range=(0.5, 2.0)))
    plain = loader.TrainingBatches(data, heads=HEADS, modality="rgb", norm="caffe", augmentation=loader.Augmentation())
    assert plain.augmentation is None  # every step off: the batches of the FCN recipes, unchanged


def test_a_successor_recipe_trains_on_its_crops(store, tmp_path):
    path = _train(store, tmp_path / "icnet", model_name="icnet_resnet50", recipe="icnet", batch_size=2,
                  iterations=1)
    meta = json.loads((tmp_path / "icnet" / "run.json").read_text())
    assert meta["augmentation"] == {"crop": 473, "scale_range": [0.5, 2.0], "flip": True, "rotate": 0.0,
                                    "blur": 0.0, "elastic": False}
    assert path.exists()
    # its objective adds the two guidance losses (weights 0.4 and 0.4): so does the floor it is judged by
    _train(store, tmp_path / "fcn", iterations=1)
    fcn = json.loads((tmp_path / "fcn" / "run.json").read_text())
    assert fcn["augmentation"] is None
    assert meta["constant_prediction_loss"] == pytest.approx(1.8 * fcn["constant_prediction_loss"])


def test_the_u_net_family_trains_with_its_own_recipes_and_objectives(store, tmp_path):
    """UNet++ sums four heads' losses (so does its floor); Attention U-Net trains on its release's crops."""
    _train(store, tmp_path / "fcn", iterations=1)
    fcn = json.loads((tmp_path / "fcn" / "run.json").read_text())
    _train(store, tmp_path / "unetpp", model_name="unetpp", recipe="unetpp", batch_size=2, iterations=1)
    nested = json.loads((tmp_path / "unetpp" / "run.json").read_text())
    assert nested["constant_prediction_loss"] == pytest.approx(4 * fcn["constant_prediction_loss"])
    assert (nested["optimizer"], nested["augmentation"]["flip"]) == ("adam", True)
    _train(store, tmp_path / "att", model_name="attention_unet", recipe="attention_unet", iterations=1)
    gated = json.loads((tmp_path / "att" / "run.json").read_text())
    assert gated["augmentation"]["crop"] == 160 and gated["batch_size"] == 3
    assert gated["constant_prediction_loss"] == pytest.approx(fcn["constant_prediction_loss"])  # one loss


def test_workers_load_the_same_batches_as_the_training_process(store):
    data = loader.TrainingBatches(Store(store), heads=HEADS, modality="rgb", norm="caffe")
    sampler = loader.RandomBatches(8, 3, seed=2, iterations=(0, 7))
    inline = list(loader.batch_loader(data, sampler, num_workers=0))
    workers = list(loader.batch_loader(data, sampler, num_workers=2))
    assert len(inline) == len(workers) == 7
    for a, b in zip(inline, workers):
        assert (a.iteration, a.data_rng, a.sizes, a.images) == (b.iteration, b.data_rng, b.sizes, b.images)
        assert [g.indices for g in a.groups] == [g.indices for g in b.groups]
        assert all(torch.equal(ga.x, gb.x) and torch.equal(ga.y["label"], gb.y["label"])
                   for ga, gb in zip(a.groups, b.groups))
    with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
        loader.batch_loader(data, sampler, num_workers=-1)


def _loop_without_loader(store, *, seed, iterations, batch_size, sample_p):
    """The training loop as it was before the loader (same setup as ``train``, no checkpoints): the reference
    that the default settings must reproduce bit for bit."""
    runtime.setup(threads=1, seed=seed)
    data = Store(store)
    rec = recipes.recipe("short", model_name="fcn32s_vgg16", width=WIDTH, batch_size=batch_size)
    model, norm = initialise("fcn32s_vgg16", data.num_classes, width=WIDTH, init=None)
    optimizer = recipes.make_optimizer(model, rec)
    rng = np.random.default_rng(seed)
    mask_gen = torch.Generator().manual_seed(seed)
    images = max(1, round(rec.batch_size / sample_p))
    for it in range(iterations):
        model.train()
        recipes.apply_schedule(optimizer, rec, it, iterations)
        indices = rng.integers(0, len(data), size=images)
        optimizer.zero_grad(set_to_none=True)
        for group in objective.batches_by_shape(data, indices, len(indices)):
            x = modality_input(data, group, "rgb", norm)
            y = objective.targets(data, group, HEADS)
            keep = None if sample_p == 1.0 else losses.sampling_mask(tuple(y["label"].shape), sample_p,
                                                                      generator=mask_gen)
            loss = objective.training_loss(model, x, y, HEADS, reduction=rec.reduction, keep=keep,
                                           autocast=precision.autocast("fp32", torch.device("cpu")))
            (loss * (len(group) / len(indices))).backward()
        optimizer.step()
    return model.state_dict()


@pytest.mark.parametrize("workers", [0, 2])
def test_default_training_is_bit_identical_to_the_loop_without_a_loader(store, tmp_path, workers):
    # dropout (torch's global generator), loss sampling (its own generator) and two image sizes per batch
    reference = _loop_without_loader(store, seed=4, iterations=6, batch_size=2, sample_p=0.5)
    trained = _weights(_train(store, tmp_path / "run", batch_size=2, sample_p=0.5, num_workers=workers))
    _assert_identical(reference, trained)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (meta["processes"], meta["compile"], meta["deterministic"], meta["precision"]) == (1, False, False, "fp32")


class StopAt:
    """Stands in for ``PreemptionGuard.requested`` (polled once per iteration): True from poll ``at`` on, as if a
    signal had come during iteration ``at``."""

    def __init__(self, at):
        self.at, self.polls = at, 0

    def __get__(self, guard, owner=None):
        self.polls += 1
        return self.polls >= self.at


def test_a_run_with_workers_resumed_after_a_stop_equals_an_uninterrupted_one(store, tmp_path, monkeypatch):
    uninterrupted = _weights(_train(store, tmp_path / "whole", num_workers=2))
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.PreemptionGuard, "requested", StopAt(3))
        with pytest.raises(checkpoint.Preempted, match="at iteration 3"):
            _train(store, tmp_path / "run", num_workers=2)  # the workers have drawn batches 4 and 5 already
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["iteration"] == 3
    resumed = _weights(_train(store, tmp_path / "run", num_workers=2))
    _assert_identical(uninterrupted, resumed)
    _assert_identical(uninterrupted, _weights(_train(store, tmp_path / "inline", num_workers=0)))
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 7


def test_sigterm_to_every_process_of_the_job_still_stops_with_a_checkpoint(store, tmp_path):
    # SLURM signals every process of a job step, the loading workers too: they must leave the stop to the training
    run = tmp_path / "term"
    cmd = [sys.executable, "-m", "segbench.cli", "train", "--train-store", str(store), "--out-dir", str(run), "--model",
           "fcn32s_vgg16", "--width", str(WIDTH), "--recipe", "short", "--batch-size", "2", "--iterations", "100000",
           "--checkpoint-every", "1", "--num-workers", "2", "--device", "cpu", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group, as a job step
    while proc.poll() is None and not (run / "checkpoint.pt").exists():
        os.sched_yield()
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == checkpoint.Preempted.exit_code, err
    assert "stopped by a signal" in err and "DataLoader worker" not in err
