"""Zero-padded (2R+1) x (2R+1) box sums, MATLAB ``filter2(ones(2R+1), f)`` with 'same' size.

Two flavours, because the reference's sums must be reproduced exactly only where a plane fit is singular:

- ``box_sums``: differences of a summed-area table, shared by all radii. Exact for integer-valued channels
  (the count of valid pixels); elsewhere off by rounding residue, which is harmless wherever the plane
  fit is well conditioned (empty windows are recognised by their exact zero count).
- ``box_sums_exact_at``: the window values added one by one in row-major order, starting from 0. This is
  the order in which the reference's ``scipy.signal.convolve2d`` (on the image rotated by 180 degrees)
  accumulates, so the result is bit-identical to the reference where it matters: at windows whose plane
  fit is singular, the reference's normal is rounding noise that only identical sums reproduce.
"""

from __future__ import annotations

import numpy as np


def box_sums(channels: np.ndarray, *, radii: tuple[int, ...]) -> list[np.ndarray]:
    """Box sums of each channel for each radius, zero padding.

    channels: C x H x W float64 (finite). Returns one C x H x W float64 array per radius.
    """
    c, h, w = channels.shape
    pad = max(radii)
    # table[:, i, j] = sum of the zero-padded channel over rows < i and columns < j (padded coordinates).
    table = np.zeros((c, h + 2 * pad + 1, w + 2 * pad + 1))
    inner = table[:, pad + 1:pad + 1 + h]
    inner[:, :, pad + 1:pad + 1 + w] = channels
    np.cumsum(inner, axis=2, out=inner)
    # Row by row: numpy's accumulate along a strided axis is several times slower than this loop.
    for i in range(pad + 1, pad + 1 + h):
        np.add(table[:, i], table[:, i - 1], out=table[:, i])
    table[:, pad + 1 + h:] = table[:, pad + h:pad + h + 1]
    out = []
    for radius in radii:
        size = 2 * radius + 1
        lo = pad - radius
        across = np.subtract(table[:, :, lo + size:lo + size + w], table[:, :, lo:lo + w])
        out.append(np.subtract(across[:, lo + size:lo + size + h], across[:, lo:lo + h]))
    return out


def box_sums_exact_at(channels: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray, *,
                      radius: int, max_count: int) -> np.ndarray:
    """Box sums at the pixels (rows[i], cols[i]), summed one value at a time in row-major window order from 0.

    Only ``valid`` pixels contribute (the channels are 0 elsewhere, and adding 0 leaves a sum unchanged),
    and each window must hold at most ``max_count`` of them. channels: C x H x W float64; valid: H x W
    bool; rows, cols: K int arrays. Returns C x K float64.
    """
    c, h, w = channels.shape
    size = 2 * radius + 1
    padded = np.pad(valid, radius)
    offsets = (np.arange(size)[:, None] * padded.shape[1] + np.arange(size)[None, :]).ravel()
    # Window top-left corners in the padded mask are the pixel coordinates themselves.
    inside = padded.ravel()[(rows * padded.shape[1] + cols)[:, None] + offsets[None, :]]  # K x size^2
    which, pos = np.nonzero(inside)  # sorted by window, then row-major within a window
    counts = np.bincount(which, minlength=len(rows))
    if counts.size and counts.max() > max_count:
        raise ValueError(f"a window holds {counts.max()} valid pixels, more than max_count={max_count}")
    rank = np.arange(len(which)) - (np.cumsum(counts) - counts)[which]
    # The valid pixels of each window in row-major order, left-aligned in a K x max_count table.
    index = np.zeros((len(rows), max_count), dtype=np.intp)
    used = np.zeros((len(rows), max_count))
    index[which, rank] = (rows[which] + pos // size - radius) * w + (cols[which] + pos % size - radius)
    used[which, rank] = 1.0
    values = channels.reshape(c, -1)[:, index] * used  # x * 1.0 and x * 0.0 are exact
    # cumsum accumulates strictly left to right (no pairwise summation), as the reference's loop does;
    # the trailing zeros of short windows leave the sum unchanged.
    return np.cumsum(values, axis=2)[:, :, -1]
