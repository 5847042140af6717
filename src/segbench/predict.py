"""Label maps from saved weights, one image at a time, with the input convention the weights were trained for.

Used where every prediction itself is an output (qualitative figures, the evaluation server's PNGs); the
metrics come from :mod:`segbench.evaluate`, which batches images of equal size.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from segbench.data.store import Store
from segbench.data.tensors import to_input
from segbench.weights import load_model


def load_for_store(weights: str | os.PathLike, store: Store, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The model at ``weights`` in eval mode on ``device``, and its input norm (``meta["input_norm"]``).

    Raises if it predicts another number of classes than ``store`` has, or does not take RGB input.
    """
    model, record = load_model(weights)
    if record["num_classes"] != store.num_classes:
        raise ValueError(f"{weights} predicts {record['num_classes']} classes but {store.path} has "
                         f"{store.num_classes}: use a model trained on this dataset")
    if record.get("in_channels", 3) != 3:
        raise ValueError(f"{weights} takes {record['in_channels']} input channels; predictions here are made "
                         "from the store's RGB images (3 channels)")
    return model.to(device).eval(), record["meta"].get("input_norm", "caffe")


@torch.no_grad()
def predict_labels(model: torch.nn.Module, image: np.ndarray, *, mean_bgr: Sequence[float], norm: str,
                   device: torch.device) -> np.ndarray:
    """uint8 H x W class indices (argmax of the scores) for one uint8 H x W x 3 RGB image."""
    x = to_input([image], mean_bgr, norm).to(device)
    return model(x)[0].argmax(0).to(torch.uint8).cpu().numpy()
