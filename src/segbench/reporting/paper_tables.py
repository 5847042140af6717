"""The paper's tables, built only from saved metric, benchmark, pretraining and model-card files.

Each table row gathers one run over its seeds: every metric is shown as mean +- std (sample standard
deviation, n - 1) with n, beside the paper's value and the difference of the means. The CSV keeps the
numbers apart (``<metric>``, ``<metric>_std``, ``n``); Markdown and LaTeX show ``mean ± std``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from segbench import models
from segbench.errors import MissingInputError
from segbench.evaluation.metrics import METRICS
from segbench.infra.tables import write_table
from segbench.reporting import published

RANDOM_ROW = "FCN-32s-fixed, random trunk"  # Table 2's control row: no paper value
TABLE4_OURS = ("FCN-32s RGB", "FCN-32s RGBD", "FCN-32s HHA", "FCN-32s RGB-HHA", "FCN-16s RGB-HHA")
TABLE5_OURS = ("FCN-32s (two-headed)", "FCN-16s (two-headed)")


def _read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run the step that writes it (snakemake --cores all {path})")
    return json.loads(path.read_text())


def _paths(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN for one value) and count of ``values``."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def pm(mean: float, std: float, digits: int = 1) -> str:
    """``mean ± std`` for people (``mean`` alone where std is undefined)."""
    if mean != mean:
        return "--"
    return f"{mean:.{digits}f}" if std != std else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _learned(results: list[dict]) -> str:
    """How many seeds' training loss fell below the constant-prediction floor, e.g. "3/3"."""
    flags = [r.get("train", {}).get("learned") for r in results]
    known = [f for f in flags if f is not None]
    return f"{sum(known)}/{len(known)}" if known else "--"


def _metric_cells(row: dict, results: list[dict], reference: dict | None) -> None:
    for key, _ in METRICS:
        mean, std, n = mean_std([100.0 * r[key] for r in results])
        row[key], row[f"{key}_std"], row["n"] = mean, std, n
        row[f"{key}_pm"] = pm(mean, std)
        row[f"{key}_paper"] = reference[key] if reference else math.nan
        row[f"{key}_diff"] = mean - row[f"{key}_paper"]


def _columns(first: tuple[str, str], metrics=METRICS) -> tuple[list, list]:
    shown, csv = [first, ("n", "n")], [first, ("n", "n")]
    for key, header in metrics:
        shown += [(f"{key}_pm", header), (f"{key}_paper", "paper"), (f"{key}_diff", "Δ")]
        csv += [(key, header), (f"{key}_std", "std"), (f"{key}_paper", "paper"), (f"{key}_diff", "Δ")]
    return shown, csv


