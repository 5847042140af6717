"""Medical Segmentation Decathlon tasks (and their twin, ``segbench.data.synthetic.msd``) read with nibabel.

    task = read_task("data/raw/msd_prostate/MSD/Task05_Prostate")   # dataset.json, checked against the files
    case = load_case(task, task["training"][0])                      # Volume: image, label, spacing, affine
    task, cases = load_cases(task_dir, n_val=6)                      # the fit cases, z-scored: (name, image, label)

Axis order: every array is reoriented to RAS+ (``nibabel.as_closest_canonical``: voxel axes x, y, z point towards
the patient's right, anterior and superior) and returned as nibabel orders it, **x, y, z** (not SimpleITK's z, y,
x): ``image`` is C x X x Y x Z float32 (C the modalities; a 3D file gives C = 1, a 4D MSD file X x Y x Z x C is
moved channel-first), ``label`` X x Y x Z uint8. ``spacing`` is (sx, sy, sz) in mm, from the canonical affine.
A volumetric net sees N x C x D x H x W with D = x, H = y, W = z.

The real MSD tars carry macOS ``._*`` resource files beside every volume; they are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from segbench.errors import MissingInputError, SegbenchError

REQUIRED = ("name", "tensorImageSize", "modality", "labels", "numTraining", "numTest", "training", "test")
FOLDERS = {"imagesTr": "training image", "labelsTr": "training label", "imagesTs": "test image"}


class TaskError(SegbenchError, ValueError):
    """A task folder whose ``dataset.json`` and files disagree."""


@dataclass(frozen=True)
class Volume:
    """One case: ``image`` C x X x Y x Z float32, ``label`` X x Y x Z uint8 (None for a test case), RAS+."""

    name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]  # mm along x, y, z
    affine: np.ndarray  # 4 x 4, canonical voxel (x, y, z) -> scanner RAS mm
    orientation: tuple[str, str, str]  # axis codes of the arrays: ("R", "A", "S")


def read_task(task_dir: str | os.PathLike) -> dict:
    """``task_dir/dataset.json``, checked: required keys, counts equal to the lists, every listed file present,
    and every ``.nii.gz`` in imagesTr / labelsTr / imagesTs listed. Adds ``"root"`` (the folder)."""
    root = Path(task_dir)
    path = root / "dataset.json"
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: {root} is not an MSD task folder (expected dataset.json, "
                                f"imagesTr/, labelsTr/, imagesTs/)")
    task = json.loads(path.read_text())
    missing = [key for key in REQUIRED if key not in task]
    if missing:
        raise TaskError(f"{path} lacks {missing}; an MSD dataset.json has {list(REQUIRED)}")
    if task["numTraining"] != len(task["training"]) or task["numTest"] != len(task["test"]):
        raise TaskError(f"{path}: numTraining {task['numTraining']} / numTest {task['numTest']} but it lists "
                        f"{len(task['training'])} training and {len(task['test'])} test cases")
    if "0" not in task["labels"]:
        raise TaskError(f"{path}: labels must name label 0 (background); got {task['labels']}")
    listed = {"imagesTr": set(), "labelsTr": set(), "imagesTs": set()}
    for i, entry in enumerate(task["training"]):
        if not isinstance(entry, dict) or set(entry) != {"image", "label"}:
            raise TaskError(f"{path}: training[{i}] must be {{'image': ..., 'label': ...}}, got {entry!r}")
        listed["imagesTr"].add(_relative(root, entry["image"], "imagesTr", path))
        listed["labelsTr"].add(_relative(root, entry["label"], "labelsTr", path))
    for entry in task["test"]:
        listed["imagesTs"].add(_relative(root, entry, "imagesTs", path))
    for folder, what in FOLDERS.items():
        absent = sorted(name for name in listed[folder] if not (root / folder / name).is_file())
        if absent:
            raise TaskError(f"{path} lists {len(absent)} {what}(s) missing from {root / folder}: {absent[:5]}")
        present = {p.name for p in (root / folder).glob("*.nii*") if not p.name.startswith("._")} \
            if (root / folder).is_dir() else set()
        unlisted = sorted(present - listed[folder])
        if unlisted:
            raise TaskError(f"{root / folder} holds {len(unlisted)} {what}(s) that {path} does not list: "
                            f"{unlisted[:5]}")
    return {**task, "root": str(root)}


def _relative(root: Path, entry: str, folder: str, path: Path) -> str:
    """The file name of a dataset.json entry ``./<folder>/<name>``; raises for another folder."""
    parts = Path(entry).parts
    parts = parts[1:] if parts and parts[0] == "." else parts
    if len(parts) != 2 or parts[0] != folder:
        raise TaskError(f"{path}: entry {entry!r} should be './{folder}/<name>.nii.gz'")
    return parts[1]


def _canonical(path: Path):
    img = nib.load(path)
    return nib.as_closest_canonical(img)


def load_case(task: dict, entry: dict | str) -> Volume:
    """The case ``entry`` (an item of ``task["training"]`` or ``task["test"]``) of a task from ``read_task``.

    Raises ``TaskError`` when the label's grid differs from the image's (shape or affine), when the label holds
    values that ``dataset.json`` does not name, or when the image's channels differ from its modalities.
    """
    root = Path(task["root"])
    image_path = root / (entry["image"] if isinstance(entry, dict) else entry)
    img = _canonical(image_path)
    image = np.asarray(img.dataobj, dtype=np.float32)
    modalities = len(task["modality"])
    if image.ndim == 3:
        image = image[None]
    elif image.ndim == 4:
        image = np.moveaxis(image, -1, 0)
    else:
        raise TaskError(f"{image_path}: expected a 3D (X x Y x Z) or 4D (X x Y x Z x C) volume, got shape "
                        f"{image.shape}")
    if image.shape[0] != modalities:
        raise TaskError(f"{image_path}: {image.shape[0]} channel(s) but dataset.json names {modalities} modalities "
                        f"({task['modality']})")
    label = None
    if isinstance(entry, dict):
        label_path = root / entry["label"]
        lab = _canonical(label_path)
        label_raw = np.asarray(lab.dataobj)
        if label_raw.shape != image.shape[1:]:
            raise TaskError(f"{label_path} has shape {label_raw.shape}, its image {image_path.name} "
                            f"{image.shape[1:]} (X x Y x Z after reorientation): they must match")
        if not np.allclose(lab.affine, img.affine, atol=1e-3):
            raise TaskError(f"{label_path}: its affine differs from its image's:\n{lab.affine}\nvs\n{img.affine}")
        values = {int(v) for v in np.unique(label_raw)}
        named = {int(k) for k in task["labels"]}
        if not values <= named:
            raise TaskError(f"{label_path} holds labels {sorted(values - named)} that dataset.json does not name "
                            f"(named: {task['labels']})")
        label = label_raw.astype(np.uint8)
    zooms = nib.affines.voxel_sizes(img.affine)
    return Volume(name=image_path.name.split(".")[0], image=image, label=label,
                  spacing=tuple(float(z) for z in zooms), affine=np.asarray(img.affine),
                  orientation=tuple(nib.aff2axcodes(img.affine)))


def split_training(task: dict, n_val: int) -> tuple[list[dict], list[dict]]:
    """The training entries split into (fit, held out): the last ``n_val`` are held out (MSD's test cases have
    no public labels, so Dice is measured on held-out training cases)."""
    cases = list(task["training"])
    if not 0 < n_val < len(cases):
        raise ValueError(f"n_val must be in [1, {len(cases) - 1}] for a task with {len(cases)} training cases, "
                         f"got {n_val}")
    return cases[:-n_val], cases[-n_val:]


def normalise(image: np.ndarray) -> np.ndarray:
    """C x X x Y x Z -> z-scored per channel with the mean and std of the voxels > 0 (V-Net's ``main.py``)."""
    out = np.empty_like(image, dtype=np.float32)
    for c, channel in enumerate(image):
        fg = channel[channel > 0]
        fg = channel if fg.size < 2 else fg
        out[c] = (channel - fg.mean()) / max(float(fg.std()), 1e-6)
    return out


def load_cases(task_dir: str | os.PathLike, entries: list[dict] | None = None, *, n_val: int | None = None,
               held_out: bool = False) -> tuple[dict, list]:
    """The task and its normalised cases ``[(name, image C x X x Y x Z, label X x Y x Z)]``: ``entries``, or the
    fit (``held_out`` False) / held-out cases of ``split_training(task, n_val)``."""
    task = read_task(task_dir)
    if entries is None:
        fit, val = split_training(task, n_val)
        entries = val if held_out else fit
    cases = []
    for entry in entries:
        case = load_case(task, entry)
        cases.append((case.name, normalise(case.image), case.label))
    return task, cases
