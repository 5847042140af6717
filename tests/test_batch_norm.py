"""Batch norm in training: frozen on the FCNs (and in a frozen trunk), batch statistics on the successors;
SyncBatchNorm for several GPUs; and the smallest batch a batch-norm net may get per process or pass."""

import pytest
import torch
from conftest import write_mixed_store

from segbench import models
from segbench.training import distributed, recipes
from segbench.training.train import _check_batch_norm_batch, initialise, set_train_mode, train

WIDTH = 0.0625
BATCH_NORMS = (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm)


def _batch_norms(model):
    return [m for m in model.modules() if isinstance(m, BATCH_NORMS)]


def _googlenet():
    """FCN-GoogLeNet whose running statistics are not the identity (as a pretrained classifier's are not), with a
    score layer that is not zero."""
    torch.manual_seed(0)
    model = models.build("fcn32s_googlenet", 3, width=WIDTH)
    torch.nn.init.normal_(model.score_fr.weight, std=0.1)
    for bn in _batch_norms(model):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def test_the_fcns_freeze_batch_norm_and_the_successors_use_batch_statistics():
    for name in ("heavy", "paper", "short"):
        assert recipes.recipe(name, model_name="fcn32s_googlenet").bn == "frozen", name
    assert recipes.recipe("short", model_name="pspnet_resnet50").bn == "batch"
    assert recipes.recipe("short", model_name="unet_same").bn == "batch"
    own = recipes.own_recipe("pspnet_resnet50")
    assert recipes.recipe(own, model_name="pspnet_resnet50").bn == "batch"
    with pytest.raises(ValueError, match=r"recipe 'heavy': bn must be one of \('batch', 'frozen'\), got 'off'"):
        recipes.Recipe(name="heavy", batch_size=1, weight_decay=0.0, lr=1.0, reduction="sum", bn="off")


def test_frozen_batch_norm_computes_in_training_what_it_computes_in_evaluation():
    model, x = _googlenet(), torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        expected = model.eval()(x)
        set_train_mode(model, "frozen")
        frozen = model(x)
        set_train_mode(model, "batch")
        batch = model(x)
    assert model.training and all(bn.training for bn in _batch_norms(model))
    torch.testing.assert_close(frozen, expected, rtol=0, atol=0)
    assert not torch.allclose(batch, expected, atol=1e-3)  # batch statistics of 2 padded images differ


def test_a_frozen_trunk_keeps_its_batch_norm_in_eval_mode_in_every_recipe():
    model, _ = initialise("fcn32s_googlenet", 3, width=WIDTH, init=None, mode="fixed")
    set_train_mode(model, "batch")
    assert model.score_fr.training and all(not bn.training for bn in _batch_norms(model))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_mixed_store(tmp_path_factory.mktemp("bn") / "train.h5")


def _trained(store, out_dir, **kw):
    args = dict(train_store=store, out_dir=out_dir, model_name="fcn32s_googlenet", width=WIDTH, iterations=2,
                checkpoint_every=0, seed=1, device="cpu", threads=1, progress=False)
    path = train(**{**args, **kw})
    record = torch.load(path, weights_only=True)
    return record["state_dict"], record["meta"]


def _statistics(state):
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("recipe,lr", [("heavy", 1e-3), ("short", None)])
def test_an_fcn_keeps_the_running_statistics_and_learns_the_scale(store, tmp_path, recipe, lr):
    start = models.build("fcn32s_googlenet", 3, width=WIDTH).state_dict()  # batch norm starts at 0 / 1 / 1 / 0
    trained, meta = _trained(store, tmp_path / recipe, recipe=recipe, lr=lr)
    assert meta["batch_norm"] == "frozen"
    assert all(torch.equal(v, start[k]) for k, v in _statistics(trained).items())
    assert not torch.equal(trained["conv1.bn.weight"], start["conv1.bn.weight"])  # the affine part still learns


def test_a_successor_updates_its_running_statistics(store, tmp_path):
    start = models.build("unet_same", 3, width=WIDTH).state_dict()
    trained, meta = _trained(store, tmp_path / "unet", model_name="unet_same", recipe="short")
    assert meta["batch_norm"] == "batch"
    assert not any(torch.equal(v, start[k]) for k, v in _statistics(trained).items())


