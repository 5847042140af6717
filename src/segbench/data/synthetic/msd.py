"""A synthetic volumetric task in the Medical Segmentation Decathlon's layout (the twin of MSD Task05_Prostate).

    Task505_TwinProstate/
      dataset.json                                 name, description, tensorImageSize "3D", modality {"0": "MRI"},
                                                   labels, numTraining, numTest, training [{image, label}], test
      imagesTr/twin_001.nii.gz ...                 float32 volumes, one modality
      labelsTr/twin_001.nii.gz ...                 uint8 labels 0 background, 1 gland, 2 central zone, 3 nodule
      imagesTs/twin_101.nii.gz ...                 unlabelled, as MSD's test cases

The task id is above 500, nnU-Net's range for custom tasks, so the twin never collides with a real MSD task; 505
echoes Task05. A case is a gland (ellipsoid, label 1) holding a central zone (a smaller ellipsoid, label 2) and,
in most cases, a nodule (a small sphere, label 3) touching the gland's outer part; each class has its own mean
intensity and texture, and the volume gets Gaussian noise and a smooth multiplicative bias field, so that
z-scoring and intensity augmentation are exercised. Shapes are drawn in millimetres, so the anisotropic voxels
(``SPACING``, 1 x 1 x 1.5 mm: the spacing V-Net resamples to) make them flatter in voxels along z.

On disk each volume is stored as a scanner would write it, with the first two axes reversed (x towards the
patient's left, y towards posterior: an LPS-like affine ``diag(-1, -1, 1.5)`` with an origin), so a reader that
ignores the affine gets flipped volumes; ``segbench.data.msd`` reorients to RAS and recovers the generated arrays
exactly. Files are gzip-compressed with a zero timestamp: the same seed writes the same bytes.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from segbench.infra.atomic import replacing, write_json

TASK = "Task505_TwinProstate"
PREFIX = "twin"
SHAPE = (64, 64, 32)  # voxels along x (R), y (A), z (S): divisible by 16 (V-Net) and 8 (3D U-Net)
SPACING = (1.0, 1.0, 1.5)  # mm
LABELS = {"0": "background", "1": "gland", "2": "central zone", "3": "nodule"}
# mean intensity and texture amplitude per label (background, gland, central zone, nodule)
MEANS = (100.0, 300.0, 420.0, 180.0)
TEXTURE = (10.0, 30.0, 25.0, 15.0)
NOISE_STD = 25.0
NODULE_PROBABILITY = 0.75


def storage_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """The affine the twin writes: voxel (i, j, k) of the stored array -> scanner mm, with i towards the left and
    j towards posterior (both axes reversed from RAS) and k towards superior; the volume centred on the origin."""
    sx, sy, sz = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [sx * (shape[0] - 1) / 2, sy * (shape[1] - 1) / 2, -sz * (shape[2] - 1) / 2]
    return affine


def to_storage(ras: np.ndarray) -> np.ndarray:
    """An array in RAS voxel order (x, y, z[, channel]) -> the stored order of ``storage_affine``."""
    return np.ascontiguousarray(ras[::-1, ::-1])


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` with ``affine`` as ``path`` (``.nii.gz``), atomically, gzip with a zero timestamp (the
    same array writes the same bytes)."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)  # scanner coordinates, as MSD's files
    img.header.set_sform(affine, code=1)
    with replacing(path) as tmp:
        Path(tmp).write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
    return Path(path)


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def make_case(rng: np.random.Generator, shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """One case in RAS voxel order: ``(image float32 X x Y x Z, label uint8 X x Y x Z)``."""
    mm = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]  # voxel centres in mm
    grid = np.meshgrid(*mm, indexing="ij")
    half = np.array([n * s / 2 for n, s in zip(shape, spacing)])  # half extent in mm
    label = np.zeros(shape, np.uint8)
    radii = half * rng.uniform(0.45, 0.7, 3)
    centre = rng.uniform(-0.15, 0.15, 3) * half
    gland = _ellipsoid(grid, centre, radii)
    label[gland] = 1
    inner = radii * rng.uniform(0.4, 0.6, 3)
    label[_ellipsoid(grid, centre + rng.uniform(-0.1, 0.1, 3) * radii, inner)] = 2
    if rng.random() < NODULE_PROBABILITY:  # a nodule centred on the gland's outer part, inside the gland
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        at = centre + 0.75 * radii * direction
        r = rng.uniform(0.18, 0.28) * radii.min()
        label[_ellipsoid(grid, at, (r, r, r)) & gland] = 3
    image = np.zeros(shape)
    for c, (mean, amplitude) in enumerate(zip(MEANS, TEXTURE)):  # each class: its mean and its own texture
        texture = _smooth_field(rng, shape, 1.5)
        image[label == c] = mean + amplitude * texture[label == c]
    bias = 1.0 + 0.15 * _smooth_field(rng, shape, 8.0)
    image = image * bias + rng.normal(0.0, NOISE_STD, shape)
    return np.clip(image, 0.0, None).astype(np.float32), label


def write_twin(out_dir: str | os.PathLike, *, n_train: int = 24, n_test: int = 8, shape=SHAPE, spacing=SPACING,
               seed: int = 0, task: str = TASK) -> Path:
    """Write the twin under ``out_dir/task/``; return its ``dataset.json`` (written last: its existence means
    the task is complete). Deterministic in ``seed``: case ``i`` uses generator ``(seed, i)``.

    ``shape`` is (x, y, z) in voxels, ``spacing`` in mm. Training cases are ``twin_001`` ...; test cases
    ``twin_101`` ... (unlabelled, as in MSD).
    """
    if n_train < 1 or n_test < 0 or min(shape) < 4 or len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"need n_train >= 1, n_test >= 0 and a 3D shape of at least 4 voxels a side; got "
                         f"n_train={n_train}, n_test={n_test}, shape={shape}, spacing={spacing}")
    if n_test > 0 and n_train > 99:
        raise ValueError(f"n_train must be <= 99 so that test case ids (101...) stay apart; got {n_train}")
    root = Path(out_dir) / task
    shape, spacing = tuple(int(n) for n in shape), tuple(float(s) for s in spacing)
    affine = storage_affine(shape, spacing)
    training, test = [], []
    for i in range(n_train + n_test):
        image, label = make_case(np.random.default_rng([seed, i]), shape, spacing)
        is_train = i < n_train
        name = f"{PREFIX}_{i + 1:03d}.nii.gz" if is_train else f"{PREFIX}_{101 + i - n_train:03d}.nii.gz"
        save_nifti(root / ("imagesTr" if is_train else "imagesTs") / name, to_storage(image), affine)
        if is_train:
            save_nifti(root / "labelsTr" / name, to_storage(label), affine)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    description = {
        "name": task.split("_", 1)[1], "description": "segbench synthetic twin of MSD Task05_Prostate (ellipsoids)",
        "reference": "segbench.data.synthetic.msd", "licence": "CC-BY-SA 4.0", "release": "1.0",
        "tensorImageSize": "3D", "modality": {"0": "MRI"}, "labels": dict(LABELS),
        "numTraining": n_train, "numTest": n_test, "training": training, "test": test,
        "segbench_twin": {"seed": seed, "shape_xyz": list(shape), "spacing_mm": list(spacing)},
    }
    return write_json(root / "dataset.json", description, indent=4)
