import csv
import json
import math

import pytest

from segbench.infra.tables import write_table
from segbench.reporting import published
from segbench.reporting.paper_tables import RANDOM_ROW, mean_std, pm, table1, table2, table_pretrain


def _metrics(tmp_path, name, values, learned=True):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**values, "train": {"learned": learned}}))
    return path


def _m(pixel_acc, mean_acc, mean_iu, fw_iu):
    return {"pixel_acc": pixel_acc, "mean_acc": mean_acc, "mean_iu": mean_iu, "fw_iu": fw_iu}


def test_mean_std_is_the_sample_statistic():
    mean, std, n = mean_std([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)
    assert math.isnan(mean_std([4.0])[1]) and mean_std([])[2] == 0
    assert pm(2.0, 1.0) == "2.0 ± 1.0" and pm(4.0, math.nan) == "4.0" and pm(math.nan, math.nan) == "--"


def test_table2_puts_ours_beside_the_paper(tmp_path):
    runs = {
        "FCN-32s": _metrics(tmp_path, "a", _m(0.9, 0.5, 0.25, 0.8)),
        "FCN-8s": [_metrics(tmp_path, "b1", _m(0.94, 0.6, 0.5, 0.9)),
                   _metrics(tmp_path, "b2", _m(0.96, 0.6, 0.6, 0.9), learned=False)],
        RANDOM_ROW: _metrics(tmp_path, "r", _m(0.8, 0.05, 0.04, 0.6)),
    }
    csv_path, tex_path, md_path = table2(runs, tmp_path / "tables" / "table2")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["net"] for r in rows] == ["FCN-32s", "FCN-8s", RANDOM_ROW]
    assert float(rows[0]["mean_iu"]) == pytest.approx(25.0) and rows[0]["n"] == "1" and rows[0]["mean_iu_std"] == ""
    assert float(rows[0]["mean_iu_paper"]) == published.TABLE2["FCN-32s"]["mean_iu"] == 59.4
    assert float(rows[1]["mean_iu"]) == pytest.approx(55.0) and float(rows[1]["mean_iu_std"]) == pytest.approx(7.0711, 1e-4)
    assert float(rows[1]["pixel_acc_diff"]) == pytest.approx(95.0 - 90.3)
    assert rows[1]["learned"] == "1/2" and rows[2]["mean_iu_paper"] == "" and rows[2]["mean_iu_diff"] == ""
    tex = tex_path.read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "FCN-8s & 2 & 95.0 $\\pm$ 1.4 & 90.3 & 4.7" in tex
    md = md_path.read_text()
    assert "| FCN-32s | 1 | 90.0 | 89.1 | 0.9 |" in md and "| 55.0 ± 7.1 | 62.7 | -7.7 |" in md


def test_table2_rejects_unknown_rows_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown Table 2 rows"):
        table2({"FCN-4s": tmp_path / "x.json"}, tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="snakemake --cores all"):
        table2({"FCN-16s": tmp_path / "missing.json"}, tmp_path / "t")


def test_table1_orders_rows_by_our_mean_iu_and_reads_the_card(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"device": "cpu: test CPU", "size": 500, "width": 1.0,
                                 "modes": {"fp32": {"mean_ms": 123.0}}}))
    runs = {"alexnet": {"model": "fcn32s_alexnet", "metrics": [_metrics(tmp_path, "a1", _m(0.8, 0.4, 0.30, 0.7)),
                                                               _metrics(tmp_path, "a2", _m(0.8, 0.4, 0.34, 0.7))],
                        "benchmark": bench},
            "vgg16": {"model": "fcn32s_vgg16", "metrics": [_metrics(tmp_path, "v", _m(0.8, 0.4, 0.20, 0.7))],
                      "benchmark": bench}}
    csv_path, _, md_path = table1(runs, tmp_path / "t1")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["backbone"] for r in rows] == ["alexnet", "vgg16"]  # our ordering, best first
    assert float(rows[0]["mean_iu"]) == pytest.approx(32.0) and float(rows[0]["mean_iu_std"]) == pytest.approx(2.8284, 1e-4)
    assert rows[1]["conv_layers"] == "16" and rows[1]["rf_size"] == "404" and float(rows[1]["params_m"]) == pytest.approx(134.35, 1e-3)
    assert float(rows[0]["forward_ms"]) == 123.0 and "test CPU" in md_path.read_text()
    with pytest.raises(ValueError, match="unknown Table 1 backbone"):
        table1({"resnet": runs["vgg16"]}, tmp_path / "t")


def test_pretrain_table_reads_the_sidecars(tmp_path):
    summary = tmp_path / "vgg16.json"
    summary.write_text(json.dumps({"backbone": "vgg16", "width": 0.125, "image_size": 224, "accuracy": 0.93,
                                   "chance": 0.05, "settings": {"crop_iterations": 400, "iterations": 150,
                                                                "batch_size": 32, "precision": "bf16", "wall_s": 90.0}}))
    csv_path, _, md = table_pretrain({"vgg16": summary}, tmp_path / "p")
    row = next(csv.DictReader(csv_path.open()))
    assert (row["accuracy"], row["images"], row["steps"], row["width"]) == ("93.0000", "17600", "400 + 150", "0.125")
    assert "| vgg16 | 0.125 | 224 | 93.0 | -- | 5.0 | 400 + 150 | -- |" in md.read_text()  # no clutter accuracy


def test_pretrain_table_shows_a_zoo_trunk_before_and_after_its_fine_tuning(tmp_path):
    summary = tmp_path / "resnet50_half.json"
    summary.write_text(json.dumps({
        "backbone": "resnet50_half", "width": 0.25, "pruned_from": "resnet50", "image_size": 224, "accuracy": 0.98,
        "accuracy_clutter": 0.93, "chance": 0.05, "before_finetuning": {"pruned": [0.062, 0.055],
                                                                         "recalibrated": [0.41, 0.3]},
        "settings": {"crop_iterations": 0, "iterations": 300, "batch_size": 32, "precision": "bf16", "wall_s": 80.0,
                     "zoo": {"sha256": "ab" * 32, "held_out_images": 2000}}}))
    _, _, md = table_pretrain({"resnet50_half": summary}, tmp_path / "p")
    text = md.read_text()
    assert "| resnet50_half | 0.25 | 224 | 98.0 | 93.0 | 5.0 | pruned from resnet50, then 0 + 300 | 6.2, 5.5 / 41.0, 30.0 |" in text
    assert "from the model zoo (zoo/MANIFEST.json: trained once, measured in fp32 on 2000 held-out images" in text


def test_write_table_escapes_latex_and_marks_missing_values(tmp_path):
    _, tex, md = write_table(tmp_path / "t", [("a", "mean_iu %"), ("b", "Δ")], [{"a": "x_y", "b": float("nan")}],
                             caption="c & d")
    assert "mean\\_iu \\%" in tex.read_text() and "$\\Delta$" in tex.read_text() and "x\\_y & --" in tex.read_text()
    assert "| x_y | -- |" in md.read_text()
    assert (tmp_path / "t.csv").read_text() == "a,b\nx_y,\n"
