"""Figure 5 of the paper: whole-image training against loss ("patch") sampling, and its table.

Built only from the training logs (``segbench.training.trainlog``). Per-iteration losses are noisy, so the
curves and the time-to-target use a trailing running mean over ``window`` iterations (the first ``window - 1`` points
average the iterations that exist so far).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segbench.infra.atomic import replacing
from segbench.infra.tables import write_table
from segbench.reporting.paper_tables import mean_std, pm
from segbench.training.trainlog import read_log

TABLE_COLUMNS = (
    ("p", "p"), ("curve", "run"), ("n", "n"), ("images_per_iteration", "images / iter."), ("iterations", "iterations"),
    ("images_processed", "images processed"), ("ms_per_iteration", "ms / iter."),
    ("iterations_to_target", "iter. to target"), ("seconds_to_target", "s to target"),
    ("percent_time_to_target", "% of ref. time to target"), ("final_val_mean_iu", "final val. mean IU (%)"),
)


def curve_label(p: float) -> str:
    """The paper's legend: "full images" for p = 1, else "50% sampling" etc."""
    return "full images" if p == 1.0 else f"{100 * p:g}% sampling"


def _one_seed(logs: dict[float, pd.DataFrame], smoothed: dict[float, pd.Series], target_loss: float) -> dict:
    """Per p, the figures of one seed's runs (the reference time is that seed's largest-p run)."""
    reference = logs[max(logs)]["wall_s"].iloc[-1]
    out = {}
    for p, log in logs.items():
        reached = smoothed[p] <= target_loss
        first = reached.idxmax() if reached.any() else None
        iterations = int(log["iteration"].iloc[-1])
        val = log["val_mean_iu"].dropna()
        seconds = float(log["wall_s"].iloc[first]) if first is not None else math.nan
        out[p] = {
            "iterations": iterations,
            "images_per_iteration": int(log["images_seen"].iloc[-1]) // iterations,
            "images_processed": int(log["images_seen"].iloc[-1]),
            "ms_per_iteration": 1000.0 * float(log["wall_s"].iloc[-1]) / iterations,
            "iterations_to_target": float(log["iteration"].iloc[first]) if first is not None else math.nan,
            "seconds_to_target": seconds,
            "percent_time_to_target": 100.0 * seconds / reference if reference > 0 else math.nan,
            "final_val_mean_iu": 100.0 * float(val.iloc[-1]) if len(val) else math.nan,
        }
    return out


def summarise(logs: dict[float, pd.DataFrame | list[pd.DataFrame]], *, window: int,
              target_loss: float | None = None) -> tuple[list[dict], float]:
    """Per-p table rows (largest p first) and the target loss used.

    ``logs`` maps p to one log or a list of logs, one per seed (the lists of all p in the same seed order).
    The default target is the highest of the runs' final smoothed losses, so every run reaches it. The
    time to target is the training wall time (and iteration) of the first row whose smoothed loss is at
    or below it; NaN where a run never gets there. ``percent_time_to_target`` divides it by the total wall
    time of the same seed's reference run (p = 1, else the largest p). Mean IU in percent (last validation
    row). Each figure is the mean over seeds, with ``<figure>_std`` beside it and ``n`` seeds.
    """
    runs = {p: v if isinstance(v, list) else [v] for p, v in logs.items()}
    seeds = {len(v) for v in runs.values()}
    if len(seeds) != 1:
        raise ValueError(f"every p needs the same number of seeds' logs, got {({p: len(v) for p, v in runs.items()})}")
    n = seeds.pop()
    smoothed = {p: [log["train_loss"].rolling(window, min_periods=1).mean() for log in v] for p, v in runs.items()}
    if target_loss is None:
        target_loss = max(float(s.iloc[-1]) for v in smoothed.values() for s in v)
    per_seed = [_one_seed({p: runs[p][k] for p in runs}, {p: smoothed[p][k] for p in runs}, target_loss)
                for k in range(n)]
    rows = []
    for p in sorted(runs, reverse=True):
        row = {"p": f"{p:g}", "curve": curve_label(p), "n": n}  # p as a string: 1-digit floats print 0.25 as 0.2
        for key in per_seed[0][p]:
            values = [seed[p][key] for seed in per_seed]
            mean, std, _ = mean_std(values)
            if key in ("iterations", "images_per_iteration", "images_processed"):
                row[key] = int(round(mean))
            elif key == "iterations_to_target" and n == 1:
                row[key] = None if math.isnan(mean) else int(mean)
            else:
                row[key] = mean
            row[f"{key}_std"] = std
            row[f"{key}_pm"] = pm(mean, std)
        rows.append(row)
    return rows, float(target_loss)


