"""SIFT Flow (Liu et al.; Tighe & Lazebnik's release): 33 semantic and 3 geometric classes, 256 x 256.

Layout of ``SiftFlowDataset.zip`` as extracted (its root may sit one folder down)::

    Images/spatial_envelope_256x256_static_8outdoorcategories/<id>.jpg
    SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat   ['S'], 0 = void, 1..33
    GeoLabels/spatial_envelope_256x256_static_8outdoorcategories/<id>.mat        ['S'], -1 = void, 1..3
    TestSet1.txt   the 200 test images, one per line as
                   ``spatial_envelope_256x256_static_8outdoorcategories\\<id>.jpg``

Splits: test = TestSet1.txt; trainval = every other image that has annotations (2,488 images, of
which ``highway_bost181`` and ``street_urb506`` have none: 2,486, FCN's ``trainval.txt``). FCN's own
lists ``trainval.txt`` / ``test.txt`` (one id per line, no trailing newline) are used instead when
they are present in the root. Labels follow FCN's data layer: uint8 minus 1, so void becomes 255
(geometric -1 is first set to 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from segbench.data import stats
from segbench.data.store import write_store
from segbench.errors import SegbenchError
from segbench.infra.progress import progress_bar

SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"
CLASSES = ("awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk", "desert",
           "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole", "river", "road", "rock",
           "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree", "window")
GEO_CLASSES = ("sky", "horizontal", "vertical")
REAL_COUNTS = {"trainval": 2486, "test": 200}
REAL_ABSENT_FROM_TEST = ("cow", "desert", "moon")


class SiftFlowError(SegbenchError):
    """A SIFT Flow input file is missing, unreadable or has values outside the label range."""


def find_root(raw_dir: str | os.PathLike) -> Path:
    """The folder holding ``Images/``: ``raw_dir`` itself or its single sub-folder that has it."""
    raw_dir = Path(raw_dir)
    for cand in [raw_dir, *sorted(p for p in raw_dir.glob("*") if p.is_dir())]:
        if (cand / "Images" / SUBDIR).is_dir():
            return cand
    raise SiftFlowError(f"no Images/{SUBDIR}/ under {raw_dir} or its sub-folders: extract SiftFlowDataset.zip "
                        "there (the download step does) or write the synth_siftflow twin")


def read_list(path: Path) -> list[str]:
    """Ids from a list file: one per line, any line ending, trailing newline optional, path/.jpg stripped."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip().replace("\\", "/")
        if line:
            ids.append(Path(line).stem)
    return ids


def derive_splits(root: Path) -> tuple[dict[str, list[str]], list[str]]:
    """{"trainval": ids, "test": ids} and the ids left out of trainval for lack of annotations."""
    if (root / "trainval.txt").is_file() and (root / "test.txt").is_file():
        lists = {"trainval": root / "trainval.txt", "test": root / "test.txt"}
        splits = {name: read_list(path) for name, path in lists.items()}
        remedy = "copy FCN's lists again, or delete trainval.txt and test.txt to derive the splits from TestSet1.txt"
        unannotated = []
    else:
        if not (root / "TestSet1.txt").is_file():
            raise SiftFlowError(f"{root / 'TestSet1.txt'} is missing: it defines the 200 test images; "
                                "extract SiftFlowDataset.zip again")
        test = read_list(root / "TestSet1.txt")
        everything = sorted(p.stem for p in (root / "Images" / SUBDIR).glob("*.jpg"))
        test_set = set(test)
        rest = [i for i in everything if i not in test_set]
        unannotated = [i for i in rest if not (root / "SemanticLabels" / SUBDIR / f"{i}.mat").is_file()]
        splits = {"trainval": [i for i in rest if i not in unannotated], "test": test}
        lists = {"trainval": root / "Images" / SUBDIR, "test": root / "TestSet1.txt"}  # annotated images not in test
        remedy = "extract SiftFlowDataset.zip again (or rewrite the synthetic twin)"
    for name, ids in splits.items():
        if not ids:
            raise SiftFlowError(f"the {name} split is empty: no ids from {lists[name]}; {remedy}")
    overlap = set(splits["trainval"]) & set(splits["test"])
    if overlap:
        raise SiftFlowError(f"{root}: ids {sorted(overlap)[:5]} are in both trainval and test")
    for name, ids in splits.items():
        if len(set(ids)) != len(ids):
            raise SiftFlowError(f"{root}: the {name} list has repeated ids")
    return splits, unannotated


