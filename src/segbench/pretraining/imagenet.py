"""ImageNet classifiers, fetched into a cache and checked, as the FCNs' starting point.

Used when ``pretrain.source: torchvision`` (on a cluster with network); ``pretrain.weights`` names, per
backbone, which ImageNet weights (``SOURCES``) the record is made from:

- ``torchvision`` (every backbone): torchvision names each weight file ``<arch>-<first hex digits of its
  sha256>.pth``; it is downloaded with :func:`segbench.data.fetch` (resumable) and its sha256 prefix checked.
  These weights expect torchvision's input normalisation (RGB in [0, 1], ImageNet mean and std,
  ``input_norm: torchvision``). GoogLeNet's expect more: torchvision builds it with ``transform_input=True``,
  which maps that input to (x - 0.5) / 0.5 before conv1, and the FCN has no such step;
  :func:`fold_transform_input` puts it into conv1 (see there).
- ``caffe`` (VGG16): Caffe's VGG16 in torchvision's layout, ``vgg16_from_caffe.pth`` as pytorch-fcn
  converted and published it (the weights of the reference implementation, and of the PyTorch reproduction
  that reaches the paper's numbers). They expect Caffe's input: BGR, 0-255, minus the mean colour
  (``input_norm: caffe``). Downloaded from Google Drive through its confirmation page and md5-checked
  (:func:`segbench.evaluation.released.fetch_drive`), then converted by :func:`convert_caffe`.

The record (``{"backbone", "width", "num_classes", "input_norm", "weights", "source", "state_dict"}``) says
which input convention its weights expect, and training and evaluation feed the net accordingly.

Learning rates (for ``segbench.training.recipes``). The ``heavy`` and ``paper`` recipes were set for Caffe
nets on 0-255 input, whose pixels have a standard deviation about k = 255 x 0.226 = 57.6 times that of
torchvision's normalised input (``data.tensors.caffe_scale``). A net trained on inputs k times smaller
computes the same function with conv1's weights k times larger (W' = k W, x' = x / k). Its conv1 gradient,
an outer product with the input, is k times smaller (g' = g / k), so one SGD step changes conv1 by
lr g / k against a weight k times larger: conv1's relative update is k^2 (about 3,300) times smaller at the
same lr. From conv1's output on, activations, weights and gradients are those of the equivalent Caffe-scale
net, so every other layer's update is unchanged. The exact translation of a recipe to torchvision-scale
weights is therefore the recipe's lr everywhere and k^2 x lr on conv1's weights only (conv1's bias sees
no input and keeps lr; weight decay on conv1 becomes decay / k^2 for exactness, negligible at these lrs):
``data.tensors.first_conv_lr_mult``. Multiplying the global lr by k or k^2 instead would scale the steps
of every deeper layer, whose gradients did not shrink.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torchvision

from segbench import models
from segbench.data import fetch
from segbench.data.download import expected_md5, read_checksums, verify
from segbench.errors import ChecksumError
from segbench.evaluation.released import DRIVE_URL, drive_hint, fetch_drive
from segbench.infra.atomic import torch_save
from segbench.weights import check_weights_file, read_weights_file

WEIGHTS = {
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "alexnet": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "googlenet": torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1,
    # the successors' trunks (PSPNet, DeepLab); V1 = the original recipe's weights, as those papers' era had
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}


@dataclass(frozen=True)
class DriveFile:
    """A weights file on Google Drive: its name in the cache, Drive id and published md5."""

    file: str
    drive_id: str
    md5: str

    @property
    def url(self) -> str:
        return DRIVE_URL.format(self.drive_id)


# Caffe's ImageNet weights in torchvision's state-dict layout: pytorch-fcn's torchfcn/models/vgg.py
# (id and md5 as at its HEAD; the file was re-uploaded once, an older id 0B9P1L--7Wd2vLTJZMXpIRkVVRFk
# served the same md5)
CAFFE = {"vgg16": DriveFile("vgg16_from_caffe.pth", "1adDBTGY3GcEB_47dvcibajyzi872RAs3",
                            "aa75b158f4181e7f6230029eb96c1b13")}
SOURCES = {"torchvision": tuple(WEIGHTS), "caffe": tuple(CAFFE)}  # source -> backbones it has weights for
GOOGLENET_TRANSFORM = ("conv1.conv.weight", "conv1.bn.running_mean")  # the tensors the fold rewrites
# torchvision's GoogLeNet._transform_input: channel c becomes x * STD[c] / 0.5 + (MEAN[c] - 0.5) / 0.5 (its literals,
# the ImageNet statistics of data.tensors but unrounded by float32)
_TRANSFORM_MEAN, _TRANSFORM_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def weights_file(backbone: str, source: str = "torchvision") -> str:
    """The name under which ``backbone``'s ImageNet weights of ``source`` are published and cached
    (torchvision's ``<arch>-<sha256 prefix>.pth``, pytorch-fcn's ``vgg16_from_caffe.pth``)."""
    if source not in SOURCES:
        raise ValueError(f"unknown weights source {source!r}; expected one of {sorted(SOURCES)}")
    if backbone not in SOURCES[source]:
        raise ValueError(f"no {source} weights for backbone {backbone!r}; {source} has {list(SOURCES[source])}")
    return CAFFE[backbone].file if source == "caffe" else WEIGHTS[backbone].url.rsplit("/", 1)[1]


def check_sha256_prefix(path: Path) -> None:
    """Raise ChecksumError unless the file's sha256 starts with the hex digits in its torchvision name
    (ValueError if the name carries none)."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if not match:
        raise ValueError(f"{path.name} does not carry a sha256 prefix (<arch>-<hex>.pth)")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(match.group(1)):
        raise ChecksumError(f"{path} has sha256 {h.hexdigest()[:16]}..., expected a prefix {match.group(1)}: "
                            "delete it and rerun to download it again")


