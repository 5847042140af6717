"""Trained weights on disk: the state dict plus what is needed to rebuild the model.

Every weights file the pipeline reads (its own records, downloaded classifiers, the released models) goes
through :func:`read_weights_file`, which looks at the file's first bytes before torch does: a Google Drive
download without its confirmation step saves an HTML page under the weights' name, and torch's own
error for such a file suggests ``weights_only=False``, an unsafe load. Only the two formats ``torch.save``
writes pass: a zip archive holding ``data.pkl`` (PyTorch 1.6 on) and the legacy pickle that opens with
torch's magic number (older files, such as pytorch-fcn's ``*_from_caffe.pth``).
"""

from __future__ import annotations

import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch

from segbench import models
from segbench.errors import MissingInputError, SegbenchError
from segbench.infra.atomic import torch_save

_LEGACY_START = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # the first bytes of a pre-1.6 torch.save
_ZIP_START = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip's end record
_HEAD = 64 << 10  # bytes read to describe a file that is not weights (an HTML page's start and title)


class WeightsFileError(SegbenchError):
    """A weights file is not one ``torch.save`` wrote: a web page saved in its place, an empty or truncated file."""


def _shown(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _html_title(head: str) -> str:
    match = re.search(r"<title[^>]*>(.*?)</title>", head, flags=re.I | re.S)
    return _shown(match.group(1)) if match and match.group(1).strip() else ""


def describe_file(path: str | os.PathLike) -> str | None:
    """None when ``path`` has one of ``torch.save``'s two formats; otherwise what the file is, in words
    (``"an HTML page, 2,345 bytes, starting '<!DOCTYPE html>...', titled 'Google Drive - Virus scan warning'"``)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(_LEGACY_START):
        return None
    if head.startswith(_ZIP_START):
        if not zipfile.is_zipfile(path):  # the central directory sits at the end: a cut-off download lacks it
            return f"a truncated zip archive, {size:,} bytes (its central directory at the end is missing)"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith("data.pkl") for name in names):
            return None
        members = f"{len(names)} member{'s' if len(names) != 1 else ''}"
        return f"a zip archive without PyTorch's data.pkl ({members}), {size:,} bytes"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if re.match(r"<(!doctype\s+html|html|head|body)\b", text, flags=re.I):
        title = _html_title(text)
        first_tag = text[:text.index(">") + 1] if ">" in text[:200] else text.splitlines()[0]
        return (f"an HTML page, {size:,} bytes, starting {_shown(first_tag)!r}"
                + (f", titled {title!r}" if title else ""))
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a Python pickle without torch.save's magic number, {size:,} bytes"
    if text and "\ufffd" not in text[:200] and all(c.isprintable() or c.isspace() for c in text[:200]):
        return f"a text file, {size:,} bytes, starting {_shown(text.splitlines()[0])!r}"
    return f"{size:,} bytes of an unknown format, starting {head[:16]!r}"


def _reason(err: Exception) -> str:
    """torch's error in a few words, without its advice to load with weights_only=False."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch wraps the real cause in paragraphs about unsafe loading
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    first_line = _shown(text.strip().split("\n", 1)[0], 160)
    return f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__


def check_weights_file(path: str | os.PathLike, *, fetch_hint: str) -> Path:
    """``path`` if it has one of ``torch.save``'s formats (:func:`describe_file`); else :class:`WeightsFileError`
    naming what it is, followed by ``fetch_hint`` (how to get the real file: a URL, the step that writes it).
    A missing file raises :class:`MissingInputError`."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: {fetch_hint}")
    what = describe_file(path)
    if what is not None:
        raise WeightsFileError(f"{path} is {what}, not PyTorch weights: {fetch_hint}")
    return path


def read_weights_file(path: str | os.PathLike, *, fetch_hint: str) -> object:
    """``torch.load(path, weights_only=True)`` on CPU, after :func:`check_weights_file`.

    Raises :class:`WeightsFileError`, naming what the file is, for an HTML page, an empty file, a truncated
    zip, or a file in torch's format that a weights-only load cannot read (truncated, or arbitrary objects).
    """
    path = check_weights_file(path, fetch_hint=fetch_hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, struct.error, UnicodeDecodeError, ValueError) as err:
        # from None: torch's message recommends weights_only=False, which would run any code the file holds
        raise WeightsFileError(f"{path} ({path.stat().st_size:,} bytes) has torch.save's format but cannot be read "
                               f"as weights ({_reason(err)}); it is probably truncated or not a state dict: "
                               f"{fetch_hint}") from None


def save_model(path: str | os.PathLike, model: torch.nn.Module, *, name: str, num_classes: int, width: float,
               in_channels: int = 3, options: dict | None = None, meta: dict | None = None) -> Path:
    """Atomically write ``{"name", "num_classes", "width", "in_channels", "options", "meta", "state_dict"}``
    (``options``: the model's extra ``models.build`` keywords)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return torch_save({"name": name, "num_classes": num_classes, "width": width, "in_channels": in_channels,
                       "options": dict(options or {}), "meta": meta or {}, "state_dict": state}, path)


def load_record(path: str | os.PathLike) -> dict:
    """The weights record at ``path`` (:func:`save_model`'s dict), read through :func:`read_weights_file`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: train it first (snakemake --cores all {path})")
    record = read_weights_file(path, fetch_hint=f"delete it and rerun the step that writes it (snakemake --cores "
                                                f"all {path})")
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds a {type(record).__name__}, not a segbench weights record (a dict)")
    for key in ("name", "num_classes", "width", "state_dict"):
        if key not in record:
            raise ValueError(f"{path} is not a segbench weights file: key {key!r} missing")
    return record


def load_model(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the FCN stored at ``path``; returns ``(model, record)``."""
    record = load_record(path)
    return model_from_record(record), record


def model_from_record(record: dict) -> torch.nn.Module:
    """The FCN described by a weights record, with its weights loaded."""
    model = models.build(record["name"], record["num_classes"], width=record["width"],
                         in_channels=record.get("in_channels", 3), **record.get("options", {}))
    model.load_state_dict(record["state_dict"])
    return model
