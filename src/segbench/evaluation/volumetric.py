"""Dice per class of a trained volumetric net on the held-out cases of an MSD-layout task.

    evaluate_volumetric(task_dir=..., weights="vnet-s0.pt", n_val=6, out="vnet-s0-eval.json")

Each held-out case (the last ``n_val`` training cases: ``segbench.data.msd.split_training``) is normalised as in
training and scored whole (the nets pad and crop odd sizes themselves); the prediction is the argmax. Dice per
class comes from each case's confusion matrix (``volumetric_losses.dice_from_confusion``); the summary averages
it over the cases where the class occurs in the labels or the prediction (NaN-mean), and ``mean_dice`` averages
the foreground classes.
"""

from __future__ import annotations

import itertools
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


def tile_starts(size: int, tile: int) -> list[int]:
    """Starts of tiles of ``tile`` voxels that cover an axis of ``size`` with half overlap (the last one flush with
    the end); ``[0]`` where the axis is no longer than a tile."""
    if size <= tile:
        return [0]
    return sorted({*range(0, size - tile + 1, max(1, tile // 2)), size - tile})


def predict_volume(net: torch.nn.Module, image: np.ndarray, device: torch.device,
                   patch: tuple[int, int, int] | None = None) -> np.ndarray:
    """Argmax labels X x Y x Z of ``net`` on one normalised image C x X x Y x Z: the whole volume at once, or with
    ``patch`` (the training patch) half-overlapping tiles of that size, their softmax averaged. The nets train on
    patches and see far beyond them (V-Net's receptive field spans the whole twin volume), so a whole volume is
    not what they learnt on: at 32 x 32 x 16 tiles V-Net's held-out gland Dice went from 0.03 / 7.7% (seeds 1 /
    2, whole volumes) to 85 / 90%."""
    x = torch.from_numpy(image)[None].to(device)
    with torch.no_grad():
        if patch is None:
            return net(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
        tiles = [min(p, n) for p, n in zip(patch, x.shape[2:])]
        total, count = None, torch.zeros(x.shape[2:], device=device)
        for starts in itertools.product(*(tile_starts(n, t) for n, t in zip(x.shape[2:], tiles))):
            window = tuple(slice(a, a + t) for a, t in zip(starts, tiles))
            probs = torch.softmax(net(x[(slice(None), slice(None), *window)]).float(), 1)[0]
            if total is None:
                total = torch.zeros((probs.shape[0], *x.shape[2:]), device=device)
            total[(slice(None), *window)] += probs
            count[window] += 1
        return (total / count).argmax(0).cpu().numpy().astype(np.uint8)


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
    meta = record.get("meta", {})
    patch = tuple(meta["patch"]) if meta.get("patch") else None  # scored as trained: tiles of the training patch
    for name, image, label in cases:
        cm = confusion(predict_volume(net, image, dev, patch), label, k)
        total += cm
        per_case[name] = [None if np.isnan(d) else float(d) for d in dice_from_confusion(cm)]
    table = np.array([[np.nan if d is None else d for d in dice] for dice in per_case.values()])
    dice = {labels[c]: _nanmean(table[:, c]) for c in range(k)}
    foreground = [dice[name] for name in labels[1:] if dice[name] is not None]
    return write_json(out, {"model": record["name"], "seed": meta.get("seed"), "width": record["width"],
                            "iterations": meta.get("iterations"), "recipe": meta.get("recipe"),
                            "weights": str(weights), "task": task["name"], "labels": labels, "cases": per_case,
                            "tiles": list(patch) if patch else None,
                            "dice_per_class": dice,
                            "mean_dice": float(np.mean(foreground)) if foreground else None,
                            "confusion": total.tolist()})
