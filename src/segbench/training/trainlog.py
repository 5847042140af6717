"""The training log, ``results/train/<run>/seed<s>/log.csv``: one row per iteration, written by training
and read by Figure 5 and the training-curve figures.

Columns: iteration, images_seen, train_loss, wall_s (training time only, validation excluded), val_loss and
val_mean_iu (on validation rows only, empty elsewhere).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

from segbench.errors import MissingInputError
from segbench.infra.atomic import write_text

if TYPE_CHECKING:
    import pandas as pd

LOG_COLUMNS = ("iteration", "images_seen", "train_loss", "wall_s", "val_loss", "val_mean_iu")


def write_log(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts keyed by ``LOG_COLUMNS``; floats with 6 significant digits) atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{row[k]:.6g}" if isinstance(row.get(k), float) else row.get(k, "") for k in LOG_COLUMNS})
    return write_text(path, buf.getvalue())


def read_log(path: str | os.PathLike) -> pd.DataFrame:
    """One training log as a DataFrame sorted by iteration (val_* NaN on rows without validation)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"training log {path} does not exist: run its train step first")
    import pandas as pd  # here, not at the top: training writes logs without it (0.3 s of every job's start)
    log = pd.read_csv(path)
    missing = [c for c in LOG_COLUMNS if c not in log.columns]
    if missing or log.empty:
        raise ValueError(f"{path} is not a training log with rows: missing columns {missing} of {list(LOG_COLUMNS)}"
                         f" ({len(log)} rows)")
    return log.sort_values("iteration", ignore_index=True)
