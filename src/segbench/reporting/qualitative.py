"""A qualitative figure like the paper's Figure 4: image, ground truth and several models' predictions.

One row per validation image (a fixed list of ids, or evenly spaced ones), columns image / ground truth /
each model. Labels are drawn in the VOC colour map for VOC stores and in a generic palette of 60 distinct
colours (matplotlib's tab20, tab20b and tab20c) for other datasets (NYUDv2's 40 classes, SIFT Flow's 33);
void (255) is drawn **white** (VOC's background, class 0, is black). A legend lists the classes shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from segbench.data.store import Store
from segbench.data.voc import voc_palette
from segbench.evaluation.predict import load_for_store
from segbench.infra import runtime
from segbench.reporting.figures import save_figure

VOID_RGB = (255, 255, 255)
GENERIC_MAPS = ("tab20", "tab20b", "tab20c")


def palette_for(dataset: str, num_classes: int) -> np.ndarray:
    """uint8 (num_classes, 3) RGB colours: the VOC colour map for ``dataset == "voc"``, else the generic one."""
    if dataset == "voc":
        colours = voc_palette().reshape(256, 3)
    else:
        colours = np.concatenate([matplotlib.colormaps[name].colors for name in GENERIC_MAPS])
        colours = np.round(np.asarray(colours) * 255).astype(np.uint8)
    if num_classes > len(colours):
        raise ValueError(f"{num_classes} classes but the {dataset!r} palette has {len(colours)} colours")
    return colours[:num_classes]


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 H x W class indices -> uint8 H x W x 3 RGB; void (255, or any index without a colour) is white."""
    label = np.asarray(label)
    rgb = np.empty(label.shape + (3,), dtype=np.uint8)
    rgb[:] = VOID_RGB
    known = label < len(palette)
    rgb[known] = palette[label[known]]
    return rgb


def select_indices(store: Store, ids: Sequence[str] | None = None, count: int = 4) -> list[int]:
    """Store indices of ``ids`` (in the order given), or ``count`` evenly spaced ones when ``ids`` is None."""
    if ids:
        where = {sample_id: i for i, sample_id in enumerate(store.ids)}
        unknown = [i for i in ids if i not in where]
        if unknown:
            raise ValueError(f"ids {unknown} are not in {store.path} ({len(store)} images, e.g. {store.ids[:3]})")
        return [where[i] for i in ids]
    if count < 1 or not len(store):
        raise ValueError(f"need count >= 1 and a non-empty store; got count={count}, {len(store)} images")
    return sorted(set(np.linspace(0, len(store) - 1, min(count, len(store))).round().astype(int).tolist()))


def plot_rows(rows: Sequence[dict], *, columns: Sequence[str], palette: np.ndarray, class_names: Sequence[str],
              title: str = "") -> Figure:
    """The grid: ``rows`` are ``{"id", "panels"}`` with one array per column (RGB image first, then label
    maps, H x W); a legend below lists every class that appears in a label map."""
    n_rows, n_cols = len(rows), len(columns)
    h, w = rows[0]["panels"][0].shape[:2]
    fig = Figure(figsize=(1.9 * n_cols, 1.9 * n_rows * h / w + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    shown = set()
    for r, row in enumerate(rows):
        for c, panel in enumerate(row["panels"]):
            ax = axes[r, c]
            if panel.ndim == 2:
                shown |= {int(v) for v in np.unique(panel) if v < len(palette)}
                panel = colorize(panel, palette)
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row["id"], fontsize=8)
    handles = [Patch(facecolor=palette[k] / 255.0, edgecolor="0.5", label=class_names[k]) for k in sorted(shown)]
    handles.append(Patch(facecolor=np.array(VOID_RGB) / 255.0, edgecolor="0.5", label="void"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def qualitative(*, store_path: str | os.PathLike, models: Mapping[str, str | os.PathLike],
                out_figure: str | os.PathLike, ids: Sequence[str] | None = None, count: int = 4,
                device: str = "auto", threads: int | None = None, title: str = "") -> list[Path]:
    """Write ``out_figure.{png,pdf}``: for each selected image of the store, the image, its ground truth and
    the prediction of each model (``models`` maps a column title such as "FCN-8s" to a weights file of
    ``segbench.weights.save_model``), in the order given. Each model gets the inputs it was trained on (an
    HHA or RGB-D net its depth channels, :mod:`segbench.evaluation.predict`); the image column is always the colour
    image. Returns the two paths.
    """
    if not models:
        raise ValueError("no models given: expected {column title: weights file}")
    runtime.setup(threads=threads)
    dev = runtime.resolve_device(device)
    store = Store(store_path)
    indices = select_indices(store, ids, count)
    predictors = [load_for_store(path, store, dev) for path in models.values()]
    rows = []
    for i in indices:
        predictions = [p.labels(store, i, dev) for p in predictors]
        rows.append({"id": store.ids[i], "panels": [store.image(i), store.label(i), *predictions]})
    dataset = str(store.attrs.get("dataset", ""))
    fig = plot_rows(rows, columns=["image", "ground truth", *models], palette=palette_for(dataset, store.num_classes),
                    class_names=store.class_names,
                    title=title or f"{dataset} {store.attrs.get('split', '')}: predictions (void in white)")
    return save_figure(fig, out_figure)
