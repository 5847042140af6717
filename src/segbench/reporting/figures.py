"""Saving a matplotlib figure as PNG (for people and the Snakemake report) and PDF (for the paper)."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from segbench.infra.atomic import replacing

FORMATS = ("png", "pdf")


def save_figure(fig: Figure, prefix: str | os.PathLike, *, dpi: int = 150) -> list[Path]:
    """Atomically write ``<prefix>.png`` and ``<prefix>.pdf``; returns both paths.

    The PDF carries no creation date, so that reruns on the same inputs give the same bytes.
    """
    paths = [Path(f"{prefix}.{fmt}") for fmt in FORMATS]
    for path, fmt in zip(paths, FORMATS):
        with replacing(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata={"CreationDate": None} if fmt == "pdf" else None)
    return paths
