"""Camera matrices and input checks for HHA encoding.

Conventions of the reference (Gupta's MATLAB code): K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] and pixel
coordinates are 1-based (u = column index + 1, v = row index + 1), as in MATLAB.
"""

from __future__ import annotations

import numpy as np

# getCameraParam('color') of s-gupta/nyu-hooks: the labeled NYUDv2 depths are registered to the colour camera.
NYU_COLOR_CAMERA = np.array([[5.1885790117450188e+02, 0.0, 3.2558244941119034e+02],
                             [0.0, 5.1946961112127485e+02, 2.5373616633400465e+02],
                             [0.0, 0.0, 1.0]])
NYU_COLOR_CAMERA.setflags(write=False)
# Indoor RGB-D sensors see up to ~10 m; larger values mean the depth is not in metres.
MAX_DEPTH_M = 100.0


def crop_camera(camera_matrix: np.ndarray, *, top: int = 45, left: int = 40) -> np.ndarray:
    """The 3x3 camera of a frame cropped by ``top`` rows and ``left`` columns (cropCamera: cx -= left, cy -= top).

    The defaults give Gupta's 425 x 560 NYUDv2 crop (1-based rows 46:470, columns 41:600).
    """
    out = check_camera(camera_matrix).copy()
    out[0, 2] -= left
    out[1, 2] -= top
    return out


def check_camera(camera_matrix) -> np.ndarray:
    """``camera_matrix`` as a float64 3x3 array; raises ValueError unless it is 3x3 with finite, positive fx, fy."""
    k = np.asarray(camera_matrix, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"camera_matrix must be 3x3 [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got shape {k.shape}; "
                         "pass the colour camera, e.g. segbench.hha.NYU_COLOR_CAMERA or crop_camera(...)")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"camera_matrix must be finite, got {k.tolist()}")
    fx, fy = k[0, 0], k[1, 1]
    if not (fx > 0 and fy > 0):
        raise ValueError(f"camera_matrix focal lengths must be positive, got fx={fx}, fy={fy}; "
                         "expected pixels, e.g. fx = fy = 519 for NYUDv2")
    return k


def check_depths(depth_m, raw_depth_m) -> tuple[np.ndarray, np.ndarray]:
    """Both depth maps as float64 H x W arrays in metres; raises ValueError on bad shapes or values.

    ``depth_m`` is the filled depth; ``raw_depth_m`` the raw sensor depth, 0 where missing. Both must be finite
    and non-negative and share one 2-D shape.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    raw = np.asarray(raw_depth_m, dtype=np.float64)
    if depth.ndim != 2 or depth.shape != raw.shape:
        raise ValueError(f"depth_m and raw_depth_m must be 2-D maps of one shape (H, W), got {depth.shape} and "
                         f"{raw.shape}; pass single-channel depth frames in metres")
    if min(depth.shape) < 1:
        raise ValueError(f"depth maps must not be empty, got shape {depth.shape}")
    for name, arr in (("depth_m", depth), ("raw_depth_m", raw)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} has {int(bad.sum())} non-finite values (NaN or inf); expected finite depths "
                             "in metres, with 0 marking missing raw depth")
        if (arr < 0).any():
            raise ValueError(f"{name} has negative values (min {arr.min():g}); expected depths in metres >= 0")
        if arr.max() > MAX_DEPTH_M:
            raise ValueError(f"{name} reaches {arr.max():g}, more than {MAX_DEPTH_M:g} m; expected metres: divide "
                             "depth PNGs by their units (1000 for mm, 10000 for the port's 0.1 mm)")
    return depth, raw
