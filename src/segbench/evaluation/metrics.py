"""The FCN metric protocol (``score.py``): everything from one dataset-level confusion matrix.

Rows of the confusion matrix are ground truth, columns predictions. Pixels whose ground truth is outside
0..n-1 (255 = void) are ignored. Per-class ratios are averaged with ``nanmean``: a class absent from the
ground truth and never predicted gives 0/0 = NaN and is skipped; a class absent from the ground truth but
predicted somewhere gives IU = 0 and counts, as in ``score.py``.
"""

from __future__ import annotations

import numpy as np

# The paper's four metrics: result key and column header
METRICS = (("pixel_acc", "pixel acc."), ("mean_acc", "mean acc."), ("mean_iu", "mean IU"), ("fw_iu", "f.w. IU"))


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """int64 (n, n) histogram of (ground truth, prediction) pairs over the valid pixels of ``gt``.

    ``gt`` and ``pred`` are integer arrays of the same shape; ``ignore_index`` and any other value
    outside 0..n-1 in ``gt`` is skipped. A prediction outside 0..n-1 is an error.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has shape {gt.shape} but prediction has shape {pred.shape}")
    n = int(num_classes)
    valid = (gt >= 0) & (gt < n)
    if ignore_index is not None:
        valid &= gt != ignore_index
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n):
        raise ValueError(f"predictions must lie in 0..{n - 1}, got values in {p.min()}..{p.max()}")
    return np.bincount(n * g + p, minlength=n * n).reshape(n, n).astype(np.int64)


def scores(hist: np.ndarray, classes: np.ndarray | None = None) -> dict:
    """Pixel accuracy, mean accuracy, mean IU and frequency-weighted IU of a confusion matrix.

    Returns fractions in [0, 1]: ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu`` and ``per_class_iu``
    (a list, NaN for a class absent from both ground truth and prediction). ``classes`` optionally
    restricts the means to a subset of class indices, e.g. SIFT Flow's classes present in the test
    ground truth (paper footnote 9).
    """
    hist = np.asarray(hist, dtype=np.float64)
    diag = np.diag(hist)
    gt_count = hist.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc_per_class = diag / gt_count
        iu = diag / (gt_count + hist.sum(0) - diag)
        total = hist.sum()
        pixel_acc = diag.sum() / total if total else float("nan")
    selected = np.arange(len(diag)) if classes is None else np.asarray(classes, dtype=np.int64)
    freq = gt_count / total if total else np.zeros_like(gt_count)
    present = selected[freq[selected] > 0]
    return {
        "pixel_acc": float(pixel_acc),
        "mean_acc": float(_nanmean(acc_per_class[selected])),
        "mean_iu": float(_nanmean(iu[selected])),
        "fw_iu": float((freq[present] * iu[present]).sum()),
        "per_class_iu": [float(v) for v in iu],
    }


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")
