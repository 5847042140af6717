"""U-Net's elastic deformation (Ronneberger et al. 2015, section 3.1), applied alike to an image and its labels.

"Smooth deformations using random displacement vectors on a coarse 3 by 3 grid. The displacements are
sampled from a Gaussian distribution with 10 pixels standard deviation. Per-pixel displacements are then
computed using bicubic interpolation." The 3 x 3 control points sit on the corners, edge midpoints and centre
of the image; output pixel p takes the input at p + d(p), bilinearly for the image and by nearest neighbour
for the labels (so no new label values appear, 255 included), with mirrored borders for both. This is not
the Simard-style Gaussian-smoothed per-pixel field that many libraries call "elastic".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def displacement_field(shape: tuple[int, int], rng: np.random.Generator, *, grid: int = 3,
                       sigma: float = 10.0) -> np.ndarray:
    """A smooth random field 2 x H x W (float32, pixels; [0] rows, [1] columns): ``grid x grid`` displacements
    drawn from N(0, sigma^2), interpolated bicubically with the control points on the image's corners."""
    if grid < 2 or sigma < 0:
        raise ValueError(f"need grid >= 2 control points per axis and sigma >= 0, got grid={grid}, sigma={sigma}")
    control = torch.from_numpy(rng.normal(0.0, sigma, size=(1, 2, grid, grid)).astype(np.float32))
    field = F.interpolate(control, size=tuple(shape), mode="bicubic", align_corners=True)
    return field[0].numpy()


def _warp(x: np.ndarray, grid: torch.Tensor, mode: str) -> np.ndarray:
    """Sample H x W or H x W x C ``x`` at ``grid`` (1 x H x W x 2, normalised), mirrored borders."""
    t = torch.from_numpy(x.astype(np.float32)).reshape(*x.shape[:2], -1).permute(2, 0, 1)[None]
    y = F.grid_sample(t, grid, mode=mode, padding_mode="reflection", align_corners=False)[0].permute(1, 2, 0)
    y = y.reshape(x.shape).numpy()
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return y.astype(x.dtype)


def elastic_deform(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, grid: int = 3,
                   sigma: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Deform ``image`` (H x W or H x W x C, any dtype) and ``label`` (H x W integers) by one random field.

    Returns new arrays of the same shapes and dtypes: the image resampled bilinearly (integers rounded),
    the labels by nearest neighbour. ``rng`` draws the ``grid x grid`` displacements (std ``sigma`` px).
    """
    if image.shape[:2] != label.shape or label.ndim != 2:
        raise ValueError(f"expected an H x W (x C) image and an H x W label of the same size, got "
                         f"{image.shape} and {label.shape}")
    h, w = label.shape
    dy, dx = torch.from_numpy(displacement_field((h, w), rng, grid=grid, sigma=sigma))
    rows = torch.arange(h, dtype=torch.float32)[:, None] + dy
    cols = torch.arange(w, dtype=torch.float32)[None, :] + dx
    # grid_sample's normalised coordinates with align_corners=False: pixel centre i -> (2i + 1) / n - 1
    grid_xy = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)[None]
    return _warp(image, grid_xy, "bilinear"), _warp(label, grid_xy, "nearest")
