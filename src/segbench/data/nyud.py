"""NYUDv2 (40-class task of Gupta et al.): read the labeled .mat, splits.mat and classMapping40.mat.

Real files (``shared/docs/HHA-REFERENCE.md`` 4):

- ``nyu_depth_v2_labeled.mat``: MATLAB v7.3 = HDF5. h5py sees MATLAB's column-major arrays with the
  axes reversed: ``images`` (N, 3, 640, 480) uint8, ``depths`` / ``rawDepths`` (N, 640, 480) float32
  metres (raw: 0 = missing), ``labels`` (N, 640, 480), 0 = unlabeled, 1..894 = NYU classes.
- ``splits.mat``: MATLAB v5, ``trainNdxs`` (795, 1) and ``testNdxs`` (654, 1), 1-based.
- ``classMapping40.mat``: MATLAB v5, ``mapClass`` (1, 894) with values 1..40, ``className`` (1, 40).

Frames are cropped to Gupta's 425 x 560 window (rows 46:470, columns 41:600, 1-based) as in FCN,
and named like FCN's files: ``img_<labeled index + 5000>``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from tqdm import tqdm

from segbench.data.store import Store, write_store
from segbench.hha.camera import NYU_COLOR_CAMERA, crop_camera

CROP_ROWS = slice(45, 470)  # 1-based rows 46..470 -> 425 rows
CROP_COLS = slice(40, 600)  # 1-based columns 41..600 -> 560 columns
NUM_NYU_CLASSES = 894
NUM_CLASSES = 40
REAL_COUNTS = {"train": 795, "test": 654}
FRAME_SHAPE = (480, 640)
ID_OFFSET = 5000


class NyudError(RuntimeError):
    """An NYUDv2 input file is missing, truncated or not in the expected format."""


def cropped_camera(camera: np.ndarray = NYU_COLOR_CAMERA) -> np.ndarray:
    """The 3x3 camera matrix of the cropped frame (cropCamera: cx -= 40, cy -= 45)."""
    return crop_camera(camera, top=CROP_ROWS.start, left=CROP_COLS.start)


def crop(frame: np.ndarray) -> np.ndarray:
    """480 x 640 (x C) -> 425 x 560 (x C), Gupta's cropIt."""
    if frame.shape[:2] != FRAME_SHAPE:
        raise ValueError(f"expected a 480 x 640 frame, got shape {frame.shape}")
    return frame[CROP_ROWS, CROP_COLS]


def open_labeled(path: str | os.PathLike) -> h5py.File:
    """Open ``nyu_depth_v2_labeled.mat`` and check its datasets; the caller closes the file."""
    path = Path(path)
    if not path.is_file():
        raise NyudError(f"{path} does not exist: run the download step (or the synth_nyud twin) first")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise NyudError(f"{path} is truncated or not a MATLAB v7.3 (HDF5) file ({err}); delete it and "
                        "download it again (expected md5 520609c519fba3ba5ac58c8fefcc3530)") from err
    try:
        missing = [k for k in ("images", "depths", "rawDepths", "labels") if k not in f]
        if missing:
            raise NyudError(f"{path} lacks the datasets {missing} (it has {sorted(f)}); it is not "
                            "nyu_depth_v2_labeled.mat: download the labeled set again")
        n = f["images"].shape[0]
        expected = {"images": (n, 3, 640, 480), "depths": (n, 640, 480),
                    "rawDepths": (n, 640, 480), "labels": (n, 640, 480)}
        for key, shape in expected.items():
            if f[key].shape != shape:
                raise NyudError(f"{path}: dataset {key!r} has shape {f[key].shape}, expected {shape} "
                                "(MATLAB order reversed by h5py); image, depth and label sizes must agree")
    except BaseException:
        f.close()
        raise
    return f


