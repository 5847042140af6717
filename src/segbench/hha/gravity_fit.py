"""Gravity direction from a normal field (getYDir) and the rotation onto it (getRMatrix)."""

from __future__ import annotations

import numpy as np

# getYDir parameters of processDepthImage: two stages, 45 then 15 degrees, 5 iterations each.
ANGLE_THRESHOLDS_DEG = (45, 15)
ITERATIONS = (5, 5)
IMAGE_DOWN = np.array([0.0, 1.0, 0.0])


def estimate_gravity(normals: np.ndarray) -> np.ndarray:
    """Gravity ("down" in camera coordinates, y pointing down the image) from unit normals.

    Starting from y = image down, each iteration splits normals n by s = y . n into floor/ceiling-like
    (|s| > cos t) and wall-like (|s| < sin t), and takes y = the eigenvector of the smallest eigenvalue of
    sum_wall n n^T - sum_floor n n^T, signed to agree with the previous y.

    normals: 3 x H x W float64, NaN where undefined (those never enter a class). Returns (3,) unit vector.
    """
    n = normals.reshape(3, -1)
    y = IMAGE_DOWN
    # A is updated only with the normals whose class changed since the previous iteration (few, after the
    # first), and with ufuncs and einsum rather than BLAS: multithreaded BLAS on a busy machine is many
    # times slower than one core here. Summation order differs from the reference only at rounding level.
    weight = np.zeros(n.shape[1])
    a = np.zeros((3, 3))
    for thresh_deg, iterations in zip(ANGLE_THRESHOLDS_DEG, ITERATIONS):
        thresh = np.pi * thresh_deg / 180
        cos_t, sin_t = np.cos(thresh), np.sin(thresh)
        for _ in range(iterations):
            s = np.abs((n[0] * y[0] + n[1] * y[1]) + n[2] * y[2])
            new_weight = (s < sin_t).astype(np.float64)  # wall-like: +1; NaN normals: 0 throughout
            new_weight -= s > cos_t  # floor- or ceiling-like: -1
            changed = np.flatnonzero(new_weight != weight)
            moved = np.take(n, changed, axis=1)  # C-contiguous, unlike n[:, changed]
            a += np.einsum("in,jn,n->ij", moved, moved, new_weight[changed] - weight[changed])
            weight = new_weight
            eigvals, eigvecs = np.linalg.eigh(a)
            new_y = eigvecs[:, np.argmin(eigvals)]
            y = new_y * np.sign(y @ new_y)
    return y


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
