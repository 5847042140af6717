"""The volumetric table: Dice per class of V-Net and 3D U-Net (mean ± std over seeds) beside their papers.

Built only from the evaluation JSONs (``segbench.evaluation.volumetric``): one row per model, a column per class
(percent; each seed's value is the mean over the held-out cases), the mean foreground Dice, the parameter count
at the runs' width, and the published figure with its dataset, setting and source (each family's
``PUBLISHED_VOLUMETRIC``; unverified figures are marked).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from segbench import models
from segbench.infra.tables import write_table
from segbench.reporting.paper_tables import mean_std, pm


def _published(model: str) -> dict:
    module = importlib.import_module(models.declared(model).build.__module__)
    return getattr(module, "PUBLISHED_VOLUMETRIC", {})


def _params(model: str, num_classes: int, width: float) -> int:
    import torch

    with torch.device("meta"):
        net = models.build(model, num_classes, width=width, in_channels=1)
    return sum(p.numel() for p in net.parameters())


def table_volumetric(runs: dict[str, list], out_prefix: str | os.PathLike, *, dataset_note: str = "") -> list[Path]:
    """Write ``out_prefix.csv``, ``.tex`` and ``.md`` from ``runs``: model -> its evaluation JSONs (one per
    seed). All evaluations must name the same labels. Returns the three paths."""
    if not runs:
        raise ValueError("no runs: table_volumetric needs at least one model with its evaluation JSONs")
    rows, sources, labels = [], [], None
    for model, paths in runs.items():
        if models.declared(model).dims != 3:
            raise ValueError(f"{model} is not a volumetric model; expected names from "
                             f"{sorted(n for n, e in models.MODELS.items() if e.dims == 3)}")
        results = [json.loads(Path(p).read_text()) for p in paths]
        if not results:
            raise ValueError(f"model {model} has no evaluation files")
        sources += results
        for path, r in zip(paths, results):
            if labels is None:
                labels = r["labels"]
            if r["labels"] != labels:
                raise ValueError(f"{path} has labels {r['labels']}, the other evaluations {labels}")
        row = {"key": model, "model": models.declared(model).display, "width": results[0]["width"],
               "iterations": results[0].get("iterations"), "recipe": results[0].get("recipe")}
        for label in labels:
            values = [100.0 * r["dice_per_class"][label] for r in results if r["dice_per_class"][label] is not None]
            mean, std, n = mean_std(values)
            row[label], row[f"{label}_std"], row[f"{label}_pm"] = mean, std, pm(mean, std)
        mean, std, n = mean_std([100.0 * r["mean_dice"] for r in results if r["mean_dice"] is not None])
        row.update(mean_dice=mean, mean_dice_std=std, mean_dice_pm=pm(mean, std), n=n)
        row["params_m"] = _params(model, len(labels), row["width"]) / 1e6
        published = _published(model)
        value = published.get("value")
        text = "--" if value is None else f"{published['metric']} {value:g}" + (
            f" ± {published['std']:g}" if published.get("std") is not None else "")
        row["published"] = text + ("" if published.get("verified", True) else " (unverified)")
        row.update(published_on=published.get("dataset", "--"), published_setting=published.get("setting", "--"),
                   published_source=published.get("source", "--"))
        rows.append(row)
    columns = [("model", "model"), ("n", "n")] + [(f"{label}_pm", f"Dice {label}") for label in labels[1:]] + [
        ("mean_dice_pm", "mean Dice"), ("params_m", "params (M)"), ("published", "published"),
        ("published_on", "published on"), ("published_source", "source")]
    csv = [("key", "model"), ("n", "n")] + [c for label in labels for c in ((label, f"Dice {label}"),
                                                                             (f"{label}_std", "std"))] + [
        ("mean_dice", "mean Dice"), ("mean_dice_std", "std"), ("width", "width"), ("recipe", "recipe"),
        ("iterations", "iterations"), ("params_m", "params (M)"), ("published", "published"),
        ("published_on", "published on"), ("published_setting", "setting"), ("published_source", "source")]
    caption = ("Volumetric nets: Dice per foreground class on held-out cases, percent, mean ± std over seeds"
               + (f" ({dataset_note})" if dataset_note else "") + "; published figures are on other data")
    return write_table(out_prefix, columns, rows, caption=caption, csv_columns=csv, sources=sources)
