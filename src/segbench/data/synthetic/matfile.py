"""MATLAB 5 files of the twins, the same bytes on every run.

``scipy.io.savemat`` writes the time of writing into the file's 116-byte header text ("Created on: ..."), so two
writes of the same twin a second apart differ; ``savemat`` here writes a fixed header text instead.
"""

from __future__ import annotations

from pathlib import Path

import scipy.io

from segbench.infra.atomic import replacing

HEADER_BYTES = 116  # the MAT 5 header's descriptive text; then subsystem offset, version and endian indicator
HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: segbench (synthetic twin)"


def savemat(path: Path, data: dict, *, compression: bool) -> None:
    """Write ``data`` to ``path`` as a MATLAB 5 file (atomically), its header text fixed (``HEADER``)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            scipy.io.savemat(fh, data, format="5", do_compression=compression)
        with open(tmp, "r+b") as fh:
            fh.write(HEADER.ljust(HEADER_BYTES, b"\0"))