def read_frame(f: h5py.File, i: int) -> dict[str, np.ndarray]:
    """Frame ``i`` (0-based) at full size: image 480x640x3 uint8 RGB, depth / raw_depth 480x640 float32 m,
    label894 480x640 uint16 (0 = unlabeled)."""
    try:
        return {"image": np.ascontiguousarray(f["images"][i].transpose(2, 1, 0)),
                "depth": np.ascontiguousarray(f["depths"][i].T, dtype=np.float32),
                "raw_depth": np.ascontiguousarray(f["rawDepths"][i].T, dtype=np.float32),
                "label894": np.ascontiguousarray(f["labels"][i].T)}
    except OSError as err:  # a truncated file often opens but fails on the first chunk past the end
        raise NyudError(f"{f.filename}: frame {i + 1} cannot be read ({err}); the file is truncated, "
                        "delete it and download it again") from err


def read_splits(path: str | os.PathLike, num_images: int) -> dict[str, np.ndarray]:
    """``splits.mat`` -> {"train": 0-based indices, "test": ...}, checked disjoint and covering all images."""
    mat = _loadmat(path, ("trainNdxs", "testNdxs"))
    splits = {"train": mat["trainNdxs"].ravel().astype(np.int64) - 1,
              "test": mat["testNdxs"].ravel().astype(np.int64) - 1}
    for name, idx in splits.items():
        bad = idx[(idx < 0) | (idx >= num_images)]
        if bad.size:
            raise NyudError(f"{path}: {name} lists image {int(bad[0]) + 1} (1-based) but the labeled .mat "
                            f"has only {num_images} images; the splits and labeled files do not belong together")
        if np.unique(idx).size != idx.size:
            raise NyudError(f"{path}: {name} lists some images twice")
    both = np.intersect1d(splits["train"], splits["test"])
    if both.size:
        raise NyudError(f"{path}: images {(both[:5] + 1).tolist()} are in both train and test")
    if splits["train"].size + splits["test"].size != num_images:
        raise NyudError(f"{path}: train + test = {splits['train'].size + splits['test'].size} images, "
                        f"the labeled .mat has {num_images}; every image must be in one split")
    return splits


