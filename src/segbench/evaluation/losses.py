"""Per-pixel segmentation losses and the paper's loss sampling ("patch sampling", section 3.4).

    keep = sampling_mask(tuple(target.shape), 0.5, generator=g)        # N x H x W bool, whole 32x32 cells
    loss = segmentation_loss(scores, target, reduction="sum", keep=keep)

Loss sampling makes "an independent choice to ignore each final layer cell with some probability 1 - p":
a cell is one stride-32 output unit, so pixel (y, x) belongs to cell (y // 32, x // 32) and all its pixels
are kept or dropped together. Dropped pixels are treated exactly like the ignore label 255.

Normalisation follows Caffe's ``SoftmaxWithLoss``: ``"sum"`` is ``normalize: false`` (the sum over valid
pixels divided by the batch size N; the FCN reference nets, which pair it with lr 1e-10) and ``"mean"`` is
``normalize: true`` (the mean over valid pixels; FCN-AlexNet and the paper's batch-20 recipe).
With loss sampling the training loop draws N = base batch / p images; the mean then covers the same
expected number of pixels as whole-image training, but the ``"sum"`` divided by N is p times smaller (so
is its gradient): divide it by p, i.e. by the base batch, to keep the effective batch fixed.

Multi-headed nets (SIFT Flow's semantic + geometric FCN) concatenate their heads' scores along channels;
``multi_head_loss`` sums one ``segmentation_loss`` per head, each against its own labels.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "mean")
IGNORE_INDEX = 255


def sampling_mask(shape: tuple[int, int, int], p: float, *, cell: int = 32,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli(p) keep-mask over final-layer cells, expanded to pixels: bool N x H x W (CPU).

    ``shape`` is the target's (N, H, W). Each image draws its own ceil(H / cell) x ceil(W / cell) cells
    (border cells are partial). ``p == 1`` returns all True *without* drawing from ``generator``, so
    whole-image training consumes no random numbers and stays bit-identical to training without a mask.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be the target's (N, H, W), got {tuple(shape)}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"the keep probability p must be in (0, 1], got {p}")
    if cell < 1:
        raise ValueError(f"cell must be a positive number of pixels (32 = FCN's output stride), got {cell}")
    n, h, w = shape
    if p == 1.0:
        return torch.ones(n, h, w, dtype=torch.bool)
    cells = torch.rand(n, -(-h // cell), -(-w // cell), generator=generator) < p
    return cells.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)[:, :h, :w].contiguous()


def _cross_entropy(scores: torch.Tensor, target: torch.Tensor, *, reduction: str, gamma: float,
                   ignore_index: int) -> torch.Tensor:
    # torch's own kernel, so that an all-True mask gives exactly F.cross_entropy's result
    return F.cross_entropy(scores, target, ignore_index=ignore_index, reduction=reduction)


def _focal(scores: torch.Tensor, target: torch.Tensor, *, reduction: str, gamma: float,
           ignore_index: int) -> torch.Tensor:
    """Lin et al. 2017: FL = -(1 - p_t)^gamma log p_t, over the pixels whose label is not ``ignore_index``."""
    valid = target != ignore_index
    log_pt = F.log_softmax(scores.float(), dim=1).gather(1, target.where(valid, 0).unsqueeze(1)).squeeze(1)
    # -expm1 is 1 - p_t without cancellation; the floor keeps the gradient of x^gamma finite (gamma < 1)
    # where p_t rounds to 1, and changes nothing else (tiny^0 = 1, tiny^gamma underflows to 0 for gamma >= 1)
    weight = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny).pow(gamma)
    per_pixel = -(weight * log_pt) * valid
    if reduction == "none":  # per pixel, 0 where ignored (segmentation_loss's pixel_weights)
        return per_pixel
    if reduction == "sum":
        return per_pixel.sum()
    return per_pixel.sum() / valid.sum()


CRITERIA: dict[str, Callable[..., torch.Tensor]] = {"cross_entropy": _cross_entropy, "focal": _focal}


def segmentation_loss(scores: torch.Tensor, target: torch.Tensor, *, reduction: str = "sum",
                      criterion: str = "cross_entropy", gamma: float = 2.0, keep: torch.Tensor | None = None,
                      pixel_weights: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Scalar loss of scores N x C x H x W against int64 labels N x H x W.

    Pixels labelled ``ignore_index`` and pixels where ``keep`` (bool N x H x W) is False do not count.
    ``reduction="sum"``: summed over valid pixels, divided by N (Caffe ``normalize: false``);
    ``"mean"``: mean over valid pixels. With ``keep`` None or all True, cross-entropy equals
    ``F.cross_entropy(scores, target, ignore_index=255, reduction="sum") / N`` (resp. ``"mean"``) bit for bit.
    ``criterion="focal"`` weights each pixel by ``(1 - p_t) ** gamma``; gamma = 0 is cross-entropy.
    ``pixel_weights`` (float N x H x W, e.g. ``unet_weight_map``) multiplies each valid pixel's loss; the
    reductions still divide by N, resp. the number of valid pixels. With no valid pixel the loss is 0 and
    its gradient is zero (never NaN).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {sorted(CRITERIA)}")
    if gamma < 0:
        raise ValueError(f"the focal loss exponent gamma must be >= 0, got {gamma}")
    if scores.dim() != 4 or target.shape != (scores.shape[0], *scores.shape[2:]):
        raise ValueError(f"expected scores N x C x H x W and target N x H x W, got {tuple(scores.shape)} and "
                         f"{tuple(target.shape)}: crop or upsample the scores to the label size first")
    if target.dtype != torch.int64:
        raise TypeError(f"target must be int64 class indices (255 = ignore), got {target.dtype}")
    if keep is not None:
        if keep.dtype != torch.bool or keep.shape != target.shape:
            raise ValueError(f"keep must be a bool mask shaped like the target {tuple(target.shape)}, got "
                             f"{keep.dtype} {tuple(keep.shape)} (see sampling_mask)")
        target = target.masked_fill(~keep.to(target.device), ignore_index)
    if not (target != ignore_index).any():
        return scores.sum() * 0.0  # keeps the graph (and a zero gradient) where the mean would be 0 / 0
    if pixel_weights is not None:
        if pixel_weights.shape != target.shape:
            raise ValueError(f"pixel_weights must be shaped like the target {tuple(target.shape)}, got "
                             f"{tuple(pixel_weights.shape)} (see unet_weight_map)")
        valid = target != ignore_index
        per_pixel = CRITERIA[criterion](scores, target, reduction="none", gamma=gamma, ignore_index=ignore_index)
        weighted = (per_pixel * pixel_weights.to(per_pixel.device) * valid).sum()
        return weighted / scores.shape[0] if reduction == "sum" else weighted / valid.sum()
    loss = CRITERIA[criterion](scores, target, reduction=reduction, gamma=gamma, ignore_index=ignore_index)
    return loss / scores.shape[0] if reduction == "sum" else loss


def constant_prediction_loss(class_pixels, *, reduction: str, images: int) -> float:
    """Cross-entropy of the best prediction that ignores the image: every pixel gets the class frequencies.

    ``class_pixels`` counts the valid pixels of each class over a split of ``images`` images. With
    ``reduction="mean"`` the loss is the entropy -sum f log f of the frequencies f; with ``"sum"`` (Caffe's
    unnormalised loss, per image) it is that entropy times the mean number of valid pixels per image. A
    net whose loss stays above it has learned nothing beyond the class prior (a net predicting background
    everywhere with full confidence does worse still).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    counts = torch.as_tensor(class_pixels, dtype=torch.float64)
    total = float(counts.sum())
    if total <= 0 or images < 1:
        raise ValueError(f"need a split with labelled pixels; got {total:g} pixels in {images} images")
    freq = counts[counts > 0] / total
    entropy = float(-(freq * freq.log()).sum())
    return entropy if reduction == "mean" else entropy * total / images


