"""A small synthetic NYUDv2 in the real on-disk formats, in which depth tells what colour cannot.

Each frame is a ray-cast room seen by the NYU colour camera from a known height, downward tilt (pitch)
and roll: a floor, three walls, a ceiling and furniture. Surfaces are coloured by *material*, and
several classes share one material, as they do in real rooms:

- ``paint``: wall, ceiling and cabinet. Cabinets stand against a wall, 0.35-0.6 m proud of it, with
  fronts facing the way the wall does: a cabinet front and the wall around it have the same colour and
  shading and differ only in depth (and the cabinet's top in height). Wall and ceiling differ in normal.
- ``wood``: floor and table. A table top faces up like the floor, so it has the floor's colour and
  shading, but lies 0.70-0.78 m above it.
- ``fabric``: bed and floor mat. A bed top is 0.45-0.6 m above the floor, a mat 5 mm.

Colour separates what depth cannot: a picture is a 1 cm thick print on a wall and a floor mat lies on
the floor, while chairs (``blue``) and sofas (``green``) have their own materials. Shading is ambient
plus light from straight above (up-facing surfaces brighter, all vertical ones alike, ceilings like
walls), so it carries orientation but never distance. Each frame draws one colour per material, shared
by every surface of that material. ``TWIN_CLASSES`` defines the classes once.

Depth is exact (the "filled" depth); raw depth drops out where a Kinect would: random blobs, the
projector shadow left of near-object edges, far surfaces, dark upholstery (chairs and sofas in some
frames) and the frame border that Gupta's crop removes. Labels are 894-class ids that the twin's own
``classMapping40.mat`` maps to the 40 classes; one-pixel unlabeled seams separate objects.

``frame_scale`` renders 480 s x 640 s frames with the camera matrix scaled by s (fx, fy, cx, cy all
times s): 0.25 gives 120 x 160 frames, and preprocessing crops the same region in proportion. Object
sizes in metres do not change, so every object covers s^2 as many pixels; HHA's 7 x 7 and 21 x 21
normal windows are in pixels, so at s = 0.25 they cover what 28 x 28 and 84 x 84 windows cover at full
size: normals are smoother and thin parts (table legs) lose theirs, while gravity, height and the
angles of large surfaces stay as at full size.

Files written to ``out_dir``: ``nyu_depth_v2_labeled.mat`` (HDF5 behind a 512-byte MATLAB 7.3
header), ``splits.mat`` and ``classMapping40.mat`` (MATLAB v5), and last ``manifest.json``
(``segbench.data.MANIFEST``, the completion marker of every raw dataset folder) with the camera, frame scale,
classes and, per frame, the tilt, gravity direction and objects.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from segbench.data import MANIFEST
from segbench.data.nyud import (
    FRAME_SHAPE,
    NUM_CLASSES,
    NUM_NYU_CLASSES,
    REAL_COUNTS,
    crop_window,
    scaled_camera,
)
from segbench.data.synthetic.matfile import savemat
from segbench.infra.atomic import replacing, write_json

# The twin's classes, once: 40-class name -> (its 894-class id in the twin's classMapping40, material).
TWIN_CLASSES = {"wall": (21, "paint"), "floor": (11, "wood"), "ceiling": (4, "paint"), "cabinet": (3, "paint"),
                "table": (19, "wood"), "bed": (157, "fabric"), "floor mat": (143, "fabric"), "chair": (5, "blue"),
                "sofa": (83, "green"), "picture": (64, "print")}
MATERIALS = {"paint": (200, 195, 180), "wood": (150, 110, 80), "fabric": (180, 60, 70), "blue": (60, 90, 140),
             "green": (70, 130, 80)}
PRINT_COLOURS = ((225, 185, 40), (40, 165, 175), (165, 60, 175), (235, 125, 40), (30, 30, 30))
CLASS_NAMES_40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop")
FURNITURE = ("cabinet", "table", "bed", "floor mat", "chair", "sofa", "picture")
# width (x), depth (z), height (m): lowest and highest of each piece of furniture standing on the floor
SIZES = {"cabinet": ((0.6, 0.35, 0.8), (1.5, 0.6, 2.0)), "table": ((0.8, 0.6, 0.70), (1.6, 1.0, 0.78)),
         "bed": ((1.4, 1.9, 0.45), (1.8, 2.1, 0.6)), "floor mat": ((0.8, 0.5, 0.005), (1.6, 1.2, 0.005)),
         "chair": ((0.4, 0.4, 0.42), (0.5, 0.5, 0.48)), "sofa": ((1.6, 0.8, 0.42), (2.2, 0.9, 0.48))}
KINECT_BASELINE_M = 0.075
FAR_DROPOUT_M = 6.5
VALID_ROWS, VALID_COLS = (44, 472), (38, 603)  # at full size; outside: the white registration border
AMBIENT, OVERHEAD = 0.8, 0.2  # shade = AMBIENT + OVERHEAD * max(0, normal . up)
MIN_FRAME_SCALE = 0.05


def write_twin(out_dir: str | os.PathLike, *, n_images: int = 24, seed: int = 0, n_train: int | None = None,
               frame_scale: float = 1.0) -> Path:
    """Write the three NYUDv2 files for ``n_images`` frames of 480 s x 640 s (s = ``frame_scale``).

    ``n_train`` defaults to the real 795/1449 share. Splits are 1-based uint16 like the real file.
    ``frame_scale`` must make 480 s and 640 s whole numbers (a multiple of 1/160: 0.25, 0.5, 1.0 ...).
    Returns ``out_dir``.
    """
    if n_images < 2:
        raise ValueError(f"n_images must be >= 2 (one train and one test frame), got {n_images}")
    shape = frame_shape(frame_scale)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    camera = scaled_camera(frame_scale)
    frames = [_render_frame(rng, camera, shape, frame_scale) for _ in range(n_images)]
    _write_labeled_mat(out_dir / "nyu_depth_v2_labeled.mat", frames, shape)
    n_train = n_train if n_train is not None else max(1, round(n_images * REAL_COUNTS["train"] / 1449))
    order = rng.permutation(n_images) + 1
    _savemat(out_dir / "splits.mat", {"trainNdxs": np.sort(order[:n_train]).astype(np.uint16)[:, None],
                                      "testNdxs": np.sort(order[n_train:]).astype(np.uint16)[:, None]})
    map_class = rng.integers(1, NUM_CLASSES + 1, NUM_NYU_CLASSES).astype(np.uint8)
    all_names = [f"nyu_object_{i:03d}" for i in range(1, NUM_NYU_CLASSES + 1)]
    for name, (nyu_id, _) in TWIN_CLASSES.items():
        map_class[nyu_id - 1] = CLASS_NAMES_40.index(name) + 1
        all_names[nyu_id - 1] = name
    _savemat(out_dir / "classMapping40.mat", {"mapClass": map_class[None, :],
                                              "className": _cell(CLASS_NAMES_40), "allClassName": _cell(all_names)})
    meta = {"dataset": "nyud", "synthetic": True, "seed": seed, "n_images": n_images, "n_train": n_train,
            "frame_scale": frame_scale, "frame_shape": list(shape),
            "camera_matrix": camera.tolist(), "classes": {k: {"nyu_id": v[0], "material": v[1]}
                                                          for k, v in TWIN_CLASSES.items()},
            "frames": [fr["meta"] for fr in frames],
            "note": "gravity_down_camera: unit vector of gravity in camera coordinates (x right, y down, z "
                    "forward); boxes: [min, max] corners in metres, world x right, y down, z forward, camera "
                    "at the origin"}
    write_json(out_dir / MANIFEST, meta)  # written last: its presence means the twin is complete
    return out_dir


def frame_shape(frame_scale: float) -> tuple[int, int]:
    """(480 s, 640 s) for s = ``frame_scale``; raises unless both are whole numbers."""
    h, w = FRAME_SHAPE[0] * frame_scale, FRAME_SHAPE[1] * frame_scale
    if not (MIN_FRAME_SCALE <= frame_scale <= 1.0 and abs(h - round(h)) < 1e-9 and abs(w - round(w)) < 1e-9):
        raise ValueError(f"frame_scale must lie in [{MIN_FRAME_SCALE}, 1] and make 480 s and 640 s whole numbers "
                         f"(a multiple of 1/160, e.g. 0.25 or 0.5), got {frame_scale}")
    return int(round(h)), int(round(w))


def _render_frame(rng: np.random.Generator, camera: np.ndarray, shape: tuple[int, int], scale: float) -> dict:
    h, w = shape
    pitch, roll = rng.uniform(2.0, 18.0), rng.uniform(-6.0, 6.0)
    height = rng.uniform(1.0, 1.6)
    room = {"back": rng.uniform(4.0, 7.5), "left": rng.uniform(1.5, 3.0), "right": rng.uniform(1.5, 3.0),
            "ceiling": rng.uniform(2.5, 2.9)}
    rot = _rotation(pitch, roll)  # camera -> world; world: x right, y down (gravity), z forward
    u, v = np.meshgrid(np.arange(1, w + 1), np.arange(1, h + 1))  # 1-based pixels, as in HHA
    rays_cam = np.stack([(u - camera[0, 2]) / camera[0, 0], (v - camera[1, 2]) / camera[1, 1], np.ones(shape)], -1)
    rays = rays_cam @ rot.T  # t along a ray with camera z = 1 is the depth itself
    objects = _furnish(rng, room, height)
    depth, klass, instance, normal = _cast(rays, room, height, objects)
    names = list(TWIN_CLASSES)
    colours = {m: np.clip(np.asarray(c) + rng.normal(0, 8, 3), 0, 255) for m, c in MATERIALS.items()}
    base = np.zeros(shape + (3,))
    for k, name in enumerate(names):
        if TWIN_CLASSES[name][1] != "print":
            base[klass == k] = colours[TWIN_CLASSES[name][1]]
    period = max(2, round(12 * scale))
    for i, obj in enumerate(objects, start=3):
        if obj["class"] == "picture":
            pair = rng.choice(len(PRINT_COLOURS), 2, replace=False)
            stripes = ((u + v) // period) % 2
            mask = instance == i
            base[mask] = np.asarray(PRINT_COLOURS)[pair][stripes[mask]]
    upholstery = np.isin(klass, [names.index("chair"), names.index("sofa")])
    dark = upholstery if rng.random() < 0.3 else np.zeros(shape, bool)  # dark upholstery: IR absorbed
    shade = AMBIENT + OVERHEAD * np.maximum(0.0, -normal[..., 1])  # world up is -y
    shade = shade * np.where(dark, 0.3, 1.0)
    image = np.clip(base * shade[..., None] + rng.normal(0, 4, shape + (3,)), 0, 255).astype(np.uint8)
    label894 = np.array([TWIN_CLASSES[n][0] for n in names], np.uint16)[klass]
    seams = np.zeros(shape, bool)  # real annotations leave thin unlabeled seams between objects
    seams[:, 1:] |= instance[:, 1:] != instance[:, :-1]
    seams[1:, :] |= instance[1:, :] != instance[:-1, :]
    label894[seams] = 0
    raw = _raw_depth(depth, dark, rng, fx=camera[0, 0], scale=scale)
    border = np.ones(shape, bool)
    rows, cols = _valid_window(scale, shape)
    border[rows, cols] = False
    image[border], raw[border], label894[border] = 255, 0.0, 0
    gravity = rot.T @ np.array([0.0, 1.0, 0.0])
    meta = {"pitch_deg": round(pitch, 4), "roll_deg": round(roll, 4), "camera_height_m": round(height, 4),
            "room": {k: round(val, 4) for k, val in room.items()}, "gravity_down_camera": gravity.tolist(),
            "objects": [{"class": o["class"], "boxes": [[lo.round(4).tolist(), hi.round(4).tolist()]
                                                        for lo, hi in o["boxes"]]} for o in objects]}
    return {"image": image, "depth": depth.astype(np.float32), "raw_depth": raw.astype(np.float32),
            "label894": label894, "meta": meta}


def _furnish(rng: np.random.Generator, room: dict, height: float) -> list[dict]:
    """Four to six kinds of furniture, one object each (two chairs at most), as lists of world boxes."""
    kinds = list(rng.choice(FURNITURE, rng.integers(4, 7), replace=False))
    if "chair" in kinds and rng.random() < 0.5:
        kinds.append("chair")
    used: list[tuple[float, float, float, float]] = []  # floor footprints (x0, x1, z0, z1)
    objects = []
    for kind in kinds:
        boxes = _place(kind, rng, room, height, used)
        if boxes:
            objects.append({"class": kind, "boxes": boxes})
    return objects


def _place(kind: str, rng: np.random.Generator, room: dict, floor: float, used: list) -> list:
    """World boxes ``(lo, hi)`` of one object of ``kind``, or [] if no free spot was found in 20 tries."""
    for _ in range(20):
        wall = rng.choice(["back", "left", "right"]) if kind in ("cabinet", "picture") else None
        if kind == "picture":
            size, centre = rng.uniform([0.4, 0.3], [1.0, 0.8]), floor - rng.uniform(1.2, 1.8)
            y0, y1 = centre - size[1] / 2, centre + size[1] / 2
            return [_on_wall(wall, room, rng, width=size[0], proud=0.01, y=(y0, y1))]
        width, depth, tall = rng.uniform(*SIZES[kind])
        if kind == "cabinet":
            lo, hi = _on_wall(wall, room, rng, width=width, proud=depth, y=(floor - tall, floor))
        else:
            z0 = rng.uniform(1.6, room["back"] - depth)
            half = 0.55 * z0  # about the visible half-width at that depth (horizontal field of view 63 degrees)
            span = (max(-room["left"], -half), min(room["right"], half) - width)
            if span[1] < span[0]:
                continue
            x0 = rng.uniform(*span)
            lo, hi = np.array([x0, floor - tall, z0]), np.array([x0 + width, floor, z0 + depth])
        foot = (lo[0], hi[0], lo[2], hi[2])
        if kind != "floor mat" and any(_overlap(foot, f) for f in used):
            continue
        if kind != "floor mat":
            used.append(foot)
        if kind == "table":
            return [(np.array([lo[0], lo[1], lo[2]]), np.array([hi[0], lo[1] + 0.04, hi[2]]))] + [
                (np.array([x, lo[1], z]), np.array([x + 0.05, hi[1], z + 0.05]))
                for x in (lo[0] + 0.03, hi[0] - 0.08) for z in (lo[2] + 0.03, hi[2] - 0.08)]
        if kind in ("chair", "sofa"):  # seat and back rest (on the far side)
            back = 0.05 if kind == "chair" else 0.2
            return [(lo, hi), (np.array([lo[0], floor - 0.9, hi[2] - back]), hi.copy())]
        return [(lo, hi)]
    return []


def _on_wall(wall: str, room: dict, rng: np.random.Generator, *, width: float, proud: float,
             y: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A box of ``width`` along ``wall``, standing ``proud`` metres out of it, between heights ``y``."""
    if wall == "back":
        half = 0.55 * room["back"]  # about the visible half-width there (horizontal field of view 63 degrees)
        x0 = rng.uniform(-min(room["left"], half), max(-min(room["left"], half), min(room["right"], half) - width))
        return np.array([x0, y[0], room["back"] - proud]), np.array([x0 + width, y[1], room["back"]])
    near = max(1.5, 1.7 * room[wall])  # a side wall enters the view beyond about 1.7 times its distance
    z1 = rng.uniform(min(near + width, room["back"]), room["back"])
    x = -room["left"] if wall == "left" else room["right"]
    xs = (x, x + proud) if wall == "left" else (x - proud, x)
    return np.array([xs[0], y[0], z1 - width]), np.array([xs[1], y[1], z1])