def read_class_mapping(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """``classMapping40.mat`` -> (mapClass (894,) uint8 in 1..40, the 40 class names)."""
    mat = _loadmat(path, ("mapClass", "className"))
    map_class = mat["mapClass"].ravel()
    names = [str(np.asarray(n).ravel()[0]) for n in mat["className"].ravel()]
    if map_class.size != NUM_NYU_CLASSES or len(names) != NUM_CLASSES:
        raise NyudError(f"{path}: mapClass has {map_class.size} entries and className {len(names)}, "
                        f"expected {NUM_NYU_CLASSES} and {NUM_CLASSES}: not Gupta's classMapping40.mat")
    if map_class.min() < 1 or map_class.max() > NUM_CLASSES:
        raise NyudError(f"{path}: mapClass values span {map_class.min()}..{map_class.max()}, expected 1..40")
    return map_class.astype(np.uint8), names


def to_label40(label894: np.ndarray, map_class: np.ndarray, *, source: str = "labels") -> np.ndarray:
    """894-class labels (0 = unlabeled) -> uint8 0..39 with 255 = void (the FCN decrement)."""
    if label894.max(initial=0) > NUM_NYU_CLASSES:
        raise NyudError(f"{source}: label value {int(label894.max())} outside 0..{NUM_NYU_CLASSES}; "
                        "the labeled .mat is corrupt, download it again")
    lut = np.empty(NUM_NYU_CLASSES + 1, np.uint8)
    lut[0] = 255
    lut[1:] = map_class - 1
    return lut[label894]


def preprocess_nyud(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    expect_counts: dict[str, int] | None = None, progress: bool | None = None) -> dict[str, Path]:
    """Write ``out_dir/{train,test}.h5`` from ``raw_dir/{nyu_depth_v2_labeled,splits,classMapping40}.mat``.

    Store fields per id (425 x 560 crop): ``image`` uint8 HxWx3 RGB, ``label`` uint8 HxW (0..39, 255 void),
    ``depth`` float32 HxW metres, ``raw_depth`` float32 HxW metres (0 = missing). Attrs: ``camera_matrix``
    (cropped), ``labeled_index`` (1-based). ``expect_counts`` (e.g. ``REAL_COUNTS``) is checked before
    anything is written. Returns {split: path}.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    map_class, names = read_class_mapping(raw_dir / "classMapping40.mat")
    mat_path = raw_dir / "nyu_depth_v2_labeled.mat"
    with open_labeled(mat_path) as f:
        splits = read_splits(raw_dir / "splits.mat", f["images"].shape[0])
        counts = {k: int(v.size) for k, v in splits.items()}
        if expect_counts is not None and counts != dict(expect_counts):
            raise NyudError(f"{raw_dir / 'splits.mat'}: split sizes {counts}, expected {dict(expect_counts)}; "
                            "the splits file is not the published one")
        samples = {}
        for name, idx in splits.items():
            fields = {"image": [], "label": [], "depth": [], "raw_depth": []}
            for i in tqdm(sorted(idx), desc=f"nyud {name}", disable=None if progress is None else not progress):
                frame = read_frame(f, int(i))
                fields["image"].append(crop(frame["image"]))
                fields["label"].append(to_label40(crop(frame["label894"]), map_class,
                                                  source=f"{mat_path} frame {i + 1}"))
                fields["depth"].append(crop(frame["depth"]))
                fields["raw_depth"].append(crop(frame["raw_depth"]))
            samples[name] = (sorted(int(i) for i in idx), fields)
    paths = {}
    for name, (idx, fields) in samples.items():
        paths[name] = write_store(
            out_dir / f"{name}.h5", dataset="nyud", split=name,
            ids=[f"img_{i + 1 + ID_OFFSET}" for i in idx], fields=fields, class_names=names,
            attrs={"camera_matrix": cropped_camera().tolist(), "labeled_index": [i + 1 for i in idx],
                   "crop_1based": {"rows": [46, 470], "cols": [41, 600]}, "depth_unit": "m"})
    return paths


def add_hha(store_path: str | os.PathLike, png_dir: str | os.PathLike, *, out_path: str | os.PathLike | None = None,
            threads: int = 1, progress: bool | None = None) -> Path:
    """Compute HHA for every frame of an NYUD store and write it back with an extra ``hha`` field.

    ``hha`` is uint8 HxWx3 (disparity, height, angle), from the store's ``depth`` and ``raw_depth`` and
    its cropped ``camera_matrix``. PNGs go to ``png_dir/<id>.png``. The store is rewritten atomically at
    ``out_path`` (default: in place); returns that path.
    """
    from segbench import hha  # heavy and optional until HHA is needed

    store = Store(store_path)
    for field in ("depth", "raw_depth"):
        if field not in store.fields:
            raise NyudError(f"{store.path} has no {field!r} field; it is not an NYUD store from preprocess_nyud")
    depths = [store.get("depth", i) for i in range(len(store))]
    raw_depths = [store.get("raw_depth", i) for i in range(len(store))]
    camera = np.asarray(store.attrs["camera_matrix"], dtype=np.float64)
    encoded = hha.encode_many(depths, raw_depths, camera, threads=threads, progress=progress)
    png_dir = Path(png_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    for sample_id, image in zip(store.ids, encoded):
        hha.write_png(png_dir / f"{sample_id}.png", image)
    fields = {name: [store.get(name, i) for i in range(len(store))] for name in store.fields if name != "hha"}
    fields["hha"] = list(encoded)
    attrs = {k: v for k, v in store.attrs.items()
             if k not in ("format_version", "dataset", "split", "num_classes", "class_names")}
    return write_store(out_path or store.path, dataset=store.attrs["dataset"], split=store.attrs["split"],
                       ids=store.ids, fields=fields, class_names=store.class_names, attrs=attrs)


def _loadmat(path: str | os.PathLike, keys: tuple[str, ...]) -> dict:
    path = Path(path)
    if not path.is_file():
        raise NyudError(f"{path} does not exist: run the download step (or the synth_nyud twin) first")
    try:
        mat = scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, IndexError, NotImplementedError, scipy.io.matlab.MatReadError) as err:
        raise NyudError(f"{path} is truncated or not a MATLAB v5 .mat file ({err}); "
                        "delete it and download it again") from err
    missing = [k for k in keys if k not in mat]
    if missing:
        raise NyudError(f"{path} lacks {missing} (it has {sorted(k for k in mat if not k.startswith('__'))}); "
                        "download the published file again")
    return mat
