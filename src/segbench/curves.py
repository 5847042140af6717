"""Training curves of one run from its log (``results/train/<run>/log.csv``, columns ``trainlog.LOG_COLUMNS``):
training loss against iteration (raw and a trailing running mean) and, where the log has validation rows,
validation mean IU against iteration."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segbench.trainlog import read_log
from segbench.figures import save_figure


def plot_curves(log: pd.DataFrame, *, run: str, window: int = 20) -> Figure:
    """One panel of training loss (light: per iteration; dark: running mean over ``window`` iterations) and,
    if any row has ``val_mean_iu``, a second panel of validation mean IU in percent."""
    if window < 1:
        raise ValueError(f"the running-mean window must be >= 1 iteration, got {window}")
    val = log.dropna(subset=["val_mean_iu"])
    fig = Figure(figsize=(10 if len(val) else 5.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if len(val) else 1, squeeze=False)[0]
    loss_ax = axes[0]
    loss_ax.plot(log["iteration"], log["train_loss"], color="tab:blue", alpha=0.3, linewidth=0.8, label="per iteration")
    loss_ax.plot(log["iteration"], log["train_loss"].rolling(window, min_periods=1).mean(), color="tab:blue",
                 label=f"running mean of {window}")
    loss_ax.set_xlabel("iteration")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend(fontsize=8)
    if len(val):
        iu_ax = axes[1]
        iu_ax.plot(val["iteration"], 100.0 * val["val_mean_iu"], marker="o", color="tab:green")
        iu_ax.set_xlabel("iteration")
        iu_ax.set_ylabel("validation mean IU (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"Training curves: {run}", fontsize=10)
    return fig


def training_curves(*, log_csv: str | os.PathLike, out_figure: str | os.PathLike, run: str,
                    window: int = 20) -> list[Path]:
    """Write the curves of one run's ``log_csv`` to ``out_figure.{png,pdf}``; returns the two paths."""
    return save_figure(plot_curves(read_log(log_csv), run=run, window=window), out_figure)
