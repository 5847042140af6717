"""The successors table from hand-written evaluation and benchmark files: FCN-8s first, mean ± std over seeds,
model cards, forward time, the published figures with their sources, and a caption naming the deviations."""

import csv
import dataclasses
import json

import pytest

from segbench import cli, models
from segbench.reporting.successors import structure, table_successors


def _metrics(tmp_path, name, mean_iu, pixel_acc=0.8, learned=True):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"mean_iu": mean_iu, "pixel_acc": pixel_acc, "mean_acc": 0.5, "fw_iu": 0.7,
                                "train": {"learned": learned}}))
    return path


def _crf_metrics(tmp_path, name, mean_iu):
    """An evaluation with the dense CRF, as ``segbench evaluate --crf`` writes it (with its ``crf`` record)."""
    path = _metrics(tmp_path, name, mean_iu)
    record = json.loads(path.read_text())
    record["crf"] = {"params": {"w1": 4.0, "theta_alpha": 67.0, "theta_beta": 3.0, "w2": 3.0, "theta_gamma": 1.0,
                                "iterations": 10}, "scale": "auto", "seconds_per_image": 0.3}
    path.write_text(json.dumps(record))
    return path


def _bench(tmp_path, name, ms):
    path = tmp_path / f"bench-{name}.json"
    path.write_text(json.dumps({"device": "test CPU", "size": 500, "width": 1.0,
                                "modes": {"fp32": {"mean_ms": ms, "median_ms": ms - 1}}}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("succ")
    return {
        "pspnet_resnet50": {"metrics": [_metrics(tmp, "p1", 0.40, 0.90), _metrics(tmp, "p2", 0.50, 0.92)],
                            "crf_metrics": [_crf_metrics(tmp, "pc1", 0.44), _crf_metrics(tmp, "pc2", 0.52)],
                            "benchmark": _bench(tmp, "psp", 321.0), "recipe": "short", "iterations": 200,
                            "width": 0.25},
        "unet_same": {"metrics": [_metrics(tmp, "u1", 0.30), _metrics(tmp, "u2", 0.34, learned=False)],
                      "benchmark": None, "recipe": "unet", "iterations": 30_000, "width": 1.0},
        "fcn8s_vgg16": {"metrics": [_metrics(tmp, "f1", 0.35), _metrics(tmp, "f2", 0.37)],
                        "benchmark": _bench(tmp, "fcn", 2180.0), "recipe": "short", "iterations": 200,
                        "width": 0.125},
    }


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("tables") / "successors"
    return table_successors(runs, prefix, dataset_note="synthetic VOC twin, 128 px")


def test_fcn8s_comes_first_and_seeds_are_averaged(written):
    rows = list(csv.DictReader(written[0].open()))
    assert [r["key"] for r in rows] == ["fcn8s_vgg16", "pspnet_resnet50", "unet_same"]
    fcn, psp, unet = rows
    assert float(psp["mean_iu"]) == pytest.approx(45.0) and float(psp["mean_iu_std"]) == pytest.approx(7.0711, 1e-4)
    assert float(psp["pixel_acc"]) == pytest.approx(91.0) and psp["n"] == "2"
    assert unet["learned"] == "1/2" and fcn["learned"] == "2/2"


def test_cards_benchmarks_and_published_figures(written):
    fcn, psp, unet = list(csv.DictReader(written[0].open()))
    assert float(psp["forward_ms"]) == 321.0 and float(fcn["forward_ms"]) == 2180.0 and unet["forward_ms"] == ""
    assert psp["output_stride"] == "8" and fcn["output_stride"] == "8" and unet["output_stride"] == "1"
    assert float(fcn["params_m"]) == pytest.approx(134.36, abs=0.01)  # FCN-8s VGG16, 21 classes
    assert 300 < float(fcn["gflops"]) < 400 and float(psp["gflops"]) > 100
    assert float(fcn["paper_mean_iu"]) == 62.7 and fcn["paper_split"] == "VOC2011 seg11valid"
    assert float(fcn["paper_pixel_acc"]) == 90.3 and "62.2 on VOC2012 test" in fcn["paper_setting"]
    assert float(psp["paper_mean_iu"]) == models.MODELS["pspnet_resnet50"].published["mean_iu"] == 77.05
    assert "semseg" in psp["paper_source"] and unet["paper_mean_iu"] == "" and unet["paper_split"] == ""


def test_markdown_and_caption_name_every_deviation(written):
    md = written[2].read_text()
    caption = md.splitlines()[0]
    assert "synthetic VOC twin, 128 px" in caption
    assert "channel width 0.125 (FCN-8s); 0.25 (PSPNet (ResNet-50))" in caption
    assert "recipe short (FCN-8s, PSPNet (ResNet-50)) instead of each paper's own" in caption
    assert "iterations 200 (FCN-8s, PSPNet (ResNet-50)) instead of the published 100,000 (FCN-8s); 30,000" in caption
    assert "U-Net" not in caption  # its own recipe, full length, full width: nothing to say
    assert "2 seeds" in caption and "test CPU (500x500, width 1)" in caption
    assert "62.7 on VOC2011 seg11valid" in caption and "62.2 on VOC2012 test" in caption
    assert ("| FCN-8s | 2 | 36.0 ± 1.4 | -- | 80.0 ± 0.0 | 134.4 | 362.8 | 8 | 2180.0 | short | 62.7 | -- "
            "| VOC2011 seg11valid |" in md), [line for line in md.splitlines() if line.startswith("| FCN-8s")]
    assert "| PSPNet (ResNet-50) | 2 | 45.0 ± 7.1 | 48.0 ± 5.7 | 91.0 ± 1.4 | 46.6 |" in md
    assert "| short | 77.05 | -- | VOC2012 val |" in md  # published figures as printed, not rounded in md
    assert "\\toprule" in written[1].read_text() and "$\\pm$" in written[1].read_text()


def test_the_crf_column_averages_the_crf_evaluations_and_is_blank_without_them(written):
    fcn, psp, unet = list(csv.DictReader(written[0].open()))
    assert float(psp["crf_mean_iu"]) == pytest.approx(48.0) and float(psp["crf_mean_iu_std"]) == pytest.approx(5.6569)
    assert psp["crf_n"] == "2" and float(psp["mean_iu"]) == pytest.approx(45.0)  # the plain column is unchanged
    assert fcn["crf_mean_iu"] == fcn["crf_n"] == unet["crf_mean_iu"] == ""
    md = written[2].read_text()
    assert "| PSPNet (ResNet-50) | 2 | 45.0 ± 7.1 | 48.0 ± 5.7 | 91.0 ± 1.4 |" in md
    assert ("+CRF: mean IU of the same nets after DeepLab's dense CRF (w1 4, theta_alpha 67, theta_beta 3, w2 3, "
            "theta_gamma 1, 10 iterations, spatial bandwidths times image size / 500)") in md.splitlines()[0]


def test_a_published_crf_figure_is_shown_where_the_model_declares_one(tmp_path, monkeypatch):
    entry = models.MODELS["icnet_resnet50"]
    monkeypatch.setitem(models.MODELS, "icnet_resnet50",
                        dataclasses.replace(entry, published={**entry.published, "mean_iu_crf": 71.25}))
    run = {"icnet_resnet50": {"metrics": _metrics(tmp_path, "i", 0.2)},
           "unet_same": {"metrics": _metrics(tmp_path, "u", 0.1)}}
    written = table_successors(run, tmp_path / "t")
    icnet, unet = list(csv.DictReader(written[0].open()))
    assert float(icnet["paper_mean_iu_crf"]) == 71.25 and unet["paper_mean_iu_crf"] == ""
    md = written[2].read_text()
    assert "| 71.25 |" in md and "+CRF:" not in md.splitlines()[0]  # no CRF evaluation: no note


def test_one_seed_says_so(tmp_path):
    run = {"icnet_resnet50": {"metrics": _metrics(tmp_path, "i", 0.2)}}
    _, _, md = table_successors(run, tmp_path / "t")
    text = md.read_text()
    assert "one seed, so no spread" in text.splitlines()[0]
    assert "| ICNet (ResNet-50, half width) | 1 | 20.0 | -- | 80.0 |" in text


def test_fewer_seeds_for_the_successors_are_named_per_model(tmp_path):
    fcn = [_metrics(tmp_path, f"f{k}", 0.5) for k in (1, 2, 3)]
    run = {"fcn8s_vgg16": {"metrics": fcn}, "icnet_resnet50": {"metrics": [_metrics(tmp_path, "i", 0.2)]},
           "unet_same": {"metrics": [_metrics(tmp_path, "u", 0.1)]}}
    caption = table_successors(run, tmp_path / "t")[2].read_text().splitlines()[0]
    assert ("seeds per model: 3 (FCN-8s); 1 (ICNet (ResNet-50, half width), U-Net (same padding)); "
            "one seed has no spread") in caption


def test_structure_of_a_successor_is_its_card():
    s = structure("deeplabv3plus_resnet50")
    assert s["output_stride"] == 4 and s["params"] > 20e6 and s["gflops"] > 50


def test_unknown_models_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"unknown models \['fcn4s'\].*'fcn8s_vgg16'"):
        table_successors({"fcn4s": {"metrics": []}}, tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="snakemake --cores all"):
        table_successors({"unet": {"metrics": tmp_path / "missing.json"}}, tmp_path / "t")


def test_cli_subcommand_writes_the_table(runs, tmp_path):
    spec = {**runs["unet_same"], "metrics": [str(p) for p in runs["unet_same"]["metrics"]]}
    code = cli.main(["table-successors", "--run", "unet_same=" + json.dumps(spec), "--out-prefix",
                     str(tmp_path / "s"), "--note", "twin"])
    assert code == 0
    row = next(csv.DictReader((tmp_path / "s.csv").open()))
    assert row["key"] == "unet_same" and float(row["mean_iu"]) == pytest.approx(32.0)
