"""Per-class IU / accuracy from a confusion matrix, its CSV and its figure."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from segbench.evaluation.metrics import scores
from segbench.reporting.perclass import per_class, perclass, plot_perclass, write_perclass_csv

NAMES = ["background", "cat", "dog", "cow"]
# rows = ground truth, columns = prediction
HIST = np.array([
    [50, 5, 5, 0],   # background: IU 50 / (60 + 60 - 50) = 5/7, acc 50/60
    [10, 30, 0, 0],  # cat: IU 30 / (40 + 35 - 30) = 2/3, acc 30/40
    [0, 0, 0, 0],    # dog: absent from the ground truth, predicted 5 times: IU 0, acc NaN
    [0, 0, 0, 0],    # cow: absent and never predicted: IU NaN, acc NaN
])


def test_per_class_values_and_nan_rules_match_metrics():
    rows = per_class(HIST, NAMES)
    assert [r["class"] for r in rows] == NAMES and [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["iu"] == pytest.approx(5 / 7) and rows[0]["acc"] == pytest.approx(50 / 60)
    assert rows[1]["iu"] == pytest.approx(2 / 3) and rows[1]["acc"] == pytest.approx(30 / 40)
    assert rows[2]["iu"] == 0.0 and math.isnan(rows[2]["acc"])
    assert math.isnan(rows[3]["iu"]) and math.isnan(rows[3]["acc"])
    assert [r["gt_pixels"] for r in rows] == [60, 40, 0, 0]
    assert [r["predicted_pixels"] for r in rows] == [60, 35, 5, 0]
    np.testing.assert_array_equal([r["iu"] for r in rows], scores(HIST)["per_class_iu"])
    # the mean of the defined accuracies is metrics' mean accuracy
    assert np.nanmean([r["acc"] for r in rows]) == pytest.approx(scores(HIST)["mean_acc"])


def test_per_class_rejects_mismatched_input():
    with pytest.raises(ValueError, match="3 class names for a 4-class"):
        per_class(HIST, NAMES[:3])
    with pytest.raises(ValueError, match=r"square \(n x n\), got shape \(4, 3\)"):
        per_class(HIST[:, :3], NAMES)


def test_csv_in_percent_with_nan(tmp_path):
    out = write_perclass_csv(per_class(HIST, NAMES), tmp_path / "perclass.csv", published={"cat": 71.5})
    lines = out.read_text().splitlines()
    assert lines == [
        "index,class,iu_percent,acc_percent,gt_pixels,predicted_pixels,published_iu_percent",
        "0,background,71.4286,83.3333,60,60,nan",
        "1,cat,66.6667,75.0000,40,35,71.5000",
        "2,dog,0.0000,nan,0,5,nan",
        "3,cow,nan,nan,0,0,nan",
    ]
    with pytest.raises(ValueError, match=r"\['horse'\].*not among"):
        write_perclass_csv(per_class(HIST, NAMES), tmp_path / "x.csv", published={"horse": 50.0})


def test_figure_draws_ours_beside_published_or_alone():
    rows = per_class(HIST, NAMES)
    alone = plot_perclass(rows, mean_iu=scores(HIST)["mean_iu"])
    ax = alone.axes[0]
    assert [round(p.get_height(), 4) for p in ax.patches] == [71.4286, 66.6667, 0.0, 0.0]
    assert [t.get_text() for t in ax.texts] == ["absent"]  # cow
    beside = plot_perclass(rows, mean_iu=0.4, published={"background": 90.0, "cat": 70.0})
    heights = [round(p.get_height(), 4) for p in beside.axes[0].patches]
    assert heights == [71.4286, 66.6667, 0.0, 0.0, 90.0, 70.0, 0.0, 0.0]
    assert [t.get_text() for t in beside.axes[0].get_legend().get_texts()] == ["ours mean IU 40.0", "ours",
                                                                                 "published"]


def test_perclass_from_an_evaluation_file(tmp_path):
    metrics = tmp_path / "val.json"
    result = scores(HIST)
    result.update(hist=HIST.tolist(), class_names=NAMES, model="fcn8s_vgg16")
    metrics.write_text(json.dumps(result))
    written = perclass(metrics_json=metrics, out_csv=tmp_path / "out" / "perclass.csv",
                       out_figure=tmp_path / "out" / "perclass", published={"cat": 60.0})
    assert [p.name for p in written] == ["perclass.csv", "perclass.png", "perclass.pdf"]
    with open(written[0]) as f:
        assert [row["class"] for row in csv.DictReader(f)] == NAMES
    assert Image.open(written[1]).size[0] > 100
    assert written[2].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["perclass.csv", "perclass.pdf", "perclass.png"]
    with pytest.raises(ValueError, match=r"keys \['hist'\] missing"):
        metrics.write_text(json.dumps({"class_names": NAMES, "mean_iu": 0.1}))
        perclass(metrics_json=metrics, out_csv=tmp_path / "a.csv", out_figure=tmp_path / "a")


def test_cli_perclass(tmp_path):
    from segbench.cli import main

    metrics = tmp_path / "val.json"
    result = scores(HIST)
    result.update(hist=HIST.tolist(), class_names=NAMES)
    metrics.write_text(json.dumps(result))
    (tmp_path / "published.json").write_text(json.dumps({"cat": 60.0}))
    assert main(["perclass", "--metrics", str(metrics), "--out-csv", str(tmp_path / "p.csv"), "--out-figure",
                 str(tmp_path / "p"), "--published", str(tmp_path / "published.json")]) == 0
    assert (tmp_path / "p.csv").read_text().splitlines()[2] == "1,cat,66.6667,75.0000,40,35,60.0000"
    assert (tmp_path / "p.png").exists() and (tmp_path / "p.pdf").exists()
