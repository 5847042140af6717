"""From stored uint8 samples to network inputs.

Two input conventions exist: ``caffe`` (the FCN reference and our pretraining stand-in: BGR, 0-255, minus
the dataset's mean colour) and ``torchvision`` (its ImageNet weights: RGB in [0, 1], minus the ImageNet
mean, divided by its standard deviation). The starting weights decide which one a model uses;
``caffe_scale`` and ``first_conv_lr_mult`` relate the two scales (a recipe set for one, used with the other).
``modality_input`` builds the inputs of Table 4's nets (colour, HHA, RGB-D, colour + HHA) from a store.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from segbench.data.stats import log_depth
from segbench.data.store import Store

NORMS = ("caffe", "torchvision")
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_input(images: Sequence[np.ndarray], mean_bgr: Sequence[float], norm: str = "caffe") -> torch.Tensor:
    """N uint8 H x W x 3 RGB images of one size -> float32 N x 3 x H x W in the ``norm`` convention."""
    if norm == "caffe":  # one pass per channel: out[:, c] = BGR channel c minus its mean
        rgb = np.stack(images)
        out = np.empty((rgb.shape[0], 3) + rgb.shape[1:3], dtype=np.float32)
        for c, mean in enumerate(np.asarray(mean_bgr, dtype=np.float32)):
            np.subtract(rgb[..., 2 - c], mean, out=out[:, c], dtype=np.float32)
        return torch.from_numpy(out)
    batch = np.stack(images).astype(np.float32)
    if norm == "torchvision":
        batch = (batch / 255.0 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
    else:
        raise ValueError(f"input norm must be one of {NORMS}, got {norm!r}")
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def caffe_scale(norm: str) -> float:
    """How many times larger the ``caffe`` convention's inputs are than ``norm``'s: 1 for ``caffe``; for
    ``torchvision`` 255 x the ImageNet standard deviation, about 57.6 (channels 57.1-58.4), as 0-255 pixels
    minus a mean become (pixel / 255 - mean) / std."""
    if norm not in NORMS:
        raise ValueError(f"input norm must be one of {NORMS}, got {norm!r}")
    return 1.0 if norm == "caffe" else float(np.sqrt(np.mean((255.0 * IMAGENET_STD_RGB.astype(np.float64)) ** 2)))


def first_conv_lr_mult(norm: str, optimizer: str = "sgd") -> float:
    """The lr multiplier of the first conv's weights that makes a recipe set for Caffe's 0-255 inputs train a
    net on ``norm``'s inputs the same way (``optimizer``: "sgd" or "adam"); every other parameter keeps the lr.

    With inputs k = ``caffe_scale(norm)`` times smaller, the same function has first-conv weights k times
    larger and their gradient (an outer product with the input) k times smaller; all later activations and
    gradients are unchanged. SGD's step (lr x gradient) must grow by k^2 to move the weights by k times
    Caffe's step: k^2, about 3,300 for ``torchvision``. Adam's step is about lr whatever the gradient's scale:
    k. Exact up to the small offset between the dataset's mean colour and ImageNet's (and conv1's weight
    decay, which would need 1 / k^2 of the recipe's for SGD). The derivation, in full, is in
    ``segbench.pretraining.imagenet``.
    """
    k = caffe_scale(norm)
    if optimizer == "sgd":
        return k * k
    if optimizer == "adam":
        return k
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")


def to_target(labels: Sequence[np.ndarray]) -> torch.Tensor:
    """N uint8 H x W labels (255 = ignore) -> int64 N x H x W."""
    return torch.from_numpy(np.stack(labels).astype(np.int64))


# Network inputs per modality set (Table 4) and their channel counts: what ``models.build(in_channels=...)`` takes.
MODALITIES = {"rgb": 3, "hha": 3, "rgbd": 4, "rgb_hha": 6}


def modality_input(store: Store, indices: Sequence[int], modality: str = "rgb", norm: str = "caffe") -> torch.Tensor:
    """Samples ``indices`` of ``store`` (all of one size) -> float32 N x C x H x W input of ``modality``.

    The means are the store's attributes, computed on the training split by the preprocessing steps.

    - ``rgb`` (C = 3): the colour image in the ``norm`` convention (``to_input``; caffe: BGR minus ``mean_bgr``).
    - ``hha`` (C = 3): HHA as the reference feeds it: the PNG's channel order (disparity, height, angle)
      minus ``mean_hha``; with ``norm="torchvision"`` the HHA image is normalised like an ImageNet RGB image.
    - ``rgbd`` (C = 4): ``rgb`` then log(depth in mm) minus ``mean_logdepth``, unscaled. The reference feeds
      exactly this (``nyud_layers.load_depth``: ``np.log`` of the mm PNG minus 7.844), so its depth channel
      spans about +-1 against the colour's +-128: the early-fusion net starts with its depth filter at the
      mean of the RGB filters and must grow that channel's weight itself. We keep the reference's scale, so
      that the RGBD row measures the reference's early fusion.
    - ``rgb_hha`` (C = 6): ``rgb`` then ``hha``, for the late-fusion nets (first 3 channels to the colour
      stream, last 3 to the HHA stream).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    if norm not in NORMS:
        raise ValueError(f"input norm must be one of {NORMS}, got {norm!r}")
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("no samples given: pass at least one index")
    sizes = sorted({store.shape("image", i)[:2] for i in idx})
    if len(sizes) > 1:
        raise ValueError(f"samples {idx} have sizes {sizes}; a batch needs one size (group the indices by size)")
    parts = []
    if modality in ("rgb", "rgbd", "rgb_hha"):
        mean_bgr = store.input_mean("mean_bgr") if norm == "caffe" else (0.0, 0.0, 0.0)
        parts.append(to_input([store.image(i) for i in idx], mean_bgr, norm))
    if modality in ("hha", "rgb_hha"):
        hha = np.stack([store.get("hha", i) for i in idx]).astype(np.float32)
        if norm == "caffe":
            hha = hha - np.asarray(store.input_mean("mean_hha"), dtype=np.float32)
        else:
            hha = (hha / 255.0 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
        parts.append(torch.from_numpy(np.ascontiguousarray(hha.transpose(0, 3, 1, 2))))
    if modality == "rgbd":
        mean = store.input_mean("mean_logdepth")[0]
        logd = np.stack([log_depth(store.get("depth", i)) - mean for i in idx]).astype(np.float32)
        parts.append(torch.from_numpy(logd[:, None]))
    return torch.cat(parts, dim=1)