def unet_weight_map(label: np.ndarray | torch.Tensor, *, w0: float = 10.0, sigma: float = 5.0, background: int = 0,
                    instances: np.ndarray | torch.Tensor | None = None,
                    ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """U-Net's per-pixel loss weights (Ronneberger et al. 2015, Eq. 2) for one label map H x W: float32 H x W.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``. ``w_c`` balances the classes (the paper
    does not give its form): every class present gets the same total weight, ``n_valid / (n_classes *
    count(class))``, so the weights average 1 over the labelled pixels. ``d1``, ``d2`` are the distances to
    the nearest and second-nearest cell; the border term applies to ``background`` pixels only (the gaps
    that separate touching cells, Fig. 3d) and needs at least two cells. Cells are ``instances`` (H x W ints,
    0 = none) when given, else the 4-connected components of each non-background class. Pixels labelled
    ``ignore_index`` weigh 0. Computed once per ground-truth map, before training (scipy, CPU).
    """
    from scipy import ndimage  # here, not at the top: only U-Net's weighted loss needs it (0.2 s of a job's start)
    label = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label)
    if label.ndim != 2:
        raise ValueError(f"expected one H x W label map, got shape {label.shape}")
    valid = label != ignore_index
    classes, counts = np.unique(label[valid], return_counts=True)
    weights = np.zeros(label.shape, dtype=np.float64)
    for c, n in zip(classes, counts):
        weights[label == c] = valid.sum() / (len(classes) * n)
    if instances is None:
        instances = np.zeros(label.shape, dtype=np.int64)
        for c in classes[classes != background]:
            components, _ = ndimage.label(label == c)
            instances[components > 0] = components[components > 0] + instances.max()
    else:
        instances = np.asarray(instances.cpu() if isinstance(instances, torch.Tensor) else instances)
        if instances.shape != label.shape:
            raise ValueError(f"instances {instances.shape} must have the label's shape {label.shape}")
    cells = np.unique(instances[instances > 0])
    if len(cells) >= 2:
        distances = np.stack([ndimage.distance_transform_edt(instances != k) for k in cells])
        d1, d2 = np.partition(distances, 1, axis=0)[:2]
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma ** 2))
        weights += np.where((label == background) & valid, border, 0.0)
    return torch.from_numpy(weights.astype(np.float32))


