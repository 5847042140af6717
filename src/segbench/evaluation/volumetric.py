"""Dice per class of a trained volumetric net on the held-out cases of an MSD-layout task.

    evaluate_volumetric(task_dir=..., weights="vnet-s0.pt", n_val=6, out="vnet-s0-eval.json")

Each held-out case (the last ``n_val`` training cases: ``segbench.data.msd.split_training``) is normalised as in
training and scored whole (the nets pad and crop odd sizes themselves); the prediction is the argmax. Dice per
class comes from each case's confusion matrix (``volumetric_losses.dice_from_confusion``); the summary averages
it over the cases where the class occurs in the labels or the prediction (NaN-mean), and ``mean_dice`` averages
the foreground classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from segbench.data.msd import load_cases
from segbench.evaluation.volumetric_losses import confusion, dice_from_confusion
from segbench.infra.atomic import write_json
from segbench.infra.runtime import resolve_device, setup
from segbench.weights import load_model


def _nanmean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def predict_volume(net: torch.nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Argmax labels X x Y x Z of ``net`` on one normalised image C x X x Y x Z."""
    with torch.no_grad():
        scores = net(torch.from_numpy(image)[None].to(device))
    return scores.argmax(1)[0].cpu().numpy().astype(np.uint8)


def evaluate_volumetric(*, task_dir: str | os.PathLike, weights: str | os.PathLike, n_val: int,
                        out: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> Path:
    """Write ``out``: ``{"model", "seed", "width", "labels", "cases": {name: Dice per class}, "dice_per_class":
    {label name: mean over cases}, "mean_dice": mean over the foreground classes, "confusion"}``."""
    setup(threads=threads)
    dev = resolve_device(device)
    net, record = load_model(weights)
    net = net.to(dev).eval()
    task, cases = load_cases(task_dir, n_val=n_val, held_out=True)
    labels = [task["labels"][str(k)] for k in range(len(task["labels"]))]
    k = len(labels)
    total, per_case = np.zeros((k, k), np.int64), {}
    for name, image, label in cases:
        cm = confusion(predict_volume(net, image, dev), label, k)
        total += cm
        per_case[name] = [None if np.isnan(d) else float(d) for d in dice_from_confusion(cm)]
    table = np.array([[np.nan if d is None else d for d in dice] for dice in per_case.values()])
    dice = {labels[c]: _nanmean(table[:, c]) for c in range(k)}
    foreground = [dice[name] for name in labels[1:] if dice[name] is not None]
    meta = record.get("meta", {})
    return write_json(out, {"model": record["name"], "seed": meta.get("seed"), "width": record["width"],
                            "iterations": meta.get("iterations"), "recipe": meta.get("recipe"),
                            "weights": str(weights), "task": task["name"], "labels": labels, "cases": per_case,
                            "dice_per_class": dice,
                            "mean_dice": float(np.mean(foreground)) if foreground else None,
                            "confusion": total.tolist()})
