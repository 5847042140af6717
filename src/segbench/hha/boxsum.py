"""Zero-padded (2R+1) x (2R+1) box sums, MATLAB ``filter2(ones(2R+1), f)`` with 'same' size.

Two flavours, because the reference's sums must be reproduced exactly only where a plane fit is singular:

- ``box_sums`` (and ``box_sums_by_band``, which hands them out a band of rows at a time): differences of a
  summed-area table, shared by all radii. Exact for integer channels (the count of valid pixels); for
  float channels off by rounding residue, which is harmless wherever the plane fit is well conditioned
  (empty windows are recognised by their exact zero count).
- ``box_sums_exact_at``: the window values added one by one in row-major order, starting from 0. This is
  the order in which the reference's ``scipy.signal.convolve2d`` (on the image rotated by 180 degrees)
  accumulates, so the result is bit-identical to the reference where it matters: at windows whose plane
  fit is singular, the reference's normal is rounding noise that only identical sums reproduce.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def box_sums(channels: np.ndarray, *, radii: tuple[int, ...]) -> list[np.ndarray]:
    """Box sums of each channel for each radius, zero padding.

    channels: C x H x W float64 (finite), or integers (then the sums are exact and of the same dtype).
    Returns one C x H x W array per radius.
    """
    c, h, w = channels.shape
    out = [np.empty((c, h, w), dtype=channels.dtype) for _ in radii]
    for top, bottom, band in box_sums_by_band(channels, radii=radii):
        for k, sums in enumerate(out):
            sums[:, top:bottom] = band[:, k]
    return out


def box_sums_by_band(channels: np.ndarray, *, radii: tuple[int, ...],
                     band_rows: int = 16) -> Iterator[tuple[int, int, np.ndarray]]:
    """``box_sums`` band by band of rows: yields (top, bottom, sums), sums C x len(radii) x (bottom - top) x W.

    The yielded array is reused for the next band: use it before asking for that. A band of sums (and
    the table rows it needs) stays in cache until it is consumed, where whole-image sums of the 8 plane-fit
    terms would go to memory and back. The values do not depend on ``band_rows``.
    """
    c, h, w = channels.shape
    pad = max(radii)
    # table[i, :, j] = sum of the zero-padded channels over rows < i and columns < j (padded coordinates):
    # table row i holds image rows < i - pad, table column j image columns < j - pad. Rows outermost, so
    # that adding one table row to the next is a single contiguous operation.
    table = np.empty((h + 2 * pad + 1, c, w + 2 * pad + 1), dtype=channels.dtype)
    table[:pad + 1] = 0
    table[:, :, :pad + 1] = 0
    down = np.empty((band_rows, c, table.shape[2]), dtype=table.dtype)
    # Channels outermost in the yielded sums, all radii together (one elementwise pass serves all of them),
    # with a spare row: planes a multiple of 4 KiB apart alias in the cache, which makes elementwise work on
    # them (the normal solve) up to three times slower.
    band = np.empty((c, len(radii), band_rows + 1, w), dtype=table.dtype)
    complete = pad + 1  # table rows below this one are final
    for top in range(0, h, band_rows):
        bottom = min(top + band_rows, h)
        # Output row y of radius R needs table rows y + pad - R and y + pad + R + 1.
        complete = _extend_table(table, channels, complete, bottom + 2 * pad + 1, pad=pad)
        band_down = down[:bottom - top]
        sums = band[:, :, :bottom - top]
        for k, radius in enumerate(radii):
            size = 2 * radius + 1
            lo = pad - radius
            np.subtract(table[lo + size + top:lo + size + bottom], table[lo + top:lo + bottom], out=band_down)
            np.subtract(band_down[:, :, lo + size:lo + size + w], band_down[:, :, lo:lo + w],
                        out=sums[:, k].transpose(1, 0, 2))
        yield top, bottom, sums


def _extend_table(table: np.ndarray, channels: np.ndarray, start: int, stop: int, *, pad: int) -> int:
    """Fill rows start..stop-1 of ``box_sums_by_band``'s summed-area table, given the rows above; returns stop."""
    h, w = channels.shape[1:]
    image_stop = min(stop, h + pad + 1)  # table rows past this one add no image row
    if image_stop > start:
        rows = table[start:image_stop]
        # Prefix sums along each row, then down the columns. Row by row: numpy's accumulate along a strided
        # axis is several times slower than this loop.
        image_rows = channels[:, start - pad - 1:image_stop - pad - 1].transpose(1, 0, 2)
        np.cumsum(image_rows, axis=2, out=rows[:, :, pad + 1:pad + 1 + w])
        rows[:, :, pad + 1 + w:] = rows[:, :, pad + w:pad + w + 1]
        for i in range(start, image_stop):
            np.add(table[i], table[i - 1], out=table[i])
        start = image_stop
    if stop > start:
        table[start:stop] = table[start - 1]
    return stop


def box_sums_exact_at(channels: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray, *,
                      radius: int, max_count: int) -> np.ndarray:
    """Box sums at the pixels (rows[i], cols[i]), summed one value at a time in row-major window order from 0.

    Only ``valid`` pixels contribute (the channels are 0 elsewhere, and adding 0 leaves a sum unchanged),
    and each window must hold at most ``max_count`` of them. channels: C x H x W float64; valid: H x W
    bool; rows, cols: K int arrays. Returns C x K float64.
    """
    c, h, w = channels.shape
    rows, cols = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
    # The valid pixels in row-major order; rank[p] = how many come before flat position p. The valid pixels of
    # one window row, columns lo..hi-1, are then the contiguous run order[rank[lo]:rank[hi]].
    flat_valid = valid.ravel()
    order = np.flatnonzero(flat_valid)
    rank = np.zeros(flat_valid.size + 1, dtype=np.intp)
    np.cumsum(flat_valid, out=rank[1:])
    window_rows = rows[:, None] + np.arange(-radius, radius + 1)  # K x (2R+1), may leave the image
    inside = (window_rows >= 0) & (window_rows < h)
    base = np.clip(window_rows, 0, h - 1) * w
    first = rank[base + np.maximum(cols - radius, 0)[:, None]]
    run = np.where(inside, rank[base + np.minimum(cols + radius + 1, w)[:, None]] - first, 0).ravel()
    counts = run.reshape(len(rows), 2 * radius + 1).sum(axis=1)
    if counts.size and counts.max() > max_count:
        raise ValueError(f"a window holds {counts.max()} valid pixels, more than max_count={max_count}")
    # Expand the runs, in window then row order, into the positions of the valid pixels they hold.
    run_start = np.cumsum(run) - run
    position = order[np.arange(counts.sum()) - np.repeat(run_start - first.ravel(), run)]
    which = np.repeat(np.arange(len(rows)), counts)
    rank_in_window = np.arange(len(which)) - np.repeat(np.cumsum(counts) - counts, counts)
    # The valid pixels of each window in row-major order, left-aligned in a K x max_count table.
    index = np.zeros((len(rows), max_count), dtype=np.intp)
    used = np.zeros((len(rows), max_count))
    index[which, rank_in_window] = position
    used[which, rank_in_window] = 1.0
    values = np.take(channels.reshape(c, -1), index, axis=1)  # C x K x max_count
    values *= used  # x * 1.0 and x * 0.0 are exact
    # Strictly left to right, starting from the first value, as the reference's loop adds (no pairwise
    # summation); the trailing zeros of short windows leave the sum unchanged.
    total = values[:, :, 0].copy()
    for k in range(1, max_count):
        total += values[:, :, k]
    return total