def split_heads(scores: torch.Tensor, heads: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Scores N x sum(heads) x H x W of a multi-headed net -> {field: N x heads[field] x H x W}, in ``heads`` order."""
    if scores.dim() != 4 or scores.shape[1] != sum(heads.values()):
        raise ValueError(f"expected N x {sum(heads.values())} x H x W scores for heads {dict(heads)}, got "
                         f"{tuple(scores.shape)}")
    return dict(zip(heads, torch.split(scores, list(heads.values()), dim=1)))


def multi_head_loss(scores: torch.Tensor, targets: Mapping[str, torch.Tensor], heads: Mapping[str, int], *,
                    reduction: str = "sum", criterion: str = "cross_entropy", gamma: float = 2.0,
                    keep: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The sum over heads of ``segmentation_loss`` of each head's channels against its own labels.

    ``heads`` is a model's ``heads`` (e.g. SIFT Flow's ``{"label": 33, "label_geo": 3}``, the channel
    order of ``scores``); ``targets`` maps each of its fields to int64 N x H x W labels (255 = ignore).
    Every head's loss has weight 1, as the reference's ``loss`` and ``loss_geo``; ``reduction``,
    ``criterion``, ``gamma`` and ``keep`` (the same cells dropped for every head) are those of
    ``segmentation_loss``.
    """
    missing = [field for field in heads if field not in targets]
    if missing:
        raise ValueError(f"no targets for heads {missing}; got targets for {sorted(targets)}")
    return sum(segmentation_loss(part, targets[field], reduction=reduction, criterion=criterion, gamma=gamma,
                                 keep=keep, ignore_index=ignore_index)
               for field, part in split_heads(scores, heads).items())
