"""The volumetric nets' losses and the per-class Dice metric (SEEDS-REFERENCE-2 §9.2, §10.2; pitfall 5 of §1).

Every function takes scores N x K x D x H x W (before softmax) and integer labels N x D x H x W, voxels labelled
``ignore_index`` (255: unlabelled) left out.

- ``dice_loss``: 1 - mean soft Dice over the classes, on softmax probabilities, per volume, averaged over the batch.
  ``form="squared"`` is the V-Net paper's D = 2 sum p g / (sum p^2 + sum g^2); ``"plain"`` the common soft Dice
  2 sum p g / (sum p + sum g) (UNet++'s code and most ports); ``"generalised"`` Sudre et al. 2017's, the classes
  weighted by 1 / (sum g)^2 inside one ratio. ``eps`` (1e-5, the official V-Net layer's) is added to the
  denominator; ``smooth`` (e.g. 1, the other convention) to numerator and denominator. The official layer's
  forward uses the *argmax* prediction (it reports Dice, it does not differentiate it); here the loss is soft
  throughout.
- ``sparse_cross_entropy``: 3D U-Net's weighted softmax cross-entropy: unlabelled voxels weigh 0 (they change
  neither the loss nor any gradient), the others their class weight; normalised by the summed weights.
- ``confusion`` / ``dice_from_confusion``: Dice per class 2 TP / (2 TP + FP + FN) from one confusion matrix; NaN
  where a class is in neither the prediction nor the labels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = 255
DICE_FORMS = ("squared", "plain", "generalised")
DICE_EPS = 1e-5  # faustomilletari/VNet pyLayer.py: dice = 2 I / (U + 0.00001)


def _check(scores: torch.Tensor, target: torch.Tensor) -> None:
    if scores.dim() < 3 or target.shape != scores.shape[:1] + scores.shape[2:]:
        raise ValueError(f"scores must be N x K x (spatial) and labels N x (spatial) with the same spatial size; got "
                         f"scores {tuple(scores.shape)} and labels {tuple(target.shape)}")


def _one_hot(target: torch.Tensor, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(one-hot N x K x ..., valid mask N x 1 x ...); ignored voxels are all-zero rows."""
    valid = target != ignore_index
    bad = target[valid & ((target < 0) | (target >= num_classes))]
    if bad.numel():
        raise ValueError(f"labels must be in [0, {num_classes - 1}] or {ignore_index} (ignored); got "
                         f"{sorted(set(bad.tolist()))[:5]}")
    hot = F.one_hot(torch.where(valid, target, 0).long(), num_classes).movedim(-1, 1).to(torch.float32)
    mask = valid.unsqueeze(1).to(torch.float32)
    return hot * mask, mask


def dice_loss(scores: torch.Tensor, target: torch.Tensor, *, form: str = "squared", eps: float = DICE_EPS,
              smooth: float = 0.0, include_background: bool = False, ignore_index: int = IGNORE) -> torch.Tensor:
    """1 - soft Dice of ``softmax(scores)`` against ``target`` (see the module docstring), a scalar.

    Per volume and class (the foreground classes 1..K-1 unless ``include_background``; with K = 1 nothing is
    left, so K >= 2), averaged over classes (``generalised``: one weighted ratio) and then over the batch.
    A perfect one-hot prediction of a class present in the volume has Dice 1.
    """
    _check(scores, target)
    if form not in DICE_FORMS:
        raise ValueError(f"form must be one of {DICE_FORMS}, got {form!r}")
    k = scores.shape[1]
    if k < 2:
        raise ValueError(f"dice_loss needs K >= 2 classes (softmax over background and foreground), got K = {k}")
    g, mask = _one_hot(target, k, ignore_index)
    p = torch.softmax(scores.float(), dim=1) * mask
    if not include_background:
        p, g = p[:, 1:], g[:, 1:]
    axes = tuple(range(2, scores.dim()))
    intersection = (p * g).sum(axes)  # N x K'
    if form == "squared":
        union = (p * p).sum(axes) + (g * g).sum(axes)
    else:
        union = p.sum(axes) + g.sum(axes)
    if form == "generalised":
        w = 1.0 / g.sum(axes).clamp(min=1.0) ** 2  # Sudre et al.; absent classes weigh as a one-voxel class
        dice = (2 * (w * intersection).sum(1) + smooth) / ((w * union).sum(1) + smooth + eps)
        return 1.0 - dice.mean()
    dice = (2 * intersection + smooth) / (union + smooth + eps)
    return 1.0 - dice.mean()


def sparse_cross_entropy(scores: torch.Tensor, target: torch.Tensor, *, class_weights=None,
                         ignore_index: int = IGNORE) -> torch.Tensor:
    """3D U-Net's weighted softmax cross-entropy, a scalar: sum over labelled voxels of w[label] x CE, divided
    by the sum of their weights; unlabelled voxels (``ignore_index``) weigh 0. ``class_weights``: K weights
    (None: all 1). Raises when no voxel is labelled (the loss would be 0 / 0)."""
    _check(scores, target)
    k = scores.shape[1]
    weights = torch.ones(k, device=scores.device) if class_weights is None else \
        torch.as_tensor(class_weights, dtype=torch.float32, device=scores.device)
    if weights.shape != (k,) or bool((weights < 0).any()):
        raise ValueError(f"class_weights must be {k} non-negative numbers, got {class_weights!r}")
    valid = target != ignore_index
    safe = torch.where(valid, target, 0).long()
    ce = F.cross_entropy(scores.float(), safe, reduction="none")  # N x (spatial)
    w = weights[safe] * valid
    total = w.sum()
    if not total > 0:
        raise ValueError("no labelled voxel with a positive weight in this batch: the sparse loss is undefined")
    return (w * ce).sum() / total


def confusion(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int, *,
              ignore_index: int = IGNORE) -> np.ndarray:
    """K x K counts (rows: label, columns: prediction) over the voxels whose label is not ``ignore_index``."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction and labels differ in size: {pred.size} vs {target.size} voxels")
    keep = target != ignore_index
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    if t.size and (t.max() >= num_classes or t.min() < 0 or p.max() >= num_classes or p.min() < 0):
        raise ValueError(f"labels and predictions must be in [0, {num_classes - 1}]")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def dice_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Dice per class, 2 TP / (2 TP + FP + FN); NaN for a class absent from labels and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denominator = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / denominator, np.nan)