def _plot(logs: dict[float, list[pd.DataFrame]], *, window: int, target_loss: float, floor_loss: float | None,
          model_name: str, caption: str) -> Figure:
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, sharey=True)
    n = len(next(iter(logs.values())))
    references = [logs[max(logs)][k]["wall_s"].iloc[-1] for k in range(n)]
    for p in sorted(logs, reverse=True):
        curves = pd.concat([log["train_loss"].rolling(window, min_periods=1).mean() for log in logs[p]], axis=1)
        times = pd.concat([log["wall_s"] / ref for log, ref in zip(logs[p], references)], axis=1).mean(axis=1)
        iteration = logs[p][0]["iteration"]
        line, = left.plot(iteration, curves.mean(axis=1), label=curve_label(p))
        if n > 1:
            left.fill_between(iteration, curves.min(axis=1), curves.max(axis=1), color=line.get_color(), alpha=0.2)
        right.plot(times, curves.mean(axis=1), label=curve_label(p), color=line.get_color())
    for ax in (left, right):
        ax.axhline(target_loss, color="0.5", linestyle=":", linewidth=1, label="target loss")
        if floor_loss is not None:
            ax.axhline(floor_loss, color="0.3", linestyle="--", linewidth=1, label="constant-prediction loss")
        ax.grid(alpha=0.3)
    left.set_xlabel("iteration number")
    left.set_ylabel(f"training loss (running mean of {window} iter.)")
    reference_name = "full-image" if max(logs) == 1.0 else curve_label(max(logs))
    right.set_xlabel(f"relative wall time ({reference_name} run's total = 1)")
    left.legend()
    seeds = f", mean of {n} seeds (band: min to max)" if n > 1 else ""
    fig.suptitle(f"Figure 5: whole-image training vs. loss sampling ({model_name}{seeds})")
    fig.text(0.5, -0.02, caption, ha="center", va="top", wrap=True, fontsize=8)
    return fig


def _save_figure(fig: Figure, path: Path, fmt: str) -> None:
    # no creation date in the PDF, so that reruns on the same logs give the same bytes
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    with replacing(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)


def make_fig5(logs: dict[float, str | os.PathLike | list], *, out_table: str | os.PathLike,
              out_figure: str | os.PathLike, target_loss: float | None = None, floor_loss: float | None = None,
              model_name: str = "fcn32s_vgg16", window: int = 20) -> list[Path]:
    """Figure 5 (two panels: smoothed training loss against iteration and against relative wall time)
    and its table (per p: images processed, time per iteration, time to a common target loss, final
    validation mean IU; mean ± std over seeds) from ``logs``, which maps the keep probability p to that
    run's log.csv or a list of them, one per seed, in the same seed order for every p.

    Writes ``out_figure.{png,pdf}`` and ``out_table.{csv,tex,md}`` and returns those five paths.
    ``target_loss`` None = the highest final smoothed loss of the runs. ``floor_loss`` (the loss of
    predicting the class frequencies everywhere) is drawn and named in the caption when given.
    """
    if not logs:
        raise ValueError("no training logs given: expected {p: path to log.csv} for p in e.g. (1, 0.5, 0.25)")
    bad = [p for p in logs if not 0.0 < float(p) <= 1.0]
    if bad:
        raise ValueError(f"keep probabilities must be in (0, 1], got {bad}")
    if window < 1:
        raise ValueError(f"the running-mean window must be >= 1 iteration, got {window}")
    frames = {float(p): [read_log(path) for path in (paths if isinstance(paths, (list, tuple)) else [paths])]
              for p, paths in logs.items()}
    rows, target = summarise(frames, window=window, target_loss=target_loss)
    reference = "full-image" if max(frames) == 1.0 else curve_label(max(frames))
    floor = ("" if floor_loss is None else
             f" Dashed: the constant-prediction loss {floor_loss:.4g} (the class frequencies everywhere); the target "
             f"is {'below' if target < floor_loss else 'NOT below'} it.")
    caption = (f"Figure 5 ({model_name}): training loss, running mean over {window} iterations, against iteration "
               f"and against training wall time relative to the {reference} run's total (validation excluded); "
               "the paper's right panel was labelled 'relative time (num. images processed)'. Each sampling "
               "run draws base batch / p images per iteration so the expected number of pixels in the loss "
               f"matches. Dotted: the target loss {target:.4g}.{floor}")
    fig = _plot(frames, window=window, target_loss=target, floor_loss=floor_loss, model_name=model_name,
                caption=caption)
    single = rows[0]["n"] == 1
    spread = "one seed, so no spread" if single else "mean ± std over n seeds"
    table_caption = (f"{caption} Time to target: first iteration whose smoothed loss is at or below it, in "
                     f"seconds and in % of the same seed's {reference} run's total time; {spread}. "
                     "Mean IU in %, last validation; -- = not reached or not validated.")
    figures = [Path(f"{out_figure}.{fmt}") for fmt in ("png", "pdf")]
    for path, fmt in zip(figures, ("png", "pdf")):
        _save_figure(fig, path, fmt)
    shown = [(k if single or k in ("p", "curve", "n", "images_per_iteration", "iterations", "images_processed")
              else f"{k}_pm", h) for k, h in TABLE_COLUMNS]
    csv = [c for k, h in TABLE_COLUMNS for c in ([(k, h)] if k in ("p", "curve") else [(k, h), (f"{k}_std", "std")])]
    runs = [Path(path).with_name("run.json") for paths in logs.values()
            for path in (paths if isinstance(paths, (list, tuple)) else [paths])]
    sources = [json.loads(run.read_text()) for run in runs if run.exists()]  # each log's run record: its code
    return figures + write_table(out_table, shown, rows, caption=table_caption, digits=1,
                                 csv_columns=[("p", "p"), ("curve", "run"), ("n", "n")] + csv[2:], sources=sources)