def read_sample(root: Path, sample_id: str) -> dict[str, np.ndarray]:
    """image uint8 256x256x3 RGB, label uint8 (0..32, 255 void), label_geo uint8 (0..2, 255 void)."""
    paths = {"image": root / "Images" / SUBDIR / f"{sample_id}.jpg",
             "label": root / "SemanticLabels" / SUBDIR / f"{sample_id}.mat",
             "label_geo": root / "GeoLabels" / SUBDIR / f"{sample_id}.mat"}
    for key, path in paths.items():
        if not path.is_file():
            raise SiftFlowError(f"id {sample_id!r} is in a split list but {path} does not exist; "
                                "re-extract SiftFlowDataset.zip or fix the list")
    try:
        with Image.open(paths["image"]) as im:
            image = np.asarray(im.convert("RGB"))
    except OSError as err:
        raise SiftFlowError(f"{paths['image']} is not a readable image ({err}); re-extract the archive") from err
    sem = _read_s(paths["label"], valid=range(0, len(CLASSES) + 1))
    geo = _read_s(paths["label_geo"], valid=range(-1, len(GEO_CLASSES) + 1))
    geo[geo == -1] = 0
    for key, lab in (("label", sem), ("label_geo", geo)):
        if lab.shape != image.shape[:2]:
            raise SiftFlowError(f"{paths[key]} is {lab.shape[0]}x{lab.shape[1]} but {paths['image']} is "
                                f"{image.shape[0]}x{image.shape[1]}; image and label must match, "
                                "re-extract the archive")
    # FCN: uint8 then minus one, so void (0) wraps to 255.
    return {"image": image, "label": sem.astype(np.uint8) - np.uint8(1),
            "label_geo": geo.astype(np.uint8) - np.uint8(1)}


def _read_s(path: Path, *, valid: range) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, IndexError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise SiftFlowError(f"{path} is truncated or not a MATLAB .mat file ({err}); re-extract the archive") from err
    if "S" not in mat:
        raise SiftFlowError(f"{path} has no 'S' (keys {sorted(k for k in mat if not k.startswith('__'))})")
    s = np.asarray(mat["S"])
    if s.ndim != 2:
        raise SiftFlowError(f"{path}: 'S' has shape {s.shape}, expected a 2-D label map; re-extract the archive")
    bad = s[~np.isin(s, np.arange(valid.start, valid.stop))]
    if bad.size:
        raise SiftFlowError(f"{path}: label value {bad.ravel()[0]:g} outside {valid.start}..{valid.stop - 1}; "
                            "the file is corrupt, re-extract the archive")
    return s.astype(np.int16)


def preprocess_siftflow(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                        expect_counts: dict[str, int] | None = None, progress: bool | None = None) -> dict[str, Path]:
    """Write ``out_dir/{trainval,test}.h5`` with fields image, label (33 classes), label_geo (3 classes).

    Attrs of both stores: ``geo_class_names``, ``absent_from_test`` (semantic classes with no test
    pixel), ``eval_classes`` (the indices of the others: evaluation averages over them only, as FCN's
    footnote 9 and ``metrics.scores(classes=...)``; 30 of 33 on the real data), ``unannotated`` (ids
    dropped from trainval) and ``mean_bgr`` (trainval's mean colour; the reference's 114.578, 115.294,
    108.353 on real data). ``expect_counts`` (e.g. ``REAL_COUNTS``) is checked before anything is written.
    Returns {split: path}.
    """
    root = find_root(raw_dir)
    splits, unannotated = derive_splits(root)
    counts = {k: len(v) for k, v in splits.items()}
    if expect_counts is not None and counts != dict(expect_counts):
        raise SiftFlowError(f"{root}: split sizes {counts}, expected {dict(expect_counts)}; the archive or the "
                            "lists are not the published ones")
    samples = {}
    for name, ids in splits.items():
        fields = {"image": [], "label": [], "label_geo": []}
        for sample_id in progress_bar(ids, desc=f"siftflow {name}", disable=progress is False):
            for key, value in read_sample(root, sample_id).items():
                fields[key].append(value)
        samples[name] = fields
    present = np.zeros(len(CLASSES), bool)
    for lab in samples["test"]["label"]:
        present |= np.bincount(lab[lab != 255], minlength=len(CLASSES)).astype(bool)[:len(CLASSES)]
    absent = [c for c, p in zip(CLASSES, present) if not p]
    attrs = {"geo_class_names": list(GEO_CLASSES), "absent_from_test": absent,
             "eval_classes": [int(i) for i in np.flatnonzero(present)], "unannotated": unannotated,
             "mean_bgr": stats.mean_bgr(samples["trainval"]["image"]), "means_from": "trainval"}
    return {name: write_store(Path(out_dir) / f"{name}.h5", dataset="siftflow", split=name, ids=splits[name],
                              fields=fields, class_names=CLASSES, attrs=attrs)
            for name, fields in samples.items()}
