"""What a result was computed from: the identity of the code, and the content digest of a file.

A training job resumes a checkpoint only when both match (``segbench.training.train``), and every model,
run record and provenance sidecar names the code identity it was made with, so that a table built from runs of
different code says so. The code identity is the package's version plus the sha256 of every source file of
the installed package (its relative path and its bytes), so an uncommitted edit changes it as a commit does.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
from pathlib import Path

CHUNK = 1 << 20
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # segbench/, not this module's segbench/infra/


@functools.lru_cache(maxsize=None)
def code_identity() -> str:
    """``"<version>+<16 hex digits>"``: the package's version and a digest of its ``*.py`` sources.

    Computed once per process (about 100 small files).
    """
    try:
        version = importlib.metadata.version("segbench")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    h = hashlib.sha256()
    for path in sources():
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return f"{version}+{h.hexdigest()[:16]}"


def sources() -> list[Path]:
    """The source files the code identity digests: every ``*.py`` under the package directory, sorted."""
    return sorted(PACKAGE_DIR.rglob("*.py"))


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (stores and weights can be gigabytes).

    Remembered per process for a file of unchanged size, modification time and inode: a training job hashes
    its store and starting weights for the resume key and again for its provenance sidecar, once.
    """
    st = os.stat(path)
    return _sha256(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def code_note(records) -> str:
    """A caption note when the results of a table come from more than one code identity, else "".

    ``records`` are what the table read: evaluation results (the training run's identity under ``train``) or
    run records (``code`` at the top level); a record without an identity (written before it was recorded)
    counts as "unknown".
    """
    seen = sorted({str(r.get("code") or (r.get("train") or {}).get("code") or "unknown") for r in records})
    if len(seen) <= 1:
        return ""
    return f"runs of {len(seen)} code identities ({', '.join(seen)}): rerun with one version to compare them"
