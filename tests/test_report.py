import csv
import json

import pytest

from segbench import paper
from segbench.report import table2
from segbench.tables import write_table


def _metrics(tmp_path, name, values):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(values))
    return path


def test_table2_puts_ours_beside_the_paper(tmp_path):
    runs = {
        "FCN-32s": _metrics(tmp_path, "a", {"pixel_acc": 0.9, "mean_acc": 0.5, "mean_iu": 0.25, "fw_iu": 0.8}),
        "FCN-8s": _metrics(tmp_path, "b", {"pixel_acc": 0.95, "mean_acc": 0.6, "mean_iu": 0.5, "fw_iu": 0.9}),
    }
    csv_path, tex_path, md_path = table2(runs, tmp_path / "tables" / "table2")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["net"] for r in rows] == ["FCN-32s", "FCN-8s"]
    assert float(rows[0]["mean_iu"]) == pytest.approx(25.0)
    assert float(rows[0]["mean_iu_paper"]) == paper.TABLE2["FCN-32s"]["mean_iu"] == 59.4
    assert float(rows[1]["pixel_acc_diff"]) == pytest.approx(95.0 - 90.3)
    tex = tex_path.read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "FCN-8s & 95.0 & 90.3 & 4.7" in tex
    md = md_path.read_text()
    assert "| FCN-32s | 90.0 | 89.1 | 0.9 |" in md


def test_table2_rejects_unknown_rows_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown Table 2 rows"):
        table2({"FCN-4s": tmp_path / "x.json"}, tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="snakemake --cores all"):
        table2({"FCN-16s": tmp_path / "missing.json"}, tmp_path / "t")


def test_write_table_escapes_latex_and_marks_missing_values(tmp_path):
    _, tex, md = write_table(tmp_path / "t", [("a", "mean_iu %"), ("b", "Δ")], [{"a": "x_y", "b": float("nan")}],
                             caption="c & d")
    assert "mean\\_iu \\%" in tex.read_text() and "$\\Delta$" in tex.read_text() and "x\\_y & --" in tex.read_text()
    assert "| x_y | -- |" in md.read_text()
    assert (tmp_path / "t.csv").read_text() == "a,b\nx_y,\n"
