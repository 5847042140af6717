"""Per-dataset statistics as JSON: images per split, per-class pixel frequencies, classes absent per split;
and the per-modality input means that the preprocessing steps store (``mean_bgr``, ``mean_logdepth``,
``mean_hha``), each over every pixel of the training split's images.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from segbench.data.store import Store
from segbench.errors import SegbenchError
from segbench.infra.atomic import write_json


class StatsError(SegbenchError):
    """Image counts differ from the published ones, or the stores do not belong together."""


def class_pixels(store: Store, field: str, num_classes: int) -> tuple[np.ndarray, int]:
    """Pixels per class 0..num_classes-1 of label ``field`` over every sample of ``store``, and the void (255)
    pixels; a label holding any other value raises ``StatsError`` naming the sample."""
    counts = np.zeros(num_classes, np.int64)
    void = 0
    for i in range(len(store)):
        hist = np.bincount(store.get(field, i).ravel(), minlength=256)
        if hist[num_classes:255].any():
            bad = int(np.flatnonzero(hist[num_classes:255])[0]) + num_classes
            raise StatsError(f"{store.path}: {field} of {store.ids[i]!r} has value {bad}, expected "
                             f"0..{num_classes - 1} or 255; rerun the preprocess step")
        counts += hist[:num_classes]
        void += int(hist[255])
    return counts, void


def split_stats(store: Store) -> dict:
    """Counts for one store: images, and per label field the pixels per class, their share, absent classes."""
    out = {"images": len(store), "fields": {}}
    label_fields = {"label": store.class_names}
    if "label_geo" in store.fields:
        label_fields["label_geo"] = list(store.attrs["geo_class_names"])
    for field, names in label_fields.items():
        counts, void = class_pixels(store, field, len(names))
        total = int(counts.sum())
        out["fields"][field] = {
            "pixels": {n: int(c) for n, c in zip(names, counts)},
            "frequency": {n: (float(c) / total if total else 0.0) for n, c in zip(names, counts)},
            "void_pixels": void,
            "absent": [n for n, c in zip(names, counts) if c == 0],
        }
    return out


def dataset_stats(store_paths: Sequence[str | os.PathLike], out_json: str | os.PathLike, *,
                  expected_counts: Mapping[str, int] | None = None) -> dict:
    """Statistics of the splits of one dataset, written to ``out_json`` (atomically) and returned.

    ``store_paths``: one store per split (the split name comes from each store's attrs).
    ``expected_counts``: published images per split (real data); any difference raises
    :class:`StatsError` and writes nothing.
    """
    stores = [Store(p) for p in store_paths]
    datasets = {s.attrs["dataset"] for s in stores}
    if len(datasets) != 1:
        raise StatsError(f"stores {[str(s.path) for s in stores]} come from different datasets {sorted(datasets)}")
    splits = {s.attrs["split"]: split_stats(s) for s in stores}
    if expected_counts is not None:
        got = {name: splits[name]["images"] if name in splits else None for name in expected_counts}
        if got != dict(expected_counts):
            raise StatsError(f"{datasets.pop()}: images per split {got}, published {dict(expected_counts)}; "
                             "the downloaded data is incomplete or not the published release")
    result = {"dataset": datasets.pop(), "class_names": stores[0].class_names, "splits": splits}
    write_json(out_json, result)
    return result


def channel_means(images: Iterable[np.ndarray]) -> list[float]:
    """Per-channel mean of H x W x C images over all their pixels (every pixel weighs the same), in channel order."""
    total, count = None, 0
    for image in images:
        flat = np.asarray(image, dtype=np.float64).reshape(-1, image.shape[-1])
        total = flat.sum(0) if total is None else total + flat.sum(0)
        count += flat.shape[0]
    if not count:
        raise ValueError("no pixels to average: the split is empty")
    return [float(v) for v in total / count]


def mean_bgr(images: Iterable[np.ndarray]) -> list[float]:
    """Mean colour of uint8 H x W x 3 RGB images, in BGR order (the caffe input convention)."""
    return channel_means(images)[::-1]


def log_depth(depth_m: np.ndarray) -> np.ndarray:
    """float64 log of the depth in millimetres, as the reference feeds depth (``np.log`` of Gupta's uint16 mm
    PNGs). Depths under 1 mm (missing; the filled depth has none) count as 1 mm, so the log stays finite."""
    return np.log(np.maximum(np.asarray(depth_m, dtype=np.float64) * 1000.0, 1.0))


def mean_log_depth(depths_m: Iterable[np.ndarray]) -> float:
    """Mean of ``log_depth`` over every pixel of H x W depth maps in metres (7.844 for real NYUDv2 train)."""
    return channel_means(log_depth(d)[..., None] for d in depths_m)[0]
