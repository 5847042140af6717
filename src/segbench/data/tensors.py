"""From stored uint8 samples to network inputs (Caffe convention: BGR, 0-255, mean-subtracted)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def to_input(images: Sequence[np.ndarray], mean_bgr: Sequence[float]) -> torch.Tensor:
    """N uint8 H x W x C RGB images (C = 3) of one size -> float32 N x C x H x W, BGR minus the mean."""
    batch = np.stack(images).astype(np.float32)[..., ::-1] - np.asarray(mean_bgr, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def to_target(labels: Sequence[np.ndarray]) -> torch.Tensor:
    """N uint8 H x W labels (255 = ignore) -> int64 N x H x W."""
    return torch.from_numpy(np.stack(labels).astype(np.int64))
