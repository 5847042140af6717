"""Label maps from saved weights, one stored sample at a time, with the inputs the weights were trained on.

Used where every prediction itself is an output (qualitative figures, the evaluation server's PNGs); the
metrics come from :mod:`segbench.evaluation.evaluate`, which batches images of equal size. A net is fed what its run
fed it in training (``meta["modality"]``: colour, HHA, RGB-D or colour + HHA, in its ``input_norm``), and a
multi-headed net (SIFT Flow's) is read on its first head, the one its table's mean IU scores. With a
``crf`` the labels are those of the dense CRF on the net's softmax and the RGB image (``evaluation.crf``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from segbench.data.store import Store
from segbench.data.tensors import MODALITIES, modality_input
from segbench.evaluation import losses, objective
from segbench.weights import load_model

if TYPE_CHECKING:  # the CRF (scipy.sparse, 0.14 s) is imported only by a run that uses it
    from segbench.evaluation.crf import CRFParams

# The store fields each input modality reads besides the colour image.
MODALITY_FIELDS = {"rgb": (), "hha": ("hha",), "rgbd": ("depth",), "rgb_hha": ("hha",)}


class Predictor(NamedTuple):
    """A loaded net in eval mode with its input convention (``norm``), input modality and weights record
    (``segbench.weights.load_record``: name, classes, width, training metadata)."""

    model: torch.nn.Module
    norm: str
    modality: str
    record: dict

    @torch.no_grad()
    def labels(self, store: Store, index: int, device: torch.device, *, crf: CRFParams | None = None) -> np.ndarray:
        """uint8 H x W class indices (argmax of the first head's scores, or with ``crf`` the dense CRF's, its
        bandwidths scaled to the image) for sample ``index`` of ``store``."""
        scores = self.model(modality_input(store, [index], self.modality, self.norm).to(device)).float()
        heads = objective.heads_of(self.model, store.num_classes)
        main = losses.split_heads(scores, heads)[next(iter(heads))]
        if crf is not None:
            return crf_labels(main, [store.image(index)], crf)[0].astype(np.uint8)
        return main[0].argmax(0).to(torch.uint8).cpu().numpy()


def crf_labels(scores: torch.Tensor, images: list[np.ndarray], crf: CRFParams, *, scale: bool = True,
               used: dict | None = None) -> np.ndarray:
    """int64 B x H x W labels of the dense CRF on ``softmax(scores)`` (B x K x H x W) and ``images`` (uint8
    H x W x 3 RGB each), the spatial bandwidths scaled to each image's longer side if ``scale``. ``used``
    collects the parameters applied per image size ("HxW")."""
    from segbench.evaluation.crf import dense_crf, scaled

    labels = np.empty((scores.shape[0], *scores.shape[2:]), np.int64)
    for k, image in enumerate(images):
        params = scaled(crf, max(image.shape[:2])) if scale else crf
        if used is not None:
            used.setdefault("x".join(map(str, image.shape[:2])), dataclasses.asdict(params))
        labels[k] = dense_crf(torch.softmax(scores[k].float(), 0).cpu().numpy(), image, params=params).argmax(0)
    return labels


def load_for_store(weights: str | os.PathLike, store: Store, device: torch.device) -> Predictor:
    """The net at ``weights`` in eval mode on ``device``, ready to predict samples of ``store``.

    Raises if it predicts another number of classes than ``store`` has, or needs an input field the store
    lacks (an HHA net on a store without ``hha``).
    """
    model, record = load_model(weights)
    if record["num_classes"] != store.num_classes:
        raise ValueError(f"{weights} predicts {record['num_classes']} classes but {store.path} has "
                         f"{store.num_classes}: use a model trained on this dataset")
    meta = record["meta"]
    modality = meta.get("modality", "rgb")
    if modality not in MODALITIES:
        raise ValueError(f"{weights} records input modality {modality!r}; expected one of {sorted(MODALITIES)}")
    in_channels = record.get("in_channels", 3)
    if in_channels != MODALITIES[modality]:
        raise ValueError(f"{weights} takes {in_channels} input channels but its modality {modality!r} "
                         f"gives {MODALITIES[modality]}: the weights file is inconsistent, retrain the run")
    missing = [field for field in MODALITY_FIELDS[modality] if field not in store.fields]
    if missing:
        raise ValueError(f"{weights} takes {modality!r} input but {store.path} has no {missing} field "
                         f"(fields: {sorted(store.fields)}): use the store of the dataset it was trained on")
    return Predictor(model.to(device).eval(), meta.get("input_norm", "caffe"), modality, record)
