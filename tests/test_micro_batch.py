"""train.micro_batch: each image size's group in forward passes of at most that many images, with gradients
accumulated to the unsplit loss (the sum and mean reductions, under loss sampling)."""

import pytest
import torch
from conftest import write_mixed_store

import segbench.training.train as train_module
from segbench.training.train import _chunk_bounds, train

WIDTH = 0.0625


def test_chunks_are_balanced_and_at_most_the_cap():
    assert _chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert _chunk_bounds(4, 3) == [(0, 2), (2, 4)]
    assert _chunk_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert _chunk_bounds(2, 2) == [(0, 2)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_mixed_store(tmp_path_factory.mktemp("micro") / "train.h5")


def _weights(store, out_dir, **kw):
    # 8 images per iteration (batch 4 at p = 0.5) of two sizes: groups of about 4, split into passes of 2
    args = dict(train_store=store, out_dir=out_dir, model_name="fcn32s_vgg16", width=WIDTH, batch_size=4,
                sample_p=0.5, dropout=0.0, iterations=3, checkpoint_every=0, seed=2, device="cpu", threads=1,
                progress=False)
    return torch.load(train(**{**args, **kw}), weights_only=True)["state_dict"]


@pytest.mark.parametrize("recipe,lr", [("heavy", 1e-6), ("paper", 1e-2)])  # the sum and the mean reduction
def test_micro_batches_give_the_weights_of_whole_groups(store, tmp_path, monkeypatch, recipe, lr):
    passes = []
    loss = train_module.objective.training_loss

    def counting(model, x, *args, **kwargs):
        passes.append(len(x))
        return loss(model, x, *args, **kwargs)

    whole = _weights(store, tmp_path / "whole", recipe=recipe, lr=lr)
    monkeypatch.setattr(train_module.objective, "training_loss", counting)
    split = _weights(store, tmp_path / "split", recipe=recipe, lr=lr, micro_batch=2)
    assert max(passes) == 2 and sum(passes) == 3 * 8
    assert float(whole["score_fr.weight"].abs().max()) > 1e-3  # it starts at zero: the steps move the weights
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], rtol=1e-5, atol=1e-7, msg=key)


def test_micro_batch_is_recorded_and_checked(store, tmp_path):
    path = tmp_path / "run"
    _weights(store, path, recipe="heavy", lr=1e-6, micro_batch=3, iterations=1)
    assert torch.load(path / "model.pt", weights_only=True)["meta"]["micro_batch"] == 3
    with pytest.raises(ValueError, match=r"micro_batch must be an integer >= 1 \(or None: each image size in one "
                                         r"forward pass\), got 0"):
        _weights(store, tmp_path / "zero", recipe="heavy", micro_batch=0)
