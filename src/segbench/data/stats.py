"""Per-dataset statistics as JSON: images per split, per-class pixel frequencies, classes absent per split."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from segbench.atomic import write_json
from segbench.data.store import Store


class StatsError(RuntimeError):
    """Image counts differ from the published ones, or the stores do not belong together."""


def split_stats(store: Store) -> dict:
    """Counts for one store: images, and per label field the pixels per class, their share, absent classes."""
    out = {"images": len(store), "fields": {}}
    label_fields = {"label": store.class_names}
    if "label_geo" in store.fields:
        label_fields["label_geo"] = list(store.attrs["geo_class_names"])
    for field, names in label_fields.items():
        counts = np.zeros(len(names), np.int64)
        void = 0
        for i in range(len(store)):
            lab = store.get(field, i)
            hist = np.bincount(lab.ravel(), minlength=256)
            if hist[len(names):255].any():
                bad = int(np.flatnonzero(hist[len(names):255])[0]) + len(names)
                raise StatsError(f"{store.path}: {field} of {store.ids[i]!r} has value {bad}, expected "
                                 f"0..{len(names) - 1} or 255; rerun the preprocess step")
            counts += hist[:len(names)]
            void += int(hist[255])
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