def _overlap(a, b, gap: float = 0.1) -> bool:
    return a[0] < b[1] + gap and b[0] < a[1] + gap and a[2] < b[3] + gap and b[2] < a[3] + gap


def _cast(rays: np.ndarray, room: dict, floor: float, objects: list[dict]):
    """Depth, class index (into ``TWIN_CLASSES``), instance (0 floor, 1 ceiling, 2 walls, 3.. objects), normal."""
    shape = rays.shape[:2]
    names = list(TWIN_CLASSES)
    depth = np.full(shape, np.inf)
    klass, instance = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    normal = np.zeros(shape + (3,))
    planes = [(1, floor, "floor", 0, (0, -1, 0)), (1, floor - room["ceiling"], "ceiling", 1, (0, 1, 0)),
              (2, room["back"], "wall", 2, (0, 0, -1)), (0, -room["left"], "wall", 2, (1, 0, 0)),
              (0, room["right"], "wall", 2, (-1, 0, 0))]
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, offset, name, inst, n in planes:
            t = offset / rays[..., axis]
            hit = (t > 0) & (t < depth)
            depth[hit], klass[hit], instance[hit], normal[hit] = t[hit], names.index(name), inst, n
        for i, obj in enumerate(objects, start=3):
            for lo, hi in obj["boxes"]:
                t1, t2 = lo / rays, hi / rays
                tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
                enter, leave = tmin.max(axis=-1), tmax.min(axis=-1)
                hit = (enter < leave) & (enter > 0) & (enter < depth)
                face = np.argmax(tmin, axis=-1)[..., None]
                n = np.zeros(shape + (3,))
                np.put_along_axis(n, face, -np.sign(np.take_along_axis(rays, face, -1)), -1)
                depth[hit], klass[hit], instance[hit], normal[hit] = enter[hit], names.index(obj["class"]), i, n[hit]
    return depth, klass, instance, normal


