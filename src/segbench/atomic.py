"""Atomic writes: every output is written under a temporary name and renamed into place, so a file that
exists is complete (Snakemake, a rerun or a reader never sees half of one)."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
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
