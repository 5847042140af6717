"""Gravity direction from a normal field (getYDir) and the rotation onto it (getRMatrix)."""

from __future__ import annotations

import numpy as np

# getYDir parameters of processDepthImage: two stages, 45 then 15 degrees, 5 iterations each.
ANGLE_THRESHOLDS_DEG = (45, 15)
ITERATIONS = (5, 5)
IMAGE_DOWN = np.array([0.0, 1.0, 0.0])
# Speed only (the classes are exact either way): how far y may move before every normal is re-classified.
RECLASSIFY_MARGIN = 0.02


def estimate_gravity(normals: np.ndarray) -> np.ndarray:
    """Gravity ("down" in camera coordinates, y pointing down the image) from unit normals.

    Starting from y = image down, each iteration splits normals n by s = y . n into floor/ceiling-like
    (|s| > cos t) and wall-like (|s| < sin t), and takes y = the eigenvector of the smallest eigenvalue of
    sum_wall n n^T - sum_floor n n^T, signed to agree with the previous y.

    normals: 3 x H x W float64, NaN where undefined (those never enter a class). Returns (3,) unit vector.
    """
    n = normals.reshape(3, -1)
    # Speed only: a NaN normal never enters a class (|s| < sin t and |s| > cos t are both False).
    n = np.compress(~np.isnan(n[0]), n, axis=1)
    y = IMAGE_DOWN
    # A is updated only with the normals whose class changed since the previous iteration (few, after the
    # first), with ufuncs rather than BLAS: multithreaded BLAS on a busy machine is many times slower than
    # one core here. Summation order differs from the reference only at rounding level.
    weight = np.zeros(n.shape[1])
    a = np.zeros((3, 3))
    for thresh_deg, iterations in zip(ANGLE_THRESHOLDS_DEG, ITERATIONS):
        thresh = np.pi * thresh_deg / 180
        cos_t, sin_t = np.cos(thresh), np.sin(thresh)
        y_ref = None
        for _ in range(iterations):
            # |s| moves by at most |y - y_ref| (unit n), so while y stays within RECLASSIFY_MARGIN of the y
            # of the last full pass, only normals that were that close to a threshold can change class.
            if y_ref is None or np.linalg.norm(y - y_ref) + 1e-9 >= RECLASSIFY_MARGIN:
                y_ref = y
                s = _abs_cos(n, y)
                near = np.flatnonzero(np.minimum(np.abs(s - sin_t), np.abs(s - cos_t)) < RECLASSIFY_MARGIN)
                n_near = np.take(n, near, axis=1)  # C-contiguous, unlike n[:, near]
                new_weight = _classify(s, cos_t, sin_t)
                changed = np.flatnonzero(new_weight != weight)
                new_class = new_weight[changed]
            else:
                near_weight = _classify(_abs_cos(n_near, y), cos_t, sin_t)
                moved = near_weight != weight[near]
                changed, new_class = near[moved], near_weight[moved]
            a += _weighted_scatter(np.take(n, changed, axis=1), new_class - weight[changed])
            weight[changed] = new_class
            eigvals, eigvecs = np.linalg.eigh(a)
            new_y = eigvecs[:, np.argmin(eigvals)]
            y = new_y * np.sign(y @ new_y)
    return y


def _abs_cos(n: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|y . n| for each column of n (3 x K), summed in the reference's order."""
    return np.abs((n[0] * y[0] + n[1] * y[1]) + n[2] * y[2])


def _classify(s: np.ndarray, cos_t: float, sin_t: float) -> np.ndarray:
    """+1 for wall-like normals (|s| < sin t), -1 for floor- or ceiling-like ones (|s| > cos t), else 0."""
    weight = (s < sin_t).astype(np.float64)
    weight -= s > cos_t
    return weight


def _weighted_scatter(n: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """sum_k weight[k] n[:, k] n[:, k]^T (3 x 3, symmetric), with numpy's pairwise sums; n: 3 x K."""
    weighted = n * weight
    out = np.empty((3, 3))
    for i in range(3):
        for j in range(i, 3):
            out[i, j] = out[j, i] = np.multiply(weighted[i], n[j]).sum()
    return out


def rotation_to(gravity: np.ndarray) -> np.ndarray:
    """Rodrigues rotation R taking image down [0, 1, 0] to ``gravity`` (getRMatrix); identity within 0.1 deg.

    Built entry by entry in the reference's order, I + sin(phi) S + (1 - cos(phi)) S S, with S S summed
    left to right. gravity: (3,). Returns 3 x 3 float64.
    """
    yf = gravity / np.linalg.norm(gravity)
    axis = np.cross(IMAGE_DOWN, yf)
    axis = axis / np.linalg.norm(axis)
    phi = np.degrees(np.arccos(IMAGE_DOWN @ yf))
    if not abs(phi) > 0.1:
        return np.eye(3)
    phi = phi * (np.pi / 180)
    ax0, ax1, ax2 = (float(a) for a in axis)
    s = [[0.0, -ax2, ax1], [ax2, 0.0, -ax0], [-ax1, ax0, 0.0]]
    sin_phi, one_minus_cos = float(np.sin(phi)), float(1 - np.cos(phi))
    r = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            ss = (s[i][0] * s[0][j] + s[i][1] * s[1][j]) + s[i][2] * s[2][j]
            r[i, j] = (float(i == j) + sin_phi * s[i][j]) + one_minus_cos * ss
    return r