def fetch_weights(backbone: str, out: str | os.PathLike, *, cache: str | os.PathLike,
                  source: str = "torchvision", checksums: str | os.PathLike | None = None) -> Path:
    """Download ``backbone``'s ImageNet weights of ``source`` (``SOURCES``) into ``cache`` and write a
    classifier record to ``out``. ``checksums`` (a table, :func:`segbench.data.download.read_checksums`)
    replaces the published md5 (Caffe) or torchvision's sha256 prefix: the rehearsal's twin weights."""
    weights_file(backbone, source)  # an unknown source or backbone, named
    table = read_checksums(checksums) if checksums is not None else None
    if source == "caffe":
        return fetch_caffe(backbone, out, cache=cache, checksums=table)
    return fetch_torchvision(backbone, out, cache=cache, checksums=table)


def fetch_torchvision(backbone: str, out: str | os.PathLike, *, cache: str | os.PathLike,
                      checksums: dict[str, str] | None = None) -> Path:
    """Download ``backbone``'s torchvision ImageNet weights into ``cache`` and write a classifier record to
    ``out`` (GoogLeNet's with its input transform folded into conv1). Where ``cache`` lacks the file and
    torch.hub's cache holds it (:func:`staged`: sites pre-stage weights there for nodes without network), that
    copy is checked and read in place, nothing downloaded or written beside it."""
    if backbone not in WEIGHTS:
        raise ValueError(f"no torchvision weights for backbone {backbone!r}; expected one of {sorted(WEIGHTS)}")
    url, name = WEIGHTS[backbone].url, weights_file(backbone)
    path = None if (Path(cache) / name).exists() else staged(name)
    if path is not None:
        if checksums is not None:  # without a table the sha256 prefix below is the check
            verify(path, expected_md5(name, None, checksums))
    else:
        path = fetch(url, Path(cache) / name, expected_md5(name, None, checksums))
    hint = f"delete it and rerun to download it again from {url}"
    check_weights_file(path, fetch_hint=hint)  # a page is named as one, not as a wrong checksum
    if checksums is None:
        check_sha256_prefix(path)
    state = read_weights_file(path, fetch_hint=hint)
    extra = {}
    if backbone == "googlenet":
        state = fold_transform_input(state)
        extra = {"transform_input": "folded into conv1"}
    return torch_save({"backbone": backbone, "width": 1.0, "num_classes": 1000, "input_norm": "torchvision",
                       "weights": "torchvision", "source": url, **extra, "state_dict": state}, out)