def test_sync_batch_norm_replaces_every_batch_norm_on_gpus_only():
    two = distributed.Context(rank=0, world_size=2)
    model = _googlenet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n = len(_batch_norms(model))
    assert distributed.sync_batch_norm(model, two, torch.device("cpu")) is model  # gloo: SyncBatchNorm needs CUDA
    assert distributed.sync_batch_norm(model, distributed.Context(), torch.device("cuda")) is model
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    synced = distributed.sync_batch_norm(model, two, torch.device("cuda"))  # conversion itself runs on the CPU
    layers = [m for m in synced.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(layers) == n and not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())
    assert synced.state_dict().keys() == state.keys()
    assert all(torch.equal(synced.state_dict()[k], v) for k, v in state.items())
    assert distributed.batch_norm_synced(two, torch.device("cuda", 1))
    assert not distributed.batch_norm_synced(two, torch.device("cpu"))


def test_processes_per_run_leave_each_unsynchronised_batch_norm_its_smallest_batch():
    short = recipes.recipe("short", model_name="pspnet_resnet50")
    assert recipes.min_images_per_process("pspnet_resnet50", short, synced=False) == 2
    assert recipes.min_images_per_process("pspnet_resnet50", short, synced=True) == 1  # SyncBatchNorm pools them
    assert recipes.min_images_per_process("fcn32s_googlenet", short, synced=False) == 1
    heavy = recipes.recipe("heavy", model_name="fcn32s_googlenet")
    assert recipes.min_images_per_process("fcn32s_googlenet", heavy, synced=False) == 1
    counts = [distributed.processes_for(16, images, min_per_process=2) for images in (1, 3, 4, 16, 40)]
    assert counts == [1, 1, 2, 8, 16]
    assert distributed.processes_for(16, 16) == 16
    with pytest.raises(ValueError, match="min_per_process=0"):
        distributed.processes_for(2, 4, min_per_process=0)


def _check(model_name, *, batch, world=1, device="cpu", micro_batch=None, recipe="short"):
    rec = recipes.recipe(recipe, model_name=model_name, batch_size=batch)
    _check_batch_norm_batch(model_name, rec, batch, micro_batch, distributed.Context(0, world, 0), torch.device(device))


def test_the_batch_norm_batch_is_checked_per_process_unless_it_is_synchronised():
    _check("pspnet_resnet50", batch=4, world=2)
    _check("pspnet_resnet50", batch=2, world=2, device="cuda")  # one image per GPU: SyncBatchNorm sees 2
    _check("fcn32s_googlenet", batch=2, world=2)  # no pooling branch: any batch
    with pytest.raises(ValueError, match=r"needs at least 2 images in each process, .* \(2 processes on the cpu: "
                                         r"SyncBatchNorm needs GPUs\), but 3 images give some process 1: use at most "
                                         r"1 processes"):
        _check("pspnet_resnet50", batch=3, world=2)
    with pytest.raises(ValueError, match=r"needs at least 2 images per iteration, but the batch has 1"):
        _check("pspnet_resnet50", batch=1, world=2, device="cuda")


def test_micro_batches_of_a_batch_norm_net_keep_its_smallest_batch():
    _check("pspnet_resnet50", batch=8, micro_batch=3)  # balanced chunks: 4 -> 2 + 2, 5 -> 3 + 2
    _check("pspnet_resnet50", batch=8, micro_batch=2, device="cuda", world=2)  # synchronised: the passes pool
    _check("pspnet_resnet50", batch=2, micro_batch=2)  # no group is split (the rehearsal's settings)
    _check("pspnet_resnet50", batch=4, micro_batch=2, world=2)  # 2 images per process: none split either
    with pytest.raises(ValueError, match=r"micro_batch 2 splits a group of 3 images into forward passes of 2 and 1, "
                                         r"but pspnet_resnet50's batch norm needs at least 2 images per pass: set "
                                         r"micro_batch to 3 or more, or null"):
        _check("pspnet_resnet50", batch=8, micro_batch=2)
    with pytest.raises(ValueError, match=r"micro_batch 2 splits a group of 3 images"):
        _check("pspnet_resnet50", batch=3, micro_batch=2)

