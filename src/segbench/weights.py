"""Trained weights on disk: the state dict plus what is needed to rebuild the model."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from segbench import models
from segbench.errors import MissingInputError
from segbench.infra.atomic import torch_save


def save_model(path: str | os.PathLike, model: torch.nn.Module, *, name: str, num_classes: int, width: float,
               in_channels: int = 3, options: dict | None = None, meta: dict | None = None) -> Path:
    """Atomically write ``{"name", "num_classes", "width", "in_channels", "options", "meta", "state_dict"}``
    (``options``: the model's extra ``models.build`` keywords)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return torch_save({"name": name, "num_classes": num_classes, "width": width, "in_channels": in_channels,
                       "options": dict(options or {}), "meta": meta or {}, "state_dict": state}, path)


def load_record(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: train it first (snakemake --cores all {path})")
    record = torch.load(path, map_location="cpu", weights_only=True)
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
