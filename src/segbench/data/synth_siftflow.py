"""A small synthetic SIFT Flow in the layout of the extracted ``SiftFlowDataset.zip``.

Outdoor scenes of 256 x 256: sky above a horizon, a ground class below, vertical objects standing on
the ground. Geometric labels follow from the semantic ones (sky / horizontal / vertical). Like the
real release it has two images without annotation files, and ``cow``, ``desert`` and ``moon`` occur
only in training images, so the test ground truth lacks them. Written: ``Images/<sub>/<id>.jpg``,
``SemanticLabels/<sub>/<id>.mat`` and ``GeoLabels/<sub>/<id>.mat`` (key ``S``), and ``TestSet1.txt``
with Windows-style paths and CRLF line ends as in the original.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from segbench.atomic import replacing
from segbench.data.siftflow import CLASSES, REAL_ABSENT_FROM_TEST, SUBDIR

SIZE = 256
SKY, SUN, MOON = "sky", "sun", "moon"
GROUND = ("road", "grass", "sand", "sea", "field", "sidewalk", "river", "crosswalk")
OBJECTS = ("building", "tree", "car", "person", "pole", "sign", "mountain", "rock", "fence", "bus", "plant",
           "boat", "bridge", "window", "door", "awning", "balcony", "staircase", "streetlight", "bird")
GEO_OF = {SKY: 1, SUN: 1, MOON: 1, "bird": 1, **{g: 2 for g in GROUND + ("desert",)}}  # the rest: vertical (3)
GEO_LUT = np.array([-1] + [GEO_OF.get(c, 3) for c in CLASSES])  # semantic 0..33 -> geometric, void -> -1
CATEGORIES = ("coast_natu", "forest_natu", "highway_bost", "insidecity_art", "mountain_nat", "opencountry_land",
              "street_urb", "tallbuilding_art")


def write_twin(out_dir: str | os.PathLike, *, n_train: int = 24, n_test: int = 8, seed: int = 0) -> Path:
    """Write ``n_train`` annotated training images, 2 unannotated ones, and ``n_test`` test images."""
    if n_train < len(REAL_ABSENT_FROM_TEST) or n_test < 1:
        raise ValueError(f"need n_train >= {len(REAL_ABSENT_FROM_TEST)} (one image per train-only class) "
                         f"and n_test >= 1, got n_train={n_train}, n_test={n_test}")
    out_dir = Path(out_dir)
    for top in ("Images", "SemanticLabels", "GeoLabels"):
        (out_dir / top / SUBDIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + 2 + n_test
    ids = [f"{CATEGORIES[i % len(CATEGORIES)]}{100 + 7 * i}" for i in range(n)]
    order = rng.permutation(n)
    test_ids = [ids[i] for i in sorted(order[:n_test])]
    train_ids = [ids[i] for i in sorted(order[n_test:])]
    unannotated = set(train_ids[:2])
    train_only = [i for i in train_ids if i not in unannotated][:len(REAL_ABSENT_FROM_TEST)]
    for sample_id in ids:
        extra = REAL_ABSENT_FROM_TEST[train_only.index(sample_id)] if sample_id in train_only else None
        image, sem = _scene(rng, extra=extra)
        _save_jpg(out_dir / "Images" / SUBDIR / f"{sample_id}.jpg", image)
        if sample_id in unannotated:
            continue
        geo = GEO_LUT[sem]
        _save_mat(out_dir / "SemanticLabels" / SUBDIR / f"{sample_id}.mat", sem.astype(np.float64))
        _save_mat(out_dir / "GeoLabels" / SUBDIR / f"{sample_id}.mat", geo.astype(np.float64))
    listing = "\r\n".join(f"{SUBDIR}\\{i}.jpg" for i in test_ids) + "\r\n"
    with replacing(out_dir / "TestSet1.txt") as tmp:  # written last: its presence means the twin is complete
        tmp.write_bytes(listing.encode("ascii"))
    return out_dir


def _scene(rng: np.random.Generator, *, extra: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 256x256x3 image, int 256x256 semantic labels 0..33) with a few void seams."""
    cls = {name: CLASSES.index(name) + 1 for name in CLASSES}
    palette = np.random.default_rng(1).integers(30, 230, (len(CLASSES) + 1, 3))  # fixed colour per class
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    horizon = rng.integers(70, 170) + (rng.uniform(-0.2, 0.2) * (xx - SIZE / 2)).astype(int)
    ground = extra if extra == "desert" else GROUND[rng.integers(len(GROUND))]
    sem = np.where(yy < horizon, cls[SKY], cls[ground])
    light = MOON if extra == "moon" else (SUN if rng.random() < 0.3 else None)
    if light:
        cy, cx = rng.integers(15, 50), rng.integers(30, SIZE - 30)
        sem[((yy - cy) ** 2 + (xx - cx) ** 2 < 12 ** 2) & (yy < horizon)] = cls[light]
    kinds = [OBJECTS[k] for k in rng.integers(len(OBJECTS), size=rng.integers(1, 4))]
    if extra == "cow":
        kinds.append("cow")
    for kind in kinds:
        w, h = rng.integers(20, 90), rng.integers(20, 120)
        x0 = rng.integers(0, SIZE - w)
        base = int(np.clip(horizon[0, x0] + rng.integers(5, 60), h, SIZE))
        sem[base - h:base, x0:x0 + w] = cls[kind]
    seam = np.zeros_like(sem, bool)
    seam[:, 1:] |= sem[:, 1:] != sem[:, :-1]
    seam[1:, :] |= sem[1:, :] != sem[:-1, :]
    sem[seam & (rng.random(sem.shape) < 0.7)] = 0
    image = palette[sem] * (0.8 + 0.2 * yy[..., None] / SIZE) + rng.normal(0, 6, (SIZE, SIZE, 3))
    return np.clip(image, 0, 255).astype(np.uint8), sem


def _save_jpg(path: Path, image: np.ndarray) -> None:
    with replacing(path) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=90)


def _save_mat(path: Path, s: np.ndarray) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        scipy.io.savemat(fh, {"S": s}, format="5", do_compression=True)
