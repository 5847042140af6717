"""Training curves of one run from its logs (``results/train/<run>/seed<k>/log.csv``, columns
``trainlog.LOG_COLUMNS``): training loss against iteration (raw and a trailing running mean) and, where the logs
have validation rows, validation mean IU against iteration; the seeds of a run are drawn over each other."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segbench.infra.provenance import tracked_if
from segbench.reporting.figures import save_figure
from segbench.training.trainlog import read_log

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_curves(log: pd.DataFrame | Mapping[str, pd.DataFrame], *, run: str, window: int = 20) -> Figure:
    """One panel of training loss (light: per iteration; dark: running mean over ``window`` iterations) and,
    if any row has ``val_mean_iu``, a second panel of validation mean IU in percent.

    ``log`` is one run's log, or ``{label: log}`` (one per seed), each drawn in its own colour.
    """
    if window < 1:
        raise ValueError(f"the running-mean window must be >= 1 iteration, got {window}")
    logs = {"": log} if isinstance(log, pd.DataFrame) else dict(log)
    if not logs:
        raise ValueError(f"no training log given for run {run!r}")
    validated = any(len(frame.dropna(subset=["val_mean_iu"])) for frame in logs.values())
    fig = Figure(figsize=(10 if validated else 5.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if validated else 1, squeeze=False)[0]
    loss_ax = axes[0]
    for k, (label, frame) in enumerate(logs.items()):
        colour, tag = COLOURS[k % len(COLOURS)], f"{label}: " if label else ""
        loss_ax.plot(frame["iteration"], frame["train_loss"], color=colour, alpha=0.3, linewidth=0.8,
                     label=f"{tag}per iteration")
        loss_ax.plot(frame["iteration"], frame["train_loss"].rolling(window, min_periods=1).mean(), color=colour,
                     label=f"{tag}running mean of {window}")
        val = frame.dropna(subset=["val_mean_iu"])
        if len(val):
            axes[1].plot(val["iteration"], 100.0 * val["val_mean_iu"], marker="o", color=colour, label=label or None)
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend(fontsize=8)
    if validated:
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("validation mean IU (%)")
        if len(logs) > 1:
            axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves: {run}", fontsize=10)
    return fig


def training_curves(*, log_csv: str | os.PathLike, out_figure: str | os.PathLike, run: str,
                    window: int = 20) -> list[Path]:
    """Write the curves of one run's ``log_csv`` to ``out_figure.{png,pdf}``; returns the two paths."""
    return save_figure(plot_curves(read_log(log_csv), run=run, window=window), out_figure)


def curves_all(*, runs: Mapping[str, Sequence[str | os.PathLike]], out_dir: str | os.PathLike, window: int = 20,
               config: Mapping | None = None) -> list[Path]:
    """The curves of many runs in one process: for each ``run -> [log.csv, ...]`` (one log per seed), the
    figure ``out_dir/<run>.{png,pdf}`` with every seed drawn, each labelled with its log's folder name
    (``seed<k>`` in the workflow). With ``config`` (the workflow's resolved configuration) each figure gets
    its provenance sidecar, with the logs as inputs. Returns every path written.
    """
    written = []
    for run, logs in runs.items():
        prefix = Path(out_dir) / run
        with tracked_if(config, f"{prefix}.png", also=[f"{prefix}.pdf"], inputs=list(logs)):
            frames = {Path(path).parent.name: read_log(path) for path in logs}
            written += save_figure(plot_curves(frames, run=run, window=window), prefix)
    return written
