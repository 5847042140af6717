"""A small synthetic NYUDv2 in the real on-disk formats, so the real parsers run offline.

Each frame is a ray-cast room seen by the NYU colour camera: a floor plane, three walls, a ceiling
and furniture-like boxes on the floor, from a camera at a known height with a known downward tilt
(pitch) and roll. Depth is exact (the "filled" depth); raw depth drops out where a Kinect would:
random blobs, the projector shadow left of near-object edges, far surfaces, dark surfaces and the
frame border that Gupta's crop removes. Labels use real NYU 894-class ids mapped to the 40 classes
by the twin's ``classMapping40.mat``.

Files written to ``out_dir``: ``nyu_depth_v2_labeled.mat`` (HDF5 behind a 512-byte MATLAB 7.3
header), ``splits.mat`` and ``classMapping40.mat`` (MATLAB v5), and ``twin.json`` with the camera,
the per-frame tilt and the gravity direction, for tests of HHA's gravity estimate.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from segbench.atomic import replacing, write_json
from segbench.data.nyud import (
    NUM_CLASSES,
    NUM_NYU_CLASSES,
    NYU_COLOR_CAMERA,
    REAL_COUNTS,
)

H, W = 480, 640
# Real NYU 894-class ids (1-based) and what classMapping40 maps them to (1-based 40-class ids).
NYU_IDS = {"floor": (11, 2), "wall": (21, 1), "ceiling": (4, 22), "cabinet": (3, 3), "chair": (5, 5),
           "table": (19, 7), "bed": (157, 4), "sofa": (83, 6)}
FURNITURE = ("cabinet", "chair", "table", "bed", "sofa")
CLASS_NAMES_40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop")
COLOURS = {"floor": (150, 110, 80), "wall": (200, 195, 180), "ceiling": (235, 235, 230), "cabinet": (120, 80, 50),
           "chair": (60, 90, 140), "table": (160, 120, 70), "bed": (180, 60, 70), "sofa": (70, 130, 80)}
KINECT_BASELINE_M = 0.075
FAR_DROPOUT_M = 6.5
VALID_ROWS, VALID_COLS = (44, 472), (38, 603)  # outside: the white registration border of real frames


def write_twin(out_dir: str | os.PathLike, *, n_images: int = 24, seed: int = 0,
               n_train: int | None = None) -> Path:
    """Write the three NYUDv2 files for ``n_images`` frames; return ``out_dir``.

    ``n_train`` defaults to the real 795/1449 share. Splits are 1-based uint16 like the real file.
    """
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2 (one train and one test frame), got {n_images}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = [_render_frame(rng) for _ in range(n_images)]
    _write_labeled_mat(out_dir / "nyu_depth_v2_labeled.mat", frames)
    n_train = n_train if n_train is not None else max(1, round(n_images * REAL_COUNTS["train"] / 1449))
    order = rng.permutation(n_images) + 1
    _savemat(out_dir / "splits.mat", {"trainNdxs": np.sort(order[:n_train]).astype(np.uint16)[:, None],
                                      "testNdxs": np.sort(order[n_train:]).astype(np.uint16)[:, None]})
    map_class = rng.integers(1, NUM_CLASSES + 1, NUM_NYU_CLASSES).astype(np.uint8)
    for nyu_id, class40 in NYU_IDS.values():
        map_class[nyu_id - 1] = class40
    all_names = [f"nyu_object_{i:03d}" for i in range(1, NUM_NYU_CLASSES + 1)]
    for name, (nyu_id, _) in NYU_IDS.items():
        all_names[nyu_id - 1] = name
    _savemat(out_dir / "classMapping40.mat", {"mapClass": map_class[None, :],
                                              "className": _cell(CLASS_NAMES_40), "allClassName": _cell(all_names)})
    meta = {"seed": seed, "n_images": n_images, "camera_matrix": NYU_COLOR_CAMERA.tolist(),
            "nyu_ids": NYU_IDS, "frames": [fr["meta"] for fr in frames],
            "note": "gravity_down_camera: unit vector of gravity in camera coordinates (x right, y down, z forward)"}
    write_json(out_dir / "twin.json", meta)  # written last: its presence means the twin is complete
    return out_dir


def _render_frame(rng: np.random.Generator) -> dict:
    pitch, roll = rng.uniform(5.0, 20.0), rng.uniform(-6.0, 6.0)
    height = rng.uniform(1.0, 1.6)
    room = {"back": rng.uniform(3.5, 7.5), "left": rng.uniform(1.5, 3.0), "right": rng.uniform(1.5, 3.0),
            "ceiling": rng.uniform(2.5, 2.9)}
    rot = _rotation(pitch, roll)  # camera -> world; world: x right, y down (gravity), z forward
    fx, fy, cx, cy = NYU_COLOR_CAMERA[0, 0], NYU_COLOR_CAMERA[1, 1], NYU_COLOR_CAMERA[0, 2], NYU_COLOR_CAMERA[1, 2]
    u, v = np.meshgrid(np.arange(1, W + 1), np.arange(1, H + 1))  # 1-based pixels, as in HHA
    rays_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones((H, W))], axis=-1)
    rays = rays_cam @ rot.T  # t along a ray with camera z = 1 is the depth itself
    depth = np.full((H, W), np.inf)
    surface = np.zeros((H, W), np.int64)  # index into names
    normal = np.zeros((H, W, 3))
    names = ["floor", "wall", "ceiling"]
    planes = [(1, height, "floor", (0, -1, 0)), (1, height - room["ceiling"], "ceiling", (0, 1, 0)),
              (2, room["back"], "wall", (0, 0, -1)), (0, -room["left"], "wall", (1, 0, 0)),
              (0, room["right"], "wall", (-1, 0, 0))]
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, offset, name, n in planes:
            t = offset / rays[..., axis]
            hit = (t > 0) & (t < depth)
            depth[hit], surface[hit], normal[hit] = t[hit], names.index(name), n
        boxes = []
        for _ in range(rng.integers(2, 5)):
            kind = FURNITURE[rng.integers(len(FURNITURE))]
            size = rng.uniform([0.4, 0.4, 0.4], [1.6, 1.1, 1.2])  # width, height, depth (m)
            x0 = rng.uniform(-room["left"], room["right"] - size[0])
            z0 = rng.uniform(1.2, room["back"] - size[2])
            lo, hi = np.array([x0, height - size[1], z0]), np.array([x0 + size[0], height, z0 + size[2]])
            t1, t2 = (lo - 0.0) / rays, (hi - 0.0) / rays
            tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            enter, leave = tmin.max(axis=-1), tmax.min(axis=-1)
            hit = (enter < leave) & (enter > 0) & (enter < depth)
            names.append(kind)
            face = np.argmax(tmin, axis=-1)
            n = np.zeros((H, W, 3))
            np.put_along_axis(n, face[..., None], -np.sign(np.take_along_axis(rays, face[..., None], -1)), -1)
            depth[hit], surface[hit], normal[hit] = enter[hit], len(names) - 1, n[hit]
            boxes.append({"class": kind, "min": lo.round(4).tolist(), "max": hi.round(4).tolist()})
    label894 = np.array([NYU_IDS[n][0] for n in names], np.uint16)[surface]
    edges = np.zeros((H, W), bool)  # real annotations leave thin unlabeled seams between objects
    edges[:, 1:] |= surface[:, 1:] != surface[:, :-1]
    edges[1:, :] |= surface[1:, :] != surface[:-1, :]
    label894[edges] = 0
    light = np.abs(normal @ (rot @ np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])))
    base = np.array([COLOURS[n] for n in names], np.float64)[surface]
    dark = surface >= 3 if rng.random() < 0.3 else np.zeros((H, W), bool)  # dark upholstery: IR absorbed
    shade = (0.55 + 0.45 * light)[..., None] * np.where(dark, 0.15, 1.0)[..., None]
    image = np.clip(base * shade + rng.normal(0, 4, (H, W, 3)), 0, 255).astype(np.uint8)
    raw = _raw_depth(depth, dark, rng)
    border = np.ones((H, W), bool)
    border[VALID_ROWS[0]:VALID_ROWS[1], VALID_COLS[0]:VALID_COLS[1]] = False
    image[border], raw[border], label894[border] = 255, 0.0, 0
    gravity = rot.T @ np.array([0.0, 1.0, 0.0])
    meta = {"pitch_deg": round(pitch, 4), "roll_deg": round(roll, 4), "camera_height_m": round(height, 4),
            "room": {k: round(v, 4) for k, v in room.items()}, "boxes": boxes,
            "gravity_down_camera": gravity.tolist()}
    return {"image": image, "depth": depth.astype(np.float32), "raw_depth": raw.astype(np.float32),
            "label894": label894, "meta": meta}


def _rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    p, r = np.deg2rad(pitch_deg), np.deg2rad(roll_deg)
    tilt = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])  # optical axis down by p
    spin = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return tilt @ spin


def _raw_depth(depth: np.ndarray, dark: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    raw = depth * (1 + rng.normal(0, 0.003, depth.shape))  # Kinect noise grows with distance
    missing = dark | (depth > FAR_DROPOUT_M)
    # Projector shadow: background just left of a near object's left edge is not lit by the pattern.
    step = depth[:, :-1] - depth[:, 1:]
    width = np.zeros(depth.shape, np.int64)
    jump = step > 0.15
    width[:, :-1][jump] = np.ceil(NYU_COLOR_CAMERA[0, 0] * KINECT_BASELINE_M *
                                  (1 / depth[:, 1:][jump] - 1 / depth[:, :-1][jump])).astype(np.int64)
    for s in range(int(width.max(initial=0))):
        missing[:, :W - s] |= width[:, s:] > s
    yy, xx = np.mgrid[0:H, 0:W]
    for _ in range(rng.integers(3, 8)):  # specular or glossy dropouts
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(4, 18)
        missing |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    raw[missing] = 0.0
    return raw


def _write_labeled_mat(path: Path, frames: list[dict]) -> None:
    n = len(frames)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w", userblock_size=512) as f:
        # h5py axis order = MATLAB's reversed: MATLAB 480x640x3xN is (N, 3, 640, 480) here.
        specs = {"images": ("image", (n, 3, W, H), np.uint8, "uint8", lambda a: a.transpose(2, 1, 0)),
                 "depths": ("depth", (n, W, H), np.float32, "single", np.transpose),
                 "rawDepths": ("raw_depth", (n, W, H), np.float32, "single", np.transpose),
                 "labels": ("label894", (n, W, H), np.uint16, "uint16", np.transpose)}
        for name, (key, shape, dtype, mclass, to_matlab) in specs.items():
            ds = f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1,) + shape[1:])
            ds.attrs["MATLAB_class"] = np.bytes_(mclass)
            for i, fr in enumerate(frames):
                ds[i] = to_matlab(fr[key])
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0))
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".ljust(116)
    header = text.encode("ascii") + b" " * 8 + b"\x00\x02" + b"IM"
    with open(tmp, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))
    os.replace(tmp, path)


def _cell(strings) -> np.ndarray:
    cell = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        cell[0, i] = np.array([s])
    return cell


def _savemat(path: Path, data: dict) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        scipy.io.savemat(fh, data, format="5", do_compression=False)
