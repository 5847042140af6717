"""NYUDv2 (40-class task of Gupta et al.): read the labeled .mat, splits.mat and classMapping40.mat.

The real files:

- ``nyu_depth_v2_labeled.mat``: MATLAB v7.3 = HDF5. h5py sees MATLAB's column-major arrays with the
  axes reversed: ``images`` (N, 3, 640, 480) uint8, ``depths`` / ``rawDepths`` (N, 640, 480) float32
  metres (raw: 0 = missing), ``labels`` (N, 640, 480), 0 = unlabeled, 1..894 = NYU classes.
- ``splits.mat``: MATLAB v5, ``trainNdxs`` (795, 1) and ``testNdxs`` (654, 1), 1-based.
- ``classMapping40.mat``: MATLAB v5, ``mapClass`` (1, 894) with values 1..40, ``className`` (1, 40).

Frames are cropped to Gupta's 425 x 560 window (rows 46:470, columns 41:600, 1-based) as in FCN,
and named like FCN's files: ``img_<labeled index + 5000>``. Frames of 480 s x 640 s (the synthetic
twin's ``frame_scale``; real frames have s = 1) are read with the NYU camera scaled by s and cropped to
the same region in proportion (``crop_window``).

Input means (``stats``), computed on the train split and written into every split's store: ``mean_bgr``
(the reference's 116.190, 97.203, 92.318 on real data), ``mean_logdepth`` (mean of log(depth in mm),
the reference's 7.844) and, once HHA is added, ``mean_hha`` (132.431, 94.076, 118.477).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from segbench.data import stats
from segbench.data.store import Store, write_store
from segbench.errors import SegbenchError
from segbench.hha.camera import NYU_COLOR_CAMERA, crop_camera
from segbench.infra.progress import progress_bar

CROP_ROWS = slice(45, 470)  # 1-based rows 46..470 -> 425 rows
CROP_COLS = slice(40, 600)  # 1-based columns 41..600 -> 560 columns
NUM_NYU_CLASSES = 894
NUM_CLASSES = 40
REAL_COUNTS = {"train": 795, "test": 654}
FRAME_SHAPE = (480, 640)
ID_OFFSET = 5000


class NyudError(SegbenchError):
    """An NYUDv2 input file is missing, truncated or not in the expected format."""


def frame_scale(shape: tuple[int, ...]) -> float:
    """s of a 480 s x 640 s frame (1.0 for real frames); raises ValueError for any other aspect."""
    h, w = shape[:2]
    if h * FRAME_SHAPE[1] != w * FRAME_SHAPE[0] or h < 1:
        raise ValueError(f"expected a frame of 480 s x 640 s (4:3, s = 1 for real NYUDv2), got {h} x {w}")
    return h / FRAME_SHAPE[0]


def crop_window(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Gupta's crop (cropIt) of a 480 s x 640 s frame: start round(45 s) / round(40 s), size round(425 s) /
    round(560 s), rounding halves up; exactly rows 45:470 and columns 40:600 (0-based) at s = 1."""
    s = frame_scale(shape)
    top, left = _round(CROP_ROWS.start * s), _round(CROP_COLS.start * s)
    return (slice(top, top + _round((CROP_ROWS.stop - CROP_ROWS.start) * s)),
            slice(left, left + _round((CROP_COLS.stop - CROP_COLS.start) * s)))


def scaled_camera(scale: float, camera: np.ndarray = NYU_COLOR_CAMERA) -> np.ndarray:
    """The camera matrix of frames rendered at ``scale`` times the size: fx, fy, cx, cy multiplied by it."""
    out = np.array(camera, dtype=np.float64)
    out[:2] *= scale
    return out


