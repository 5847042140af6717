"""The paper's tables, built only from saved metric, benchmark and model-card files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from segbench import models, paper
from segbench.tables import write_table

METRICS = (("pixel_acc", "pixel acc."), ("mean_acc", "mean acc."), ("mean_iu", "mean IU"), ("fw_iu", "f.w. IU"))


def _read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the step that writes it (snakemake --cores all {path})")
    return json.loads(path.read_text())


def table2(metrics: dict[str, str | os.PathLike], out_prefix: str | os.PathLike, *, dataset_note: str = "") -> list[Path]:
    """Table 2 (skip architectures): our four metrics beside the paper's and the difference, in percent.

    ``metrics`` maps a net name of the paper ("FCN-32s-fixed", "FCN-32s", "FCN-16s", "FCN-8s") to the
    evaluation JSON of that run.
    """
    unknown = sorted(set(metrics) - set(paper.TABLE2))
    if unknown:
        raise ValueError(f"unknown Table 2 rows {unknown}; expected names from {sorted(paper.TABLE2)}")
    rows = []
    for net, path in metrics.items():
        ours = _read_json(path)
        row = {"net": net}
        for key, _ in METRICS:
            row[key] = 100.0 * ours[key]
            row[f"{key}_paper"] = paper.TABLE2[net][key]
            row[f"{key}_diff"] = row[key] - row[f"{key}_paper"]
        rows.append(row)
    columns = [("net", "net")]
    for key, header in METRICS:
        columns += [(key, header), (f"{key}_paper", "paper"), (f"{key}_diff", "Δ")]
    caption = ("Table 2: FCN skip architectures on seg11valid (percent), ours beside the paper's" +
               (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, columns, rows, caption=caption)


def table1(runs: dict[str, dict], out_prefix: str | os.PathLike, *, dataset_note: str = "") -> list[Path]:
    """Table 1 (classifiers turned into FCNs): mean IU, forward time and the model card, beside the paper.

    ``runs`` maps a backbone ("alexnet", "vgg16", "googlenet") to ``{"model": name, "metrics": eval JSON,
    "benchmark": benchmark JSON}``. The forward time is the fp32 mean at the benchmark's size and device.
    """
    rows, devices = [], set()
    for backbone, run in runs.items():
        if backbone not in paper.TABLE1:
            raise ValueError(f"unknown Table 1 backbone {backbone!r}; expected one of {sorted(paper.TABLE1)}")
        card = models.card(run["model"])
        bench = _read_json(run["benchmark"])
        devices.add(f"{bench['device']} ({bench.get('size', '?')}x{bench.get('size', '?')}, width {bench.get('width', 1.0)})")
        ref = paper.TABLE1[backbone]
        rows.append({
            "backbone": backbone, "model": run["model"],
            "mean_iu": 100.0 * _read_json(run["metrics"])["mean_iu"], "mean_iu_paper": ref["mean_iu"],
            "forward_ms": bench["modes"]["fp32"]["mean_ms"], "forward_ms_paper": float(ref["forward_ms"]),
            "conv_layers": card["conv_layers"], "conv_layers_paper": ref["conv_layers"],
            "params_m": card["params"] / 1e6, "params_m_paper": float(ref["params_m"]),
            "rf_size": card["rf_size"], "rf_size_paper": ref["rf_size"],
            "max_stride": card["max_stride"], "max_stride_paper": ref["max_stride"],
        })
    columns = [("backbone", "backbone"), ("mean_iu", "mean IU"), ("mean_iu_paper", "paper"),
               ("forward_ms", "forward ms"), ("forward_ms_paper", "paper (K40c)"),
               ("conv_layers", "conv layers"), ("conv_layers_paper", "paper"),
               ("params_m", "params (M)"), ("params_m_paper", "paper"),
               ("rf_size", "rf size"), ("rf_size_paper", "paper"), ("max_stride", "max stride"),
               ("max_stride_paper", "paper")]
    caption = ("Table 1: classification nets as FCNs, ours beside the paper's; conv layers, parameters, rf size and "
               "stride are those of the full-width nets; forward time measured on " + ", ".join(sorted(devices))
               + (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, columns, rows, caption=caption)