def staged(name: str) -> Path | None:
    """torch.hub's copy of a torchvision weights file, if there is one: ``<torch.hub.get_dir()>/checkpoints/name``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``, where torchvision's own
    downloads land and sites pre-stage weights)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def fold_transform_input(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision GoogLeNet's ``transform_input`` folded into conv1: a state dict (torchvision's layout)
    whose net takes torchvision-normalised input x where torchvision's took T(x) = a x + b, per RGB channel
    a = std / 0.5, b = (mean - 0.5) / 0.5 (T maps the normalised image to (pixel - 0.5) / 0.5).

    conv1 has no bias (batch norm follows), so conv1(T(x)) = conv1'(x) + c splits in two: conv1's weights
    times a per input channel, and the constant c = sum over each filter of W b, which the batch norm's
    running mean absorbs (mean' = mean - c; in training, batch statistics remove any constant anyway).

    Exact everywhere conv1's window lies inside the image. Over zero padding (the FCN's 100 pixels, the
    classifier's 3) the folded net sees T(0) = b, the ImageNet mean colour, where torchvision's padded its
    transformed input with 0 (a mid grey). We keep the fold rather than a third input convention that feeds
    (pixel - 0.5) / 0.5: it keeps every torchvision net on one input convention (colour and HHA alike), and
    its padding means what Caffe's and the other torchvision FCNs' zero padding means, the mean colour, the
    FCN's "no image here". The classifier's own border never mattered to the FCN: its 100-pixel padding
    is far outside anything the classifier was trained on.
    """
    missing = [key for key in GOOGLENET_TRANSFORM if key not in state]
    if missing:
        raise ValueError(f"not a torchvision GoogLeNet state dict: {missing} missing (expected conv1.conv / "
                         "conv1.bn keys)")
    weight, mean = (state[key] for key in GOOGLENET_TRANSFORM)
    if weight.shape[1] != 3:
        raise ValueError(f"conv1.conv.weight has {weight.shape[1]} input channels, expected 3 (RGB)")
    std, centre = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (_TRANSFORM_STD, _TRANSFORM_MEAN))
    scale, shift = std / 0.5, (centre - 0.5) / 0.5
    w = weight.double()
    folded = dict(state)
    folded["conv1.conv.weight"] = (w * scale).to(weight.dtype)
    folded["conv1.bn.running_mean"] = (mean.double() - (w * shift).sum(dim=(1, 2, 3))).to(mean.dtype)
    return folded


def fetch_caffe(backbone: str, out: str | os.PathLike, *, cache: str | os.PathLike,
                checksums: dict[str, str] | None = None) -> Path:
    """Download (md5-checked, through Google Drive's confirmation page) ``backbone``'s Caffe weights in
    torchvision's layout into ``cache`` and convert them to a classifier record at ``out``."""
    if backbone not in CAFFE:
        raise ValueError(f"no Caffe weights for backbone {backbone!r}; expected one of {sorted(CAFFE)}")
    spec = CAFFE[backbone]
    pth = fetch_drive(spec.url, Path(cache) / spec.file, expected_md5(spec.file, spec.md5, checksums))
    return convert_caffe(backbone, pth, out)


def convert_caffe(backbone: str, pth: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The classifier record (``input_norm: caffe``) of a Caffe-weights file in torchvision's layout.

    Width and class count are read from the first conv and the last Linear (1.0 and 1000 for the published
    file); every key and shape must be those of ``models.classifier(backbone)`` of that size (for VGG16:
    torchvision's ``vgg16()``, ``features.0`` ... ``classifier.6``).
    """
    if backbone not in CAFFE:
        raise ValueError(f"no Caffe weights for backbone {backbone!r}; expected one of {sorted(CAFFE)}")
    spec = CAFFE[backbone]
    state = read_weights_file(pth, fetch_hint=drive_hint(spec.url, spec.md5, dest=pth,
                                                         command=f"segbench fetch-weights {backbone} --source caffe"))
    state = _checked_layout(backbone, state, what=str(pth))
    width = state["features.0.weight"].shape[0] / 64
    num_classes = state["classifier.6.weight"].shape[0]
    return torch_save({"backbone": backbone, "width": width, "num_classes": num_classes, "input_norm": "caffe",
                       "weights": "caffe", "source": spec.url, "file": spec.file, "md5": spec.md5,
                       "state_dict": {k: v.contiguous() for k, v in state.items()}}, out)


def _checked_layout(backbone: str, state: object, *, what: str) -> dict[str, torch.Tensor]:
    """``state`` if it is ``backbone``'s classifier state dict (torchvision's keys and shapes); else ValueError."""
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} holds a {type(state).__name__}, not a state dict of tensors")
    first, last = state.get("features.0.weight"), state.get("classifier.6.weight")
    if first is None or last is None:
        raise ValueError(f"{what} is not a {backbone} state dict in torchvision's layout: features.0.weight or "
                         f"classifier.6.weight missing (keys: {list(state)[:4]} ...)")
    with torch.device("meta"):  # shapes only: a full VGG16 would allocate 553 MB to be thrown away
        expected = models.classifier(backbone, last.shape[0], width=first.shape[0] / 64).state_dict()
    unknown, missing = sorted(set(state) - set(expected)), sorted(set(expected) - set(state))
    wrong = [f"{k}: {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if unknown or missing or wrong:
        raise ValueError(f"{what} does not have torchvision's {backbone} layout: unknown keys {unknown}, missing "
                         f"keys {missing}, wrong shapes {wrong}")
    return {k: state[k] for k in expected}