def table2(metrics: dict[str, str | os.PathLike | Sequence], out_prefix: str | os.PathLike, *,
           dataset_note: str = "") -> list[Path]:
    """Table 2 (skip architectures): our four metrics (mean ± std over seeds) beside the paper's, in percent.

    ``metrics`` maps a net name of the paper ("FCN-32s-fixed", "FCN-32s", "FCN-16s", "FCN-8s") or the
    control row ``RANDOM_ROW`` to the evaluation JSON of that run, or a list of them (one per seed).
    """
    known = set(published.TABLE2) | {RANDOM_ROW}
    unknown = sorted(set(metrics) - known)
    if unknown:
        raise ValueError(f"unknown Table 2 rows {unknown}; expected names from {sorted(known)}")
    rows, sources = [], []
    for net, paths in metrics.items():
        results = [_read_json(p) for p in _paths(paths)]
        sources += results
        row = {"net": net, "learned": _learned(results)}
        _metric_cells(row, results, published.TABLE2.get(net))
        rows.append(row)
    shown, csv = _columns(("net", "net"))
    shown.append(("learned", "loss < floor"))
    csv.append(("learned", "loss < floor"))
    caption = ("Table 2: FCN skip architectures on seg11valid (percent), ours (mean ± std over n seeds) beside the "
               f"paper's; Δ = our mean minus the paper's; '{RANDOM_ROW}' is the control that shows what the "
               "transplanted classifier adds; 'loss < floor' counts the seeds whose training loss fell below the loss "
               "of predicting the class frequencies everywhere" + (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, shown, rows, caption=caption, csv_columns=csv, sources=sources)


def table1(runs: dict[str, dict], out_prefix: str | os.PathLike, *, dataset_note: str = "") -> list[Path]:
    """Table 1 (classifiers turned into FCNs): mean IU over seeds, forward time and the model card.

    ``runs`` maps a backbone ("alexnet", "vgg16", "googlenet") to ``{"model": name, "metrics": eval JSON or
    a list of them (one per seed), "benchmark": benchmark JSON}``. The forward time is the fp32 mean at the
    benchmark's size and device. Rows are ordered by our mean IU, best first, so the ordering shows.
    """
    rows, devices, sources = [], set(), []
    for backbone, run in runs.items():
        if backbone not in published.TABLE1:
            raise ValueError(f"unknown Table 1 backbone {backbone!r}; expected one of {sorted(published.TABLE1)}")
        card = models.card(run["model"])
        bench = _read_json(run["benchmark"])
        devices.add(f"{bench['device']} ({bench.get('size', '?')}x{bench.get('size', '?')}, width {bench.get('width', 1.0)})")
        ref = published.TABLE1[backbone]
        results = [_read_json(p) for p in _paths(run["metrics"])]
        sources += results
        mean, std, n = mean_std([100.0 * r["mean_iu"] for r in results])
        rows.append({
            "backbone": backbone, "model": run["model"], "n": n,
            "mean_iu": mean, "mean_iu_std": std, "mean_iu_pm": pm(mean, std), "mean_iu_paper": ref["mean_iu"],
            "learned": _learned(results),
            "forward_ms": bench["modes"]["fp32"]["mean_ms"], "forward_ms_paper": float(ref["forward_ms"]),
            "conv_layers": card["conv_layers"], "conv_layers_paper": ref["conv_layers"],
            "params_m": card["params"] / 1e6, "params_m_paper": float(ref["params_m"]),
            "rf_size": card["rf_size"], "rf_size_paper": ref["rf_size"],
            "max_stride": card["max_stride"], "max_stride_paper": ref["max_stride"],
        })
    rows.sort(key=lambda r: -r["mean_iu"] if r["mean_iu"] == r["mean_iu"] else math.inf)
    tail = [("forward_ms", "forward ms"), ("forward_ms_paper", "paper (K40c)"),
            ("conv_layers", "conv layers"), ("conv_layers_paper", "paper"),
            ("params_m", "params (M)"), ("params_m_paper", "paper"),
            ("rf_size", "rf size"), ("rf_size_paper", "paper"), ("max_stride", "max stride"),
            ("max_stride_paper", "paper")]
    shown = [("backbone", "backbone"), ("n", "n"), ("mean_iu_pm", "mean IU"), ("mean_iu_paper", "paper"),
             ("learned", "loss < floor"), *tail]
    csv = [("backbone", "backbone"), ("n", "n"), ("mean_iu", "mean IU"), ("mean_iu_std", "std"),
           ("mean_iu_paper", "paper"), ("learned", "loss < floor"), *tail]
    caption = ("Table 1: classification nets as FCNs (FCN-32s), ours beside the paper's, rows by our mean IU "
               "(mean ± std over n seeds; the paper has VGG16 > GoogLeNet > AlexNet); conv layers, parameters, rf "
               "size and stride are those of the full-width nets; forward time measured on " + ", ".join(sorted(devices))
               + (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, shown, rows, caption=caption, csv_columns=csv, sources=sources)


def table_pretrain(summaries: dict[str, str | os.PathLike], out_prefix: str | os.PathLike, *,
                   dataset_note: str = "") -> list[Path]:
    """The pretraining stand-ins: held-out accuracy per backbone, from the pretrain step's JSON sidecars."""
    rows, zoo = [], set()
    for backbone, path in summaries.items():
        s = _read_json(path)
        settings = s.get("settings", {})
        if "zoo" in settings:
            zoo.add(settings["zoo"]["held_out_images"])
        rows.append({"backbone": backbone, "width": f"{s['width']:g}", "image_size": s["image_size"],
                     "accuracy": 100.0 * s["accuracy"], "accuracy_clutter": 100.0 * s.get("accuracy_clutter", math.nan),
                     "chance": 100.0 * s["chance"],
                     "steps": _pretrain_steps(s, settings), "before": _before_finetuning(s),
                     "images": settings.get("batch_size", 0) * (settings.get("crop_iterations", 0)
                                                                + settings.get("iterations", 0)),
                     "precision": settings.get("precision", "?"), "wall_s": settings.get("wall_s", math.nan)})
    columns = [("backbone", "backbone"), ("width", "width"), ("image_size", "input px"),
               ("accuracy", "accuracy % (single objects)"), ("accuracy_clutter", "accuracy % (with clutter)"),
               ("chance", "chance %"), ("steps", "steps (crops + full)"),
               ("before", "pruned / re-estimated % (single, clutter)"), ("images", "images"),
               ("precision", "precision"), ("wall_s", "wall s")]
    caption = ("Pretraining stand-ins for the ImageNet classifiers: held-out accuracy on fresh synthetic objects "
               "(20 classes) at the classifier's input size, on single objects and on the phase-2 images (the "
               "labelled object centred over up to `clutter` others)"
               + (f"; from the model zoo (zoo/MANIFEST.json: trained once, measured in fp32 on {max(zoo)} held-out "
                  "images of each kind)" if zoo else "") + (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, columns, rows, caption=caption)


def _pretrain_steps(summary: dict, settings: dict) -> str:
    steps = f"{settings.get('crop_iterations', 0)} + {settings.get('iterations', '?')}"
    if "pruned_from" not in summary:
        return steps
    return f"pruned from {summary['pruned_from']}" + (f", then {steps}" if "iterations" in settings else "")


def _before_finetuning(summary: dict) -> str:
    """A pruned trunk's held-out accuracies before its fine-tuning: as pruned, then with batch norm re-estimated."""
    before = summary.get("before_finetuning")
    if not before:
        return "--"
    return " / ".join(f"{100 * a:.1f}, {100 * c:.1f}" for a, c in (before["pruned"], before["recalibrated"]))


def _baseline_row(name: str, ref: dict, keys: Sequence[str], first: str) -> dict:
    row = {first: f"{name} (paper)", "n": "--", "learned": "--"}
    for key in keys:
        value = ref.get(key)
        row[f"{key}_pm"] = "--"
        row[key] = row[f"{key}_std"] = math.nan
        row[f"{key}_paper"] = math.nan if value is None else value
        row[f"{key}_diff"] = math.nan
    return row


def table4(metrics: dict[str, str | os.PathLike | Sequence], out_prefix: str | os.PathLike, *,
           dataset_note: str = "") -> list[Path]:
    """Table 4 (NYUDv2): RGB, RGB-D, HHA and RGB-HHA FCNs (mean ± std over seeds) beside the paper's rows;
    the paper's baseline (Gupta et al.) printed as the paper gives it.

    ``metrics`` maps a row of ``published.TABLE4`` ("FCN-32s RGB", ...) to the evaluation JSON of that run, or
    a list of them (one per seed).
    """
    return _dataset_table(metrics, out_prefix, TABLE4_OURS, published.TABLE4, published.TABLE4_BASELINES, METRICS,
                          "Table 4: NYUDv2 test (percent), ours (mean ± std over n seeds) beside the paper's, "
                          "whose baseline row (Gupta et al.) is printed as published", dataset_note)


def table5(metrics: dict[str, str | os.PathLike | Sequence], out_prefix: str | os.PathLike, *,
           dataset_note: str = "") -> list[Path]:
    """Table 5 (SIFT Flow): the two-headed FCNs' semantic metrics (over the classes present in the test
    ground truth) and geometric pixel accuracy, beside the paper's FCN-16s and its baselines."""
    metrics_geo = METRICS + (("geo_acc", "geom. acc."),)
    return _dataset_table(metrics, out_prefix, TABLE5_OURS, published.TABLE5, published.TABLE5_BASELINES, metrics_geo,
                          "Table 5: SIFT Flow test (percent), ours (mean ± std over n seeds) beside the paper's "
                          "FCN-16s (the paper reports no FCN-32s row) and the baselines it prints; semantic means over "
                          "the classes present in the test ground truth, geometric accuracy = pixel accuracy of the "
                          "sky / horizontal / vertical head", dataset_note)


def _dataset_table(metrics, out_prefix, ours: Sequence[str], reference: dict, baselines: Sequence[str], keys,
                   caption: str, dataset_note: str) -> list[Path]:
    unknown = sorted(set(metrics) - set(ours))
    if unknown:
        raise ValueError(f"unknown rows {unknown}; expected names from {ours}")
    rows = [_baseline_row(name, reference[name], [k for k, _ in keys], "net") for name in baselines]
    sources = []
    for net, paths in metrics.items():
        results = [_read_json(p) for p in _paths(paths)]
        sources += results
        for r in results:  # the geometric head's accuracy (SIFT Flow) under the table's name
            if "label_geo_pixel_acc" in r:
                r["geo_acc"] = r["label_geo_pixel_acc"]
        row = {"net": net, "learned": _learned(results)}
        ref = reference.get(net)
        for key, _ in keys:
            values = [100.0 * r[key] for r in results if r.get(key) is not None]
            mean, std, n = mean_std(values)
            row[key], row[f"{key}_std"], row["n"], row[f"{key}_pm"] = mean, std, n, pm(mean, std)
            published = ref.get(key) if ref else None
            row[f"{key}_paper"] = math.nan if published is None else published
            row[f"{key}_diff"] = mean - row[f"{key}_paper"]
        rows.append(row)
    shown, csv = _columns(("net", "net"), keys)
    shown.append(("learned", "loss < floor"))
    csv.append(("learned", "loss < floor"))
    caption += "; Δ = our mean minus the paper's" + (f"; {dataset_note}" if dataset_note else "")
    return write_table(out_prefix, shown, rows, caption=caption, csv_columns=csv, sources=sources)
