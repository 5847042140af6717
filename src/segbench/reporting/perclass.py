"""Per-class results from one confusion matrix: IU and accuracy per class as CSV, and a bar figure.

The ratios follow :mod:`segbench.evaluation.metrics` exactly: IU = n_ii / (t_i + sum_j n_ji - n_ii) is NaN for a class
absent from the ground truth and never predicted, and 0 for a class absent from the ground truth but
predicted somewhere; accuracy = n_ii / t_i is NaN for every class absent from the ground truth.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segbench.evaluation.metrics import scores
from segbench.infra.atomic import write_text
from segbench.infra.provenance import tracked_if
from segbench.reporting.figures import save_figure

CSV_COLUMNS = ("index", "class", "iu_percent", "acc_percent", "gt_pixels", "predicted_pixels", "published_iu_percent")


def per_class(hist: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One row per class of an (n, n) confusion matrix (rows ground truth, columns prediction).

    Each row: ``index``, ``class``, ``iu`` and ``acc`` (fractions, NaN as described above), ``gt_pixels``
    (row sum) and ``predicted_pixels`` (column sum).
    """
    hist = np.asarray(hist, dtype=np.int64)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"a confusion matrix must be square (n x n), got shape {hist.shape}")
    if len(class_names) != hist.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {hist.shape[0]}-class confusion matrix")
    iu = scores(hist)["per_class_iu"]
    gt, predicted = hist.sum(1), hist.sum(0)
    return [{"index": i, "class": name, "iu": iu[i],
             "acc": float(hist[i, i] / gt[i]) if gt[i] else math.nan,
             "gt_pixels": int(gt[i]), "predicted_pixels": int(predicted[i])}
            for i, name in enumerate(class_names)]


def _check_published(published: Mapping[str, float] | None, class_names: Sequence[str]) -> dict[str, float]:
    published = dict(published or {})
    unknown = sorted(set(published) - set(class_names))
    if unknown:
        raise ValueError(f"published per-class values name classes {unknown} that are not among this "
                         f"dataset's classes {list(class_names)}")
    return published


def write_perclass_csv(rows: Sequence[dict], out_csv: str | os.PathLike, *,
                       published: Mapping[str, float] | None = None) -> Path:
    """Write ``rows`` (from :func:`per_class`) as CSV with the columns ``CSV_COLUMNS``.

    IU and accuracy are in percent with 4 decimals, ``nan`` where undefined; ``published_iu_percent`` is
    the value of ``published`` (class name -> IU in percent) or ``nan`` where none is given.
    """
    published = _check_published(published, [r["class"] for r in rows])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r["index"], r["class"], _pct(r["iu"]), _pct(r["acc"]), r["gt_pixels"],
                         r["predicted_pixels"], f"{published[r['class']]:.4f}" if r["class"] in published else "nan"])
    return write_text(out_csv, buf.getvalue())


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100.0 * value:.4f}"


def plot_perclass(rows: Sequence[dict], *, mean_iu: float, published: Mapping[str, float] | None = None,
                  label: str = "ours", published_label: str = "published", title: str = "") -> Figure:
    """Per-class IU bars in percent (ours, and the published value beside it where given), with our mean
    IU as a dashed line; classes with an undefined IU are marked "absent"."""
    published = _check_published(published, [r["class"] for r in rows])
    n = len(rows)
    fig = Figure(figsize=(max(6.0, 0.32 * n * (2 if published else 1) + 1.5), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(n)
    width = 0.4 if published else 0.8
    ours = np.array([100.0 * r["iu"] for r in rows])
    ax.bar(x - (width / 2 if published else 0.0), np.nan_to_num(ours), width, label=label, color="tab:blue")
    if published:
        values = np.array([published.get(r["class"], math.nan) for r in rows])
        ax.bar(x + width / 2, np.nan_to_num(values), width, label=published_label, color="tab:orange")
    for i in np.flatnonzero(np.isnan(ours)):
        ax.text(x[i], 1.0, "absent", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
    ax.axhline(100.0 * mean_iu, color="tab:blue", linestyle="--", linewidth=1,
               label=f"{label} mean IU {100.0 * mean_iu:.1f}")
    ax.set_xticks(x, [r["class"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IU (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title)
    return fig


def perclass(*, metrics_json: str | os.PathLike, out_csv: str | os.PathLike, out_figure: str | os.PathLike,
             published: Mapping[str, float] | None = None, label: str = "ours", published_label: str = "published",
             title: str = "") -> list[Path]:
    """Per-class IU and accuracy of one evaluation (the JSON written by ``segbench evaluate``, which holds the
    confusion matrix ``hist`` and ``class_names``): writes ``out_csv`` and ``out_figure.{png,pdf}``.

    ``published`` maps class names to published IU in percent, drawn beside ours. Returns the three paths.
    """
    rows, result = _read_rows(metrics_json)
    written = [write_perclass_csv(rows, out_csv, published=published)]
    fig = plot_perclass(rows, mean_iu=result["mean_iu"], published=published, label=label,
                        published_label=published_label,
                        title=title or f"Per-class IU: {result.get('model', metrics_json)}")
    return written + save_figure(fig, out_figure)


def csv_path(metrics_json: str | os.PathLike) -> Path:
    """Where the per-class CSV of an evaluation lives: beside it, ``val.json`` -> ``val.perclass.csv``."""
    path = Path(metrics_json)
    return path.with_name(f"{path.stem}.perclass.csv")


def perclass_all(*, metrics: Sequence[str | os.PathLike], figures: Mapping[str, str | os.PathLike] | None = None,
                 figure_dir: str | os.PathLike | None = None, published: Mapping[str, float] | None = None,
                 config: Mapping | None = None) -> list[Path]:
    """Per-class results of many evaluations in one process: the CSV beside each of ``metrics``
    (:func:`csv_path`), and for each ``name -> metrics file`` of ``figures`` the bar figure
    ``figure_dir/<name>.{png,pdf}``. With ``config`` (the workflow's resolved configuration) every CSV and
    figure gets its provenance sidecar, with the evaluation file as input. Returns every path written.
    """
    figures = dict(figures or {})
    if figures and figure_dir is None:
        raise ValueError("figures were asked for but no figure_dir was given")
    written = []
    for path in metrics:
        out = csv_path(path)
        with tracked_if(config, out, inputs=[path]):
            rows, _ = _read_rows(path)
            written.append(write_perclass_csv(rows, out, published=published))
    for name, path in figures.items():
        prefix = Path(figure_dir) / name
        with tracked_if(config, f"{prefix}.png", also=[f"{prefix}.pdf"], inputs=[path]):
            rows, result = _read_rows(path)
            seed = (result.get("train") or {}).get("seed")
            split = Path(result.get("split", "?"))
            title = f"Per-class IU on {split.parent.name}/{split.name}: {name} ({result.get('model', '?')}" + (
                f", seed {seed})" if seed is not None else ")")
            written += save_figure(plot_perclass(rows, mean_iu=result["mean_iu"], published=published, title=title),
                                   prefix)
    return written


def _read_rows(metrics_json: str | os.PathLike) -> tuple[list[dict], dict]:
    path = Path(metrics_json)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the evaluate step that writes it")
    result = json.loads(path.read_text())
    missing = [k for k in ("hist", "class_names", "mean_iu") if k not in result]
    if missing:
        raise ValueError(f"{path} is not an evaluation file of segbench evaluate: keys {missing} missing")
    return per_class(np.asarray(result["hist"]), result["class_names"]), result
