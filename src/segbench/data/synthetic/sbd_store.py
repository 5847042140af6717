"""A store at the real data's scale, written straight from synthetic scenes, for memory and I/O measurements.

The embedded default's VOC twin is 96 x 96; the real SBD train split that FCN trains on has 8,498 images of
at most 500 x 500, mostly 500 x 375 (landscape) or 375 x 500 (portrait). :func:`write_sbd_like_store` writes
a store with that shape distribution: scenes of :func:`~segbench.data.synthetic.objects.render_scene` cropped to
500 x 375 (two in three) or 375 x 500, passed through JPEG (quality 90) and decoded, as preprocessing decodes
the real JPEGs. The round trip matters for the figures: a decoded JPEG compresses like a photograph (gzip
level 1 to about 0.74 of its size here, a real photograph to about 0.70), while the raw rendered scene, with
its synthetic sensor noise, hardly compresses (0.89). Labels are SBD-like: no void borders.
"""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from segbench.data.store import write_store
from segbench.data.synthetic.objects import render_scene
from segbench.data.voc import CLASS_NAMES, MEAN_BGR
from segbench.infra.progress import progress_bar

SBD_TRAIN_IMAGES = 8498  # SBD train, FCN's training split
LONG_SIDE, SHORT_SIDE = 500, 375
JPEG_QUALITY = 90


def sbd_like_samples(n: int, *, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` pairs of a uint8 image (375 x 500 x 3 or 500 x 375 x 3, RGB) and its uint8 label (H x W, 0..20)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        image, label = render_scene(rng, LONG_SIDE)
        keep = (slice(0, SHORT_SIDE), slice(None)) if rng.random() < 2 / 3 else (slice(None), slice(0, SHORT_SIDE))
        buffer = io.BytesIO()
        Image.fromarray(image[keep]).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        buffer.seek(0)
        yield np.asarray(Image.open(buffer).convert("RGB")), np.ascontiguousarray(label[keep])


def write_sbd_like_store(path: str | os.PathLike, *, n: int = SBD_TRAIN_IMAGES, seed: int = 0,
                         progress: bool = False) -> Path:
    """Write a VOC-layout store of ``n`` SBD-like samples (fields ``image``, ``label``) to ``path``.

    Streams: one sample is in memory at a time. About 40 ms per sample on one core (rendering and JPEG).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    samples = progress_bar(sbd_like_samples(n, seed=seed), total=n, desc="SBD-like store", disable=not progress)
    images, labels = itertools.tee(samples)  # consumed in step by write_store: one sample buffered
    ids = [f"{2008 + k % 4}_{k:06d}" for k in range(n)]
    fields = {"image": (image for image, _ in images), "label": (label for _, label in labels)}
    attrs = {"mean_bgr": list(MEAN_BGR), "source": f"synthetic SBD-like, {n} images, seed {seed}"}
    return write_store(path, dataset="voc", split="train", ids=ids, fields=fields, class_names=CLASS_NAMES,
                       attrs=attrs)
