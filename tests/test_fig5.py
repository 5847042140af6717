import csv
import math

import pytest
from PIL import Image

from segbench.reporting.fig5 import make_fig5, summarise
from segbench.training.trainlog import read_log

# p -> (images per iteration, seconds per iteration, loss drop per iteration, {iteration: val mean IU})
RUNS = {1.0: (1, 0.5, 1.0, {5: 0.30, 10: 0.40}), 0.5: (2, 0.8, 0.5, {5: 0.35}), 0.25: (4, 1.5, 0.25, {})}


def _write_log(path, images, seconds, drop, val, iterations=10):
    """Training loss 10 - drop * iteration (exact in binary), linear wall time, val_* only on val rows."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "images_seen", "train_loss", "wall_s", "val_loss", "val_mean_iu"])
        for it in range(1, iterations + 1):
            v = val.get(it)
            w.writerow([it, it * images, f"{10 - drop * it:.6g}", f"{seconds * it:.6g}",
                        "" if v is None else "1.5", "" if v is None else v])
    return path


@pytest.fixture
def logs(tmp_path):
    return {p: _write_log(tmp_path / f"p{p}.csv", *spec) for p, spec in RUNS.items()}


def _rows(logs, **kw):
    rows, target = summarise({p: read_log(path) for p, path in logs.items()}, **kw)
    return {row["p"]: row for row in rows}, target


def test_table_values_without_smoothing(logs):
    rows, target = _rows(logs, window=1)
    # default target: the highest final loss, 10 - 0.25 * 10 = 7.5 (the 25% run)
    assert target == 7.5
    assert list(rows) == ["1", "0.5", "0.25"]
    assert [rows[p]["images_processed"] for p in rows] == [10, 20, 40]
    assert [rows[p]["images_per_iteration"] for p in rows] == [1, 2, 4]
    assert [rows[p]["ms_per_iteration"] for p in rows] == pytest.approx([500.0, 800.0, 1500.0])
    # first iteration with loss <= 7.5: 10 - it <= 7.5 -> 3; 10 - it / 2 -> 5; 10 - it / 4 -> 10
    assert [rows[p]["iterations_to_target"] for p in rows] == [3, 5, 10]
    assert [rows[p]["seconds_to_target"] for p in rows] == pytest.approx([1.5, 4.0, 15.0])
    # relative to the full-image run's total training time, 5 s
    assert [rows[p]["percent_time_to_target"] for p in rows] == pytest.approx([30.0, 80.0, 300.0])
    assert rows["1"]["final_val_mean_iu"] == pytest.approx(40.0)   # the last validation row
    assert rows["0.5"]["final_val_mean_iu"] == pytest.approx(35.0)  # last non-empty, not the final row
    assert math.isnan(rows["0.25"]["final_val_mean_iu"])
    assert [rows[p]["curve"] for p in rows] == ["full images", "50% sampling", "25% sampling"]


def test_running_mean_window(logs):
    rows, target = _rows(logs, window=3)
    # trailing mean of 3 over a linear loss = the loss one iteration earlier: 25% run ends at 10 - 9 / 4
    assert target == pytest.approx(7.75)
    # full run: smoothed 9, 8.5, then 11 - it -> first <= 7.75 at iteration 4
    assert rows["1"]["iterations_to_target"] == 4
    assert rows["0.25"]["iterations_to_target"] == 10


def test_explicit_target_not_reached(logs, tmp_path):
    rows, target = _rows(logs, window=1, target_loss=2.0)
    assert target == 2.0 and rows["1"]["iterations_to_target"] == 8
    assert rows["0.5"]["iterations_to_target"] is None and math.isnan(rows["0.5"]["seconds_to_target"])
    out = {k: tmp_path / "out" / f"fig5.{k}" for k in ("png", "pdf", "csv", "tex", "md")}
    make_fig5(logs, out_table=tmp_path / "out" / "fig5", out_figure=tmp_path / "out" / "fig5", target_loss=2.0,
              window=1)
    with open(out["csv"]) as f:
        table = {r["p"]: r for r in csv.DictReader(f)}
    assert table["1"]["seconds_to_target"] == "4.0000"
    assert table["0.5"]["seconds_to_target"] == "" and table["0.25"]["final_val_mean_iu"] == ""
    assert "| 50% sampling |" in out["md"].read_text() and "| -- |" in out["md"].read_text()


def test_files_written(logs, tmp_path):
    out = {k: tmp_path / "figs" / f"fig5.{k}" for k in ("png", "pdf")}
    out |= {k: tmp_path / "tables" / f"fig5.{k}" for k in ("csv", "tex", "md")}
    paths = make_fig5(logs, out_table=tmp_path / "tables" / "fig5", out_figure=tmp_path / "figs" / "fig5",
                      model_name="fcn32s_vgg16", window=2)
    assert paths == [out[k] for k in ("png", "pdf", "csv", "tex", "md")]
    with Image.open(out["png"]) as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 300
    assert out["pdf"].read_bytes()[:5] == b"%PDF-"
    tex = out["tex"].read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "fcn32s\\_vgg16" in tex and "25\\% sampling" in tex
    with open(out["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["images_processed"] for r in table] == ["10", "20", "40"]
    assert [r["ms_per_iteration"] for r in table] == ["500.0000", "800.0000", "1500.0000"]
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_two_runs_without_full_images_use_the_largest_p_as_reference(logs, tmp_path):
    rows, _ = _rows({0.5: logs[0.5], 0.25: logs[0.25]}, window=1)
    # reference: the 50% run, 8 s in total; target 7.5 reached at iterations 5 and 10
    assert rows["0.5"]["percent_time_to_target"] == pytest.approx(50.0)
    assert rows["0.25"]["percent_time_to_target"] == pytest.approx(15.0 / 8.0 * 100)


def test_bad_inputs(logs, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("iteration,train_loss\n1,2.0\n")
    with pytest.raises(ValueError, match="missing columns \\['images_seen', 'wall_s'"):
        read_log(bad)
    with pytest.raises(FileNotFoundError, match="run its train step"):
        read_log(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        make_fig5({2.0: logs[1.0]}, out_table=tmp_path / "x", out_figure=tmp_path / "x")