def cropped_camera(camera: np.ndarray = NYU_COLOR_CAMERA, *, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """The 3x3 camera matrix of the cropped frame (cropCamera: cx -= 40, cy -= 45 at full size).

    ``camera`` is that of the full-size frame; for a frame of another ``shape`` (480 s x 640 s) it is
    scaled by s first, then shifted by the scaled crop's offsets.
    """
    rows, cols = crop_window(shape)
    return crop_camera(scaled_camera(frame_scale(shape), camera), top=rows.start, left=cols.start)


def crop(frame: np.ndarray) -> np.ndarray:
    """480 s x 640 s (x C) -> the crop window (Gupta's cropIt: 425 x 560 at s = 1)."""
    rows, cols = crop_window(frame.shape)
    return frame[rows, cols]


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


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
        if f["images"].ndim != 4 or f["images"].shape[1] != 3:
            raise NyudError(f"{path}: dataset 'images' has shape {f['images'].shape}, expected (N, 3, 640, 480) "
                            "(MATLAB's 480 x 640 x 3 x N reversed by h5py)")
        n, _, w, h = f["images"].shape
        expected = {"images": (n, 3, w, h), "depths": (n, w, h), "rawDepths": (n, w, h), "labels": (n, w, h)}
        for key, shape in expected.items():
            if f[key].shape != shape:
                raise NyudError(f"{path}: dataset {key!r} has shape {f[key].shape}, expected {shape} "
                                "(MATLAB order reversed by h5py); image, depth and label sizes must agree")
        try:
            frame_scale((h, w))
        except ValueError as err:
            raise NyudError(f"{path}: {err}") from err
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
        if not idx.size:
            raise NyudError(f"{path}: the {name} split lists no images; the file is truncated or not the published "
                            "splits.mat: download it again (or rewrite the synthetic twin)")
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

    Store fields per id (425 x 560 crop, or its scaled window): ``image`` uint8 HxWx3 RGB, ``label`` uint8
    HxW (0..39, 255 void), ``depth`` float32 HxW metres, ``raw_depth`` float32 HxW metres (0 = missing).
    Attrs: ``camera_matrix`` (cropped), ``labeled_index`` (1-based), ``crop_1based``, ``frame_scale``, and
    the train split's ``mean_bgr`` and ``mean_logdepth`` in both stores. ``expect_counts`` (e.g.
    ``REAL_COUNTS``) is checked before anything is written. Returns {split: path}.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    map_class, names = read_class_mapping(raw_dir / "classMapping40.mat")
    mat_path = raw_dir / "nyu_depth_v2_labeled.mat"
    with open_labeled(mat_path) as f:
        shape = tuple(f["images"].shape[:1:-1])  # (H, W)
        splits = read_splits(raw_dir / "splits.mat", f["images"].shape[0])
        counts = {k: int(v.size) for k, v in splits.items()}
        if expect_counts is not None and counts != dict(expect_counts):
            raise NyudError(f"{raw_dir / 'splits.mat'}: split sizes {counts}, expected {dict(expect_counts)}; "
                            "the splits file is not the published one")
        samples = {}
        for name, idx in splits.items():
            fields = {"image": [], "label": [], "depth": [], "raw_depth": []}
            for i in progress_bar(sorted(idx), desc=f"nyud {name}", disable=progress is False):
                frame = read_frame(f, int(i))
                fields["image"].append(crop(frame["image"]))
                fields["label"].append(to_label40(crop(frame["label894"]), map_class,
                                                  source=f"{mat_path} frame {i + 1}"))
                fields["depth"].append(crop(frame["depth"]))
                fields["raw_depth"].append(crop(frame["raw_depth"]))
            samples[name] = (sorted(int(i) for i in idx), fields)
    rows, cols = crop_window(shape)
    train = samples["train"][1]
    common = {"camera_matrix": cropped_camera(shape=shape).tolist(), "frame_scale": frame_scale(shape),
              "crop_1based": {"rows": [rows.start + 1, rows.stop], "cols": [cols.start + 1, cols.stop]},
              "depth_unit": "m", "mean_bgr": stats.mean_bgr(train["image"]),
              "mean_logdepth": stats.mean_log_depth(train["depth"]), "means_from": "train"}
    paths = {}
    for name, (idx, fields) in samples.items():
        paths[name] = write_store(
            out_dir / f"{name}.h5", dataset="nyud", split=name,
            ids=[f"img_{i + 1 + ID_OFFSET}" for i in idx], fields=fields, class_names=names,
            attrs={**common, "labeled_index": [i + 1 for i in idx]})
    return paths


def add_hha(store_path: str | os.PathLike, png_dir: str | os.PathLike, *, out_path: str | os.PathLike | None = None,
            train_hha_store: str | os.PathLike | None = None, threads: int = 1, progress: bool | None = None) -> Path:
    """Compute HHA for every frame of an NYUD store and write it back with an extra ``hha`` field.

    ``hha`` is uint8 HxWx3 (disparity, height, angle), from the store's ``depth`` and ``raw_depth`` and
    its cropped ``camera_matrix``. PNGs go to ``png_dir/<id>.png``. The store is rewritten atomically at
    ``out_path`` (default: in place); returns that path.

    The attribute ``mean_hha`` (per channel, in that order) comes from the train split: computed here
    for the train store, copied from ``train_hha_store`` (the train split's HHA store) for any other.
    On scaled twin frames the encoder's 7 x 7 and 21 x 21 normal windows stay 7 x 7 and 21 x 21 pixels,
    so they cover 1/s times the full-size windows' extent (see ``synth_nyud``).
    """
    from segbench import hha  # heavy and optional until HHA is needed

    store = Store(store_path)
    for field in ("depth", "raw_depth"):
        if field not in store.fields:
            raise NyudError(f"{store.path} has no {field!r} field; it is not an NYUD store from preprocess_nyud")
    split = store.attrs["split"]
    if split != "train":
        if train_hha_store is None:
            raise NyudError(f"{store.path} is the {split!r} split: its HHA mean must be the train split's; pass "
                            "the train split's HHA store (train_hha_store, CLI --train-hha-store)")
        train = Store(train_hha_store)
        if train.attrs.get("split") != "train" or "mean_hha" not in train.attrs:
            raise NyudError(f"{train.path} is not a train split with a mean_hha attribute (split "
                            f"{train.attrs.get('split')!r}): pass the output of add_hha on train.h5")
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
    attrs["mean_hha"] = stats.channel_means(encoded) if split == "train" else train.attrs["mean_hha"]
    return write_store(out_path or store.path, dataset=store.attrs["dataset"], split=split,
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