def _rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    p, r = np.deg2rad(pitch_deg), np.deg2rad(roll_deg)
    tilt = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])  # optical axis down by p
    spin = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return tilt @ spin


def _valid_window(scale: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """The area inside the white border, scaled, and never smaller than the preprocessing crop."""
    rows, cols = crop_window(shape)
    top, bottom = int(np.floor(VALID_ROWS[0] * scale)), int(np.ceil(VALID_ROWS[1] * scale))
    left, right = int(np.floor(VALID_COLS[0] * scale)), int(np.ceil(VALID_COLS[1] * scale))
    return (slice(min(top, rows.start), max(bottom, rows.stop)), slice(min(left, cols.start), max(right, cols.stop)))


def _raw_depth(depth: np.ndarray, dark: np.ndarray, rng: np.random.Generator, *, fx: float,
               scale: float) -> np.ndarray:
    h, w = depth.shape
    raw = depth * (1 + rng.normal(0, 0.003, depth.shape))  # Kinect noise grows with distance
    missing = dark | (depth > FAR_DROPOUT_M)
    # Projector shadow: background just left of a near object's left edge is not lit by the pattern.
    step = depth[:, :-1] - depth[:, 1:]
    width = np.zeros(depth.shape, np.int64)
    jump = step > 0.15
    width[:, :-1][jump] = np.ceil(fx * KINECT_BASELINE_M * (1 / depth[:, 1:][jump] - 1 / depth[:, :-1][jump]))
    for s in range(int(width.max(initial=0))):
        missing[:, :w - s] |= width[:, s:] > s
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(3, 8)):  # specular or glossy dropouts, 4 to 18 pixels across at full size
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 18) * scale
        missing |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    raw[missing] = 0.0
    return raw


