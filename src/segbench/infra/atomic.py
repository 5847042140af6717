"""Atomic writes: every output is written under a temporary name and renamed into place, so a file that
exists is complete (Snakemake, a rerun or a reader never sees half of one).

The temporary name is fixed (``<name>.tmp`` beside the file): one left by a killed process is overwritten
by the next write of the same file, and on any error inside ``replacing`` it is removed.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it.

    ``durable``: also fsync the file before the rename and its folder after it, so that the new file
    survives a power cut or a node failure once the block ends (training checkpoints need this; outputs
    that a rerun can write again do not pay for it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)  # the rename itself is on disk only once the folder is synced
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj, *, indent: int = 1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def torch_save(obj, path: str | os.PathLike) -> Path:
    import torch

    with replacing(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
