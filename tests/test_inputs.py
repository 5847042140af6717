"""Network inputs: torchvision's normalisation where the weights come from torchvision, the convention each net
trained from scratch declares, the stores' input means, the sha256 check of torchvision's weight files, and
training with the focal loss."""

import csv
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segbench import models
from segbench.data import tensors
from segbench.data.store import Store, StoreError, write_store
from segbench.data.synthetic.voc import write_twin
from segbench.data.voc import preprocess_voc
from segbench.errors import ChecksumError
from segbench.evaluation import evaluate as evaluate_module
from segbench.pretraining.imagenet import check_sha256_prefix
from segbench.pretraining.standins import pretrain_classifier
from segbench.training import recipes
from segbench.training import train as train_module
from segbench.weights import load_model

WIDTH = 0.0625


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny VOC twin's stores, the stand-in classifier (caffe inputs) and the same weights as torchvision's."""
    root = tmp_path_factory.mktemp("inputs")
    write_twin(root / "raw", image_size=48, n_sbd_train=8, n_sbd_val=1, n_voc_train=1, n_voc_val=2, n_overlap=1,
               progress=False)
    stores = preprocess_voc(root / "raw/VOCdevkit/VOC2011", root / "raw/benchmark_RELEASE/dataset", root / "pre",
                            progress=False)
    caffe = pretrain_classifier(root / "vgg16.pt", width=WIDTH, crop_size=48, crop_iterations=2, iterations=1,
                                batch_size=2, eval_images=4, threads=1, progress=False)
    record = torch.load(caffe, weights_only=True)
    record.update(input_norm="torchvision", source="torchvision stand-in")
    torchvision = root / "vgg16-torchvision.pt"
    torch.save(record, torchvision)
    return {"train": stores["train"], "val": stores["val"], "caffe": caffe, "torchvision": torchvision}


def _train(tiny, out_dir, **kw):
    args = dict(train_store=tiny["train"], out_dir=out_dir, model_name="fcn32s_vgg16", width=WIDTH, recipe="short",
                batch_size=2, iterations=2, checkpoint_every=0, seed=0, device="cpu", threads=1, progress=False)
    args.update(kw)
    return train_module.train(**args)


def _spy_norms(monkeypatch):
    """Records the norm of every batch converted to a network input (training and evaluation both go through
    ``tensors.modality_input``, which calls ``tensors.to_input``)."""
    norms = []
    original = tensors.to_input

    def to_input(images, mean_bgr, norm="caffe"):
        norms.append(norm)
        return original(images, mean_bgr, norm)

    monkeypatch.setattr(tensors, "to_input", to_input)
    return norms


def test_torchvision_norm_is_rgb_in_unit_range_minus_imagenet_mean_over_std():
    image = np.array([[[255, 0, 128]]], np.uint8)
    x = tensors.to_input([image], mean_bgr=(1.0, 2.0, 3.0), norm="torchvision")
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert x.shape == (1, 3, 1, 1) and x.dtype == torch.float32
    np.testing.assert_allclose(x.flatten().numpy(), expected, rtol=1e-6)
    caffe = tensors.to_input([image], mean_bgr=(1.0, 2.0, 3.0), norm="caffe")
    np.testing.assert_allclose(caffe.flatten().numpy(), [128 - 1.0, 0 - 2.0, 255 - 3.0])  # BGR minus the mean


def test_modality_input_in_torchvision_norm(tmp_path):
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    hha = 255 - image
    path = write_store(tmp_path / "s.h5", dataset="nyud", split="train", ids=["a"], class_names=["x"],
                       fields={"image": [image], "hha": [hha]}, attrs={"mean_bgr": [1, 2, 3], "mean_hha": [4, 5, 6]})
    store = Store(path)
    rgb_hha = tensors.modality_input(store, [0], "rgb_hha", norm="torchvision")
    torch.testing.assert_close(rgb_hha[:, :3], tensors.to_input([image], (0, 0, 0), "torchvision"))
    torch.testing.assert_close(rgb_hha[:, 3:], tensors.to_input([hha], (0, 0, 0), "torchvision"))
    caffe = tensors.modality_input(store, [0], "hha", norm="caffe")
    expected = torch.tensor(hha[0, 0] - np.array([4.0, 5.0, 6.0]), dtype=torch.float32)  # HHA minus mean_hha
    torch.testing.assert_close(caffe[0, :, 0, 0], expected)


def test_weights_from_torchvision_train_and_evaluate_in_torchvision_norm(tiny, tmp_path, monkeypatch):
    _, norm = train_module.initialise("fcn32s_vgg16", 21, width=WIDTH, init=tiny["torchvision"])
    assert norm == "torchvision"
    assert train_module.initialise("fcn32s_vgg16", 21, width=WIDTH, init=tiny["caffe"])[1] == "caffe"
    fed = _spy_norms(monkeypatch)
    weights = _train(tiny, tmp_path / "32s", init=tiny["torchvision"])
    assert fed and set(fed) == {"torchvision"}
    assert load_model(weights)[1]["meta"]["input_norm"] == "torchvision"
    assert train_module.initialise("fcn16s_vgg16", 21, width=WIDTH, init=weights)[1] == "torchvision"  # staged
    fed.clear()
    evaluate_module.evaluate(store_path=tiny["val"], model_path=weights, out_json=tmp_path / "val.json",
                             device="cpu", threads=1, progress=False)
    assert fed and set(fed) == {"torchvision"}


def test_focal_loss_training_starts_at_the_uniform_focal_loss_and_falls(tiny, tmp_path):
    _train(tiny, tmp_path / "focal", init=tiny["caffe"], criterion="focal", gamma=2.0, batch_size=4, iterations=20)
    rows = csv.DictReader((tmp_path / "focal" / "log.csv").read_text().splitlines())
    losses = [float(row["train_loss"]) for row in rows]
    # the zero-initialised score layer predicts 1/21 everywhere: focal loss (1 - 1/21)^2 log 21, not log 21
    assert losses[0] == pytest.approx((20 / 21) ** 2 * math.log(21), rel=1e-4)
    assert all(math.isfinite(v) for v in losses) and np.mean(losses[-5:]) < 0.75 * np.mean(losses[:3])


def test_missing_or_malformed_input_mean_names_the_store_and_the_step(tmp_path):
    image = np.zeros((2, 2, 3), np.uint8)
    bare = Store(write_store(tmp_path / "bare.h5", dataset="voc", split="val", ids=["a"], class_names=["x"],
                             fields={"image": [image]}))
    with pytest.raises(StoreError, match="no 'mean_bgr' attribute.*preprocess_voc") as err:
        bare.input_mean("mean_bgr")
    assert str(bare.path) in str(err.value)
    with pytest.raises(StoreError, match="no 'mean_bgr' attribute"):
        tensors.modality_input(bare, [0], "rgb")
    assert tensors.modality_input(bare, [0], "rgb", norm="torchvision").shape == (1, 3, 2, 2)  # needs no mean
    with pytest.raises(StoreError, match="no 'mean_hha' attribute.*hha_nyud"):
        bare.input_mean("mean_hha")
    short = Store(write_store(tmp_path / "short.h5", dataset="voc", split="val", ids=["a"], class_names=["x"],
                              fields={"image": [image]}, attrs={"mean_bgr": [1.0, 2.0]}))
    with pytest.raises(StoreError, match="mean_bgr has 2 values, expected 3"):
        short.input_mean("mean_bgr")
    with pytest.raises(ValueError, match="unknown input mean 'mean_rgb'"):
        short.input_mean("mean_rgb")


def test_sha256_prefix_of_a_torchvision_file_name(tmp_path):
    payload = b"not really weights"
    digest = hashlib.sha256(payload).hexdigest()
    good = tmp_path / f"vgg16-{digest[:8]}.pth"
    good.write_bytes(payload)
    check_sha256_prefix(good)
    bad = tmp_path / f"vgg16-{(int(digest[0], 16) + 1) % 16:x}{digest[1:8]}.pth"  # first digit off by one
    bad.write_bytes(payload)
    with pytest.raises(ChecksumError, match="expected a prefix") as err:
        check_sha256_prefix(bad)
    assert str(bad) in str(err.value) and "delete it and rerun" in str(err.value)
    unnamed = tmp_path / "vgg16.pth"
    unnamed.write_bytes(payload)
    with pytest.raises(ValueError, match="does not carry a sha256 prefix"):
        check_sha256_prefix(unnamed)


SCRATCH_2D = sorted(name for name, d in models.MODELS.items() if d.backbone is None and d.dims == 2)


@pytest.mark.parametrize("name", SCRATCH_2D)
def test_a_net_trained_from_scratch_starts_near_the_constant_prediction_floor_in_its_declared_inputs(name):
    """He initialisation keeps the inputs' scale up to the scores, so a net without a normalisation layer after
    its first conv needs unit-scale inputs: on Caffe's 0-255 ones UNet++ started at 412 per head, not ~3."""
    net = models.build(name, 21, width=0.125).train()
    models.set_dropout(net, 0.0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(2)]
    target = torch.from_numpy(rng.integers(0, 21, (2, 64, 80)))
    x = tensors.to_input(images, (104.0, 117.0, 123.0), models.declared(name).input_norm)
    with torch.no_grad():
        if hasattr(net, "forward_with_aux"):
            scores, aux = net.forward_with_aux(x)
            every = [scores, *(s for s, _ in aux.values())]
        else:
            every = [net(x)]
        per_head = np.mean([F.cross_entropy(s, target).item() for s in every])
    assert per_head < 5 * math.log(21), f"{name} starts at {per_head:.1f} per head; the floor is {math.log(21):.2f}"


def test_from_scratch_the_declared_convention_trains_without_a_first_conv_multiplier():
    assert train_module.initialise("unetpp", 21, width=0.125, init=None)[1] == "torchvision"
    assert train_module.initialise("unet", 21, width=0.125, init=None)[1] == "torchvision"
    assert train_module.initialise("unet_same", 21, width=0.125, init=None)[1] == "caffe"  # batch norm: any scale
    net = models.build("unetpp", 21, width=0.125)
    rec = recipes.recipe("short", model_name="unetpp", width=0.125)
    assert "first conv weights" in {g["name"] for g in recipes.make_optimizer(net, rec, input_norm="torchvision")
                                    .param_groups}  # weights that were trained on torchvision's inputs
    assert {g["name"] for g in recipes.make_optimizer(net, rec, input_norm=None).param_groups} == {"weights",
                                                                                                    "biases"}


def test_every_declared_input_convention_is_one_the_data_has():
    assert {d.input_norm for d in models.MODELS.values()} == set(tensors.NORMS)
    with pytest.raises(ValueError, match=r"input norm must be one of \('caffe', 'torchvision'\), got 'rgb'"):
        tensors.to_input([np.zeros((4, 4, 3), np.uint8)], (0.0, 0.0, 0.0), "rgb")