def _write_labeled_mat(path: Path, frames: list[dict], shape: tuple[int, int]) -> None:
    n, (h, w) = len(frames), shape
    with replacing(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            # h5py axis order = MATLAB's reversed: MATLAB H x W x 3 x N is (N, 3, W, H) here.
            specs = {"images": ("image", (n, 3, w, h), np.uint8, "uint8", lambda a: a.transpose(2, 1, 0)),
                     "depths": ("depth", (n, w, h), np.float32, "single", np.transpose),
                     "rawDepths": ("raw_depth", (n, w, h), np.float32, "single", np.transpose),
                     "labels": ("label894", (n, w, h), np.uint16, "uint16", np.transpose)}
            for name, (key, dims, dtype, mclass, to_matlab) in specs.items():
                ds = f.create_dataset(name, shape=dims, dtype=dtype, chunks=(1,) + dims[1:])
                ds.attrs["MATLAB_class"] = np.bytes_(mclass)
                for i, fr in enumerate(frames):
                    ds[i] = to_matlab(fr[key])
        stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0))
        text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".ljust(116)
        header = text.encode("ascii") + b" " * 8 + b"\x00\x02" + b"IM"
        with open(tmp, "r+b") as fh:
            fh.write(header.ljust(512, b"\x00"))


def _cell(strings) -> np.ndarray:
    cell = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        cell[0, i] = np.array([s])
    return cell


def _savemat(path: Path, data: dict) -> None:
    savemat(path, data, compression=False)
