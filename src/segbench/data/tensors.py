"""From stored uint8 samples to network inputs.

Two input conventions exist: ``caffe`` (the FCN reference and our pretraining stand-in: BGR, 0-255, minus
the dataset's mean colour) and ``torchvision`` (its ImageNet weights: RGB in [0, 1], minus the ImageNet
mean, divided by its standard deviation). The starting weights decide which one a model uses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

NORMS = ("caffe", "torchvision")
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def to_input(images: Sequence[np.ndarray], mean_bgr: Sequence[float], norm: str = "caffe") -> torch.Tensor:
    """N uint8 H x W x 3 RGB images of one size -> float32 N x 3 x H x W in the ``norm`` convention."""
    batch = np.stack(images).astype(np.float32)
    if norm == "caffe":
        batch = batch[..., ::-1] - np.asarray(mean_bgr, dtype=np.float32)
    elif norm == "torchvision":
        batch = (batch / 255.0 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
    else:
        raise ValueError(f"input norm must be one of {NORMS}, got {norm!r}")
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def to_target(labels: Sequence[np.ndarray]) -> torch.Tensor:
    """N uint8 H x W labels (255 = ignore) -> int64 N x H x W."""
    return torch.from_numpy(np.stack(labels).astype(np.int64))
