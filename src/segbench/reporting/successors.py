"""The "Beyond FCN" table: FCN-8s and its successors trained and scored alike, beside each paper's own figure.

Built only from saved files: per model its evaluation JSONs (one per seed; mean ± std over seeds, as in
``report``), optionally its evaluation JSONs with the dense CRF after the net (``segbench evaluate --crf``:
the "+CRF" column), its model card (``models.card``: parameters without the training-only auxiliary heads, GFLOPs
of one 500 x 500 image at 2 FLOP per multiply-add, output stride) and its benchmark JSON (``segbench
benchmark``: the fp32 mean forward time). Cards describe the full-width nets, as published; the width each
net was trained at is a column of the CSV and named in the caption. The published figures (each model's
declared ``published``, ``segbench.models.registry``) come from the papers' own data, splits, backbones and
inference: the columns "published on" and "setting" say which, and the caption names every way our runs differ
from them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from torch._subclasses.fake_tensor import FakeTensorMode

from segbench import models
from segbench.infra.tables import write_table
from segbench.models import cards
from segbench.reporting.paper_tables import _learned, _paths, _read_json, mean_std, pm
from segbench.training import recipes

FCN = "fcn8s_vgg16"
FCN_RECIPES_OF_PAPER = ("heavy", "paper")  # the FCN paper's own (the reference code's, the CVPR text's)


def structure(model: str) -> dict:
    """``{"params", "gflops", "output_stride"}`` of the full-width ``model`` with 21 classes (``models.card``).

    An FCN's card has no FLOPs: they are counted here on fake tensors (shapes only, no memory), since its
    frozen upsamplers switch autocast off, which the meta device that ``card`` uses does not support."""
    card = models.card(model)
    if "gflops" in card:
        return {k: card[k] for k in ("params", "gflops", "output_stride")}
    with FakeTensorMode():
        net = models.build(model, 21)
        gflops = cards.flops(net) / 1e9
    return {"params": card["params"], "gflops": gflops, "output_stride": card["max_stride"] >> len(net.skips)}


def _own(model: str) -> tuple[str, ...]:
    own = models.declared(model).recipe
    return FCN_RECIPES_OF_PAPER if own is None else (own,)


def _published_iterations(model: str) -> int | None:
    own = models.declared(model).recipe
    if own is None:
        return 100_000  # the reference solvers' length per stage
    return recipes.recipe(own, model_name=model).iterations


def _grouped(pairs: list[tuple[str, str]]) -> str:
    """"A (x, y); B (z)" from (value, model) pairs, values in first-seen order."""
    groups: dict[str, list[str]] = {}
    for value, model in pairs:
        groups.setdefault(value, []).append(models.declared(model).display)
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def _deviations(rows: list[dict], devices: set[str], dataset_note: str) -> list[str]:
    notes = [dataset_note] if dataset_note else []
    widths = [(f"{r['width']:g}", r["key"]) for r in rows if r["width"] is not None and r["width"] != 1.0]
    if widths:
        notes.append("nets trained at channel width " + _grouped(widths) + " of the published nets (whose "
                     "parameters, GFLOPs and output stride the table shows)")
    other = [(r["recipe"], r["key"]) for r in rows if r["recipe"] and r["recipe"] not in _own(r["key"])]
    if other:
        notes.append("trained with recipe " + _grouped(other) + " instead of each paper's own"
                     + (" (short: Adam, poly decay, whole images, no augmentation)"
                        if any(name == "short" for name, _ in other) else ""))
    short = [r for r in rows
             if r["iterations"] and r["published_iterations"] and r["iterations"] < r["published_iterations"]]
    if short:
        notes.append("iterations " + _grouped([(f"{r['iterations']:,}", r["key"]) for r in short])
                     + " instead of the published " + _grouped([(f"{r['published_iterations']:,}", r["key"])
                                                                 for r in short]))
    seeds = sorted({r["n"] for r in rows})
    if len(seeds) == 1:
        notes.append("one seed, so no spread" if seeds == [1] else f"{seeds[0]} seeds")
    else:  # e.g. FCN-8s with Table 2's seeds, the successors with fewer (the embedded default's budget)
        notes.append("seeds per model: " + _grouped([(str(r["n"]), r["key"]) for r in rows])
                     + ("; one seed has no spread" if 1 in seeds else ""))
    if devices:
        notes.append("forward time (fp32 mean, batch 1) on " + ", ".join(sorted(devices)))
    return notes


def _crf_note(results: list[dict]) -> str:
    """How the +CRF column was computed, from the CRF records of its evaluations ("" without any)."""
    settings = []
    for r in results:
        crf = r["crf"]
        p = crf["params"]
        text = (f"w1 {p['w1']:g}, theta_alpha {p['theta_alpha']:g}, theta_beta {p['theta_beta']:g}, "
                f"w2 {p['w2']:g}, theta_gamma {p['theta_gamma']:g}, {p['iterations']} iterations"
                + (", spatial bandwidths times image size / 500" if crf["scale"] == "auto" else ""))
        if text not in settings:
            settings.append(text)
    if not settings:
        return ""
    return ("+CRF: mean IU of the same nets after DeepLab's dense CRF (" + "; ".join(settings)
            + "), -- where a model was not run with it; published +CRF: the paper's figure with its CRF")


def table_successors(runs: dict[str, dict], out_prefix: str | os.PathLike, *, dataset_note: str = "") -> list[Path]:
    """The successors table: mean IU and pixel accuracy (mean ± std over seeds, percent), the mean IU after the
    dense CRF where evaluated so ("+CRF"), parameters, GFLOPs, output stride and forward time per model, beside the
    published mean IU (and, where the paper reports one, its +CRF figure) with its split, setting and source.

    ``runs`` maps a model name (one whose declaration has a ``published`` figure: ``fcn8s_vgg16`` and the
    successor models) to
    ``{"metrics": evaluation JSON or a list of them (one per seed), "crf_metrics": the same with the CRF (or
    None), "benchmark": its benchmark JSON or None, "recipe": the recipe it was trained with, "iterations": its
    length, "width": its channel width}``; all but "metrics" may be left out (then not shown, and not named in
    the caption). FCN-8s is the first row, the others follow in the given order. ``dataset_note`` names the
    data (e.g. the synthetic twin).
    """
    rowed = sorted(name for name, entry in models.MODELS.items() if entry.published is not None)
    unknown = sorted(set(runs) - set(rowed))
    if unknown:
        raise ValueError(f"unknown models {unknown} for the successors table; expected names from {rowed}")
    order = sorted(runs, key=lambda m: m != FCN)  # stable: FCN-8s first, the rest as given
    rows, devices, sources, crf_sources = [], set(), [], []
    for model in order:
        run = runs[model]
        results = [_read_json(p) for p in _paths(run["metrics"])]
        sources += results
        row = {"key": model, "model": models.declared(model).display, "learned": _learned(results),
               "width": run.get("width"),
               "recipe": run.get("recipe"), "iterations": run.get("iterations"),
               "published_iterations": _published_iterations(model)}
        for key in ("mean_iu", "pixel_acc"):
            mean, std, n = mean_std([100.0 * r[key] for r in results])
            row[key], row[f"{key}_std"], row[f"{key}_pm"], row["n"] = mean, std, pm(mean, std), n
        crf_results = [_read_json(p) for p in _paths(run.get("crf_metrics") or [])]
        crf_sources += crf_results
        mean, std, n = mean_std([100.0 * r["mean_iu"] for r in crf_results])
        row.update(crf_mean_iu=mean, crf_mean_iu_std=std, crf_mean_iu_pm=pm(mean, std), crf_n=n or None)
        card = structure(model)
        row.update(params_m=card["params"] / 1e6, gflops=card["gflops"], output_stride=card["output_stride"])
        row["forward_ms"] = math.nan
        if run.get("benchmark"):
            bench = _read_json(run["benchmark"])
            row["forward_ms"] = bench["modes"]["fp32"]["mean_ms"]
            devices.add(f"{bench['device']} ({bench.get('size', '?')}x{bench.get('size', '?')}, "
                        f"width {bench.get('width', 1.0):g})")
        figure = models.declared(model).published
        row.update({f"paper_{k}": math.nan if figure[k] is None else figure[k] for k in ("mean_iu", "pixel_acc")})
        row["paper_mean_iu_text"] = "--" if figure["mean_iu"] is None else f"{figure['mean_iu']:g}"  # as printed
        crf_figure = figure.get("mean_iu_crf")
        row["paper_mean_iu_crf"] = math.nan if crf_figure is None else crf_figure
        row["paper_mean_iu_crf_text"] = "--" if crf_figure is None else f"{crf_figure:g}"
        row.update(paper_split=figure["split"], paper_setting=figure["setting"],
                   paper_source=figure["source"])
        rows.append(row)
    shown = [("model", "model"), ("n", "n"), ("mean_iu_pm", "mean IU"), ("crf_mean_iu_pm", "+CRF"),
             ("pixel_acc_pm", "pixel acc."), ("params_m", "params (M)"), ("gflops", "GFLOPs"), ("output_stride", "OS"),
             ("forward_ms", "forward ms"), ("recipe", "recipe"), ("paper_mean_iu_text", "published mean IU"),
             ("paper_mean_iu_crf_text", "published +CRF"), ("paper_split", "published on"),
             ("paper_setting", "setting"), ("paper_source", "source")]
    csv = [("key", "model"), ("n", "n"), ("mean_iu", "mean IU"), ("mean_iu_std", "std"), ("crf_n", "+CRF n"),
           ("crf_mean_iu", "+CRF mean IU"), ("crf_mean_iu_std", "std"), ("pixel_acc", "pixel acc."),
           ("pixel_acc_std", "std"), ("learned", "loss < floor"), ("width", "width"), ("recipe", "recipe"),
           ("iterations", "iterations"), ("params_m", "params (M)"), ("gflops", "GFLOPs"),
           ("output_stride", "OS"), ("forward_ms", "forward ms"), ("paper_mean_iu", "published mean IU"),
           ("paper_mean_iu_crf", "published +CRF mean IU"), ("paper_pixel_acc", "published pixel acc."),
           ("paper_split", "published on"), ("paper_setting", "setting"), ("paper_source", "source")]
    caption = ("Beyond FCN: FCN-8s and its successors trained and evaluated alike (percent, mean ± std over n "
               "seeds), beside each paper's published mean IU on its own data, split and inference (FCN-8s: 62.7 "
               "on VOC2011 seg11valid, the split our evaluation mirrors; 62.2 on VOC2012 test); parameters without the "
               "training-only auxiliary heads, GFLOPs (2 per multiply-add) of one 500x500 image and output stride "
               "(OS) of the full-width nets. " + (_crf_note(crf_sources) + ". " if crf_sources else "")
               + "Deviations: " + "; ".join(_deviations(rows, devices, dataset_note)))
    return write_table(out_prefix, shown, rows, caption=caption, csv_columns=csv, sources=sources + crf_sources)
