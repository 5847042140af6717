"""Encoding many frames in parallel, and writing HHA PNGs."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segbench.hha.encoding import encode
from segbench.infra.atomic import replacing
from segbench.infra.progress import progress_bar


def _encode_args(args):
    return encode(*args)


def encode_many(depths: Sequence[np.ndarray], raw_depths: Sequence[np.ndarray], camera_matrix: np.ndarray, *,
                threads: int = 1, progress: bool | None = True) -> list[np.ndarray]:
    """HHA images of many frames, in input order, over ``threads`` worker processes.

    depths, raw_depths: equally long sequences of H x W depth maps in metres (raw: 0 = missing);
    camera_matrix: the 3 x 3 K shared by all frames. threads: worker processes (1 = in this process).
    progress: a bar on a terminal, plain lines in a log (False: none). Returns a list of H x W x 3 uint8.
    Processes, not threads: numpy drops the GIL only inside large ufunc loops, and the per-frame Python
    work then serialises threads (benchmarks/bench_hha.py measures both). Each worker holds one frame's float64
    intermediates, 65 MB of arrays at its peak for a 425 x 560 frame: the hha_nyud job sizes ``threads`` by its memory
    (``segbench.infra.resources.hha_processes``).
    """
    if len(depths) != len(raw_depths):
        raise ValueError(f"got {len(depths)} depth maps but {len(raw_depths)} raw depth maps; pass one raw "
                         "depth per depth (the depth itself if nothing is missing)")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    disable = progress is False
    jobs = [(d, r, camera_matrix) for d, r in zip(depths, raw_depths)]
    bar = progress_bar(total=len(jobs), desc="HHA", unit="frame", disable=disable)
    with bar:
        if threads == 1 or len(jobs) <= 1:
            out = []
            for job in jobs:
                out.append(_encode_args(job))
                bar.update()
            return out
        with ProcessPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
            out = []
            for image in pool.map(_encode_args, jobs, chunksize=1):
                out.append(image)
                bar.update()
            return out


def write_png(path: str | os.PathLike, hha: np.ndarray) -> Path:
    """Write an H x W x 3 uint8 HHA image as an RGB PNG (R = disparity, G = height, B = angle), atomically."""
    hha = np.asarray(hha)
    if hha.dtype != np.uint8 or hha.ndim != 3 or hha.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 HHA image, got dtype {hha.dtype} and shape {hha.shape}")
    with replacing(path) as tmp:
        Image.fromarray(hha, mode="RGB").save(tmp, format="PNG")
    return Path(path)
