"""Surface normals by least-squares plane fits over square windows (computeNormalsSquareSupport).

At every pixel the plane n . P = 1 is fitted to the valid points of the (2R+1) x (2R+1) window around it:
with x = X/Z, y = Y/Z, the normal equations are AtA n = Atb, AtA = sum of [x y 1]^T [x y 1] and
Atb = sum of [x y 1]^T / Z. The reference solves them as N = adj(AtA) . Atb (no division by the
determinant), then normalises N. All arithmetic below follows the reference's operation order in float64
(numpy ufuncs never fuse multiply-adds), so identical window sums give identical normals.
"""

from __future__ import annotations

import numpy as np

from segbench.hha.boxsum import box_sums, box_sums_by_band, box_sums_exact_at


def point_cloud(depth_cm: np.ndarray, camera_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X and Y (cm) of every pixel, Z being ``depth_cm`` itself (getPointCloudFromZ, 1-based pixel coordinates).

    depth_cm: H x W float64. Returns (X, Y), each H x W float64.
    """
    h, w = depth_cm.shape
    fx, fy = camera_matrix[0, 0], camera_matrix[1, 1]
    cx, cy = camera_matrix[0, 2], camera_matrix[1, 2]
    u = np.arange(1, w + 1) - cx
    v = np.arange(1, h + 1) - cy
    return (u[None, :] * depth_cm) / fx, (v[:, None] * depth_cm) / fy


def plane_fit_terms(x: np.ndarray, y: np.ndarray, z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-pixel terms of AtA and Atb, zero where ``valid`` is False.

    x, y, z: H x W float64 point cloud (cm); valid: H x W bool.
    Returns 8 x H x W float64: (x/z)^2, (x/z)(y/z), x/z, (y/z)^2, y/z, x/z^2, y/z^2, 1/z. The remaining
    entry of AtA, the sum of 1, is the number of valid pixels in a window: ``fit_normals`` counts it in integers.
    """
    terms = np.empty((8,) + z.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(x, z, out=terms[2])
        np.divide(y, z, out=terms[4])
        zz = z * z
        np.divide(x, zz, out=terms[5])
        np.divide(y, zz, out=terms[6])
        np.divide(1.0, z, out=terms[7])
    np.multiply(terms[2], terms[2], out=terms[0])
    np.multiply(terms[2], terms[4], out=terms[1])
    np.multiply(terms[4], terms[4], out=terms[3])
    np.copyto(terms, 0.0, where=~valid)
    return terms


def fit_normals(terms: np.ndarray, valid: np.ndarray, *, radii: tuple[int, ...]) -> list[np.ndarray]:
    """Unit normals N = adj(AtA) . Atb / |adj(AtA) . Atb| of the plane fits over each radius's windows.

    The window sums are bit-exact wherever the fit can be singular: where the valid pixels of a window are
    collinear (or just one). A line holds at most 2R+1 pixels of a (2R+1)^2 window, so windows with 1..2R+1
    valid pixels are re-summed in the reference's order: there the reference's normal is rounding noise of
    its own sums (and for R = 10 those noisy normals still vote in the gravity fit). With more valid pixels
    the fit is well conditioned, and fast-sum residue moves the normal by ~1e-10 rad. The fast sums are
    solved band by band as ``box_sums_by_band`` yields them, so that they never leave the cache.
    terms: 8 x H x W (``plane_fit_terms``); valid: H x W bool. Returns one 3 x H x W float64 array per radius,
    NaN where the window has no valid pixel (the reference's exact sums are 0 there and 0/0 gives NaN, while
    fast sums leave residue that would give an arbitrary normal).
    """
    counts = np.concatenate(box_sums(valid[None].astype(np.int32), radii=radii))  # len(radii) x H x W, exact
    exact = []
    for radius, count in zip(radii, counts):
        max_count = 2 * radius + 1
        rows, cols = np.nonzero((count > 0) & (count <= max_count))  # sorted by row
        exact.append((rows, cols, box_sums_exact_at(terms, valid, rows, cols, radius=radius, max_count=max_count)))
    a5 = counts.astype(np.float64)
    normals = np.empty((3, len(radii)) + valid.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for top, bottom, sums in box_sums_by_band(terms, radii=radii):
            for k, (rows, cols, exact_sums) in enumerate(exact):
                first, stop = np.searchsorted(rows, (top, bottom))
                sums[:, k, rows[first:stop] - top, cols[first:stop]] = exact_sums[:, first:stop]
            _solve_block(sums, a5[:, top:bottom], normals[:, :, top:bottom])
    return [normals[:, k] for k in range(len(radii))]


def _solve_block(sums: np.ndarray, a5: np.ndarray, n: np.ndarray) -> None:
    """N into n (3 x ...) from window sums (8 x ...) and counts (...): invertIt, mutiplyIt, then normalised.

    sums: the box sums of the terms of ``plane_fit_terms``; a5: float64, the valid pixels per window.
    AtA = [[a0, a1, a2], [a1, a3, a4], [a2, a4, a5]] and Atb = (b0, b1, b2).
    """
    a0, a1, a2, a3, a4, b0, b1, b2 = sums
    c0 = a3 * a5 - a4 * a4
    c1 = a2 * a4 - a1 * a5  # the reference writes -(a1 a5) + a2 a4: the same IEEE result
    c2 = a1 * a4 - a2 * a3
    c3 = a0 * a5 - a2 * a2
    c4 = a1 * a2 - a0 * a4
    c5 = a0 * a3 - a1 * a1
    np.add(c0 * b0 + c1 * b1, c2 * b2, out=n[0])
    np.add(c1 * b0 + c3 * b1, c4 * b2, out=n[1])
    np.add(c2 * b0 + c4 * b1, c5 * b2, out=n[2])
    n /= np.sqrt((n[0] * n[0] + n[1] * n[1]) + n[2] * n[2])
    n[:, a5 == 0] = np.nan


def orient_normals(n: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Flip normals in place to point away from the camera, N . P >= 0, as the reference does.

    The reference first multiplies by sign(N_z) (0 -> +1), then by sign(N . P) (NaN, 0 -> +1); the net
    factor is sign(N . P) when that is non-zero, else sign(N_z). n: 3 x H x W; x, y, z: unmasked point
    cloud, H x W. Returns n.
    """
    dot = (n[0] * x + n[1] * y) + n[2] * z
    flip = np.where(dot > 0, False, np.where(dot < 0, True, n[2] < 0))
    np.negative(n, out=n, where=flip)
    return n
