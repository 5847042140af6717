"""What a segmentation net is trained and scored against: its heads, its auxiliary outputs and the loss.

    heads = heads_of(model, num_classes)         # {"label": 21}; SIFT Flow's net {"label": 33, "label_geo": 3}
    for indices in batches_by_shape(store, indices, batch_size): ...
    y = targets(store, indices, heads)            # {field: int64 N x H x W}
    loss = training_loss(model, x, y, heads, reduction="mean", ...)

A net's ``forward(x)`` returns the scores of its heads concatenated along channels (one head for most nets);
PSPNet, ICNet, UNet++ and the dilated-ResNet heads also have ``forward_with_aux(x) -> (scores, {name: (output,
weight)})`` (training only; evaluation scores the main output). An output is either scores at their own size,
whose loss is computed against the main labels resized by nearest neighbour, or a loss of its own: a callable
``loss(labels, *, reduction) -> scalar`` given the main labels (N x H x W, 255 = ignore) at full size (GINet's
semantic context loss, HDNet's feature-distance loss). Either is added with its weight. The model's
``aux_weights`` name only the score outputs: a loss of its own has no constant-prediction floor of the
segmentation kind, so ``train._finish`` counts it with floor 0.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F

from segbench.data.store import Store
from segbench.data.tensors import to_target
from segbench.evaluation import losses


def heads_of(model: torch.nn.Module, num_classes: int) -> dict[str, int]:
    """The store field each head predicts and its class count: ``model.heads``, else ``{"label": num_classes}``."""
    return dict(getattr(model, "heads", None) or {"label": num_classes})


def batches_by_shape(store: Store, indices: Iterable[int], batch_size: int) -> list[list[int]]:
    """``indices`` grouped by image size (``Store.by_size``), then cut into batches of ``batch_size``."""
    return [g[k:k + batch_size] for g in store.by_size(indices).values() for k in range(0, len(g), batch_size)]


def targets(store: Store, indices: list[int], heads: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """int64 N x H x W labels (255 = ignore) of every head's field for samples ``indices``."""
    return {field: to_target([store.get(field, i) for i in indices]) for field in heads}


def _resized(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


def training_loss(model: torch.nn.Module, x: torch.Tensor, y: Mapping[str, torch.Tensor], heads: Mapping[str, int], *,
                  reduction: str, criterion: str = "cross_entropy", gamma: float = 2.0,
                  keep: torch.Tensor | None = None, pixel_weights: torch.Tensor | None = None,
                  autocast=None) -> torch.Tensor:
    """The training loss of ``model`` on ``x``: the heads' losses summed (weight 1 each) plus the weighted
    auxiliary losses. ``keep`` (loss sampling) applies to the heads, ``pixel_weights`` (N x H x W, U-Net's
    weighted loss) to a single head, ``criterion`` and ``gamma`` to the score outputs, not to the losses of
    their own (which take only ``reduction``); ``autocast`` is the context manager of the forward pass (e.g.
    ``precision.autocast``; the loss itself is computed in float32)."""
    with autocast if autocast is not None else nullcontext():
        if hasattr(model, "forward_with_aux"):
            scores, aux = model.forward_with_aux(x)
        else:
            scores, aux = model(x), {}
    if len(heads) == 1:
        field = next(iter(heads))
        loss = losses.segmentation_loss(scores.float(), y[field], reduction=reduction, criterion=criterion,
                                        gamma=gamma, keep=keep, pixel_weights=pixel_weights)
    elif pixel_weights is not None:
        raise ValueError(f"per-pixel loss weights are for single-headed nets; this one has heads {dict(heads)}")
    else:
        loss = losses.multi_head_loss(scores.float(), y, heads, reduction=reduction, criterion=criterion,
                                      gamma=gamma, keep=keep)
    main = y[next(iter(heads))]
    for output, weight in aux.values():
        if callable(output):  # a loss of its own (tensors are not callable): it sees the full-size main labels
            loss = loss + weight * output(main, reduction=reduction)
            continue
        loss = loss + weight * losses.segmentation_loss(output.float(), _resized(main, output.shape[-2:]),
                                                        reduction=reduction, criterion=criterion, gamma=gamma)
    return loss
