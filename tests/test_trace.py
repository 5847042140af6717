"""The traceability glue: provenance sidecars from the subcommands, per-class and curve batches, report pages."""

import csv
import hashlib
import json

import numpy as np
import pytest
import torch

from segbench.cli import main
from segbench.data.store import write_store
from segbench.data.voc import CLASS_NAMES, MEAN_BGR
from segbench.evaluation.metrics import scores
from segbench.infra.provenance import (
    collect,
    config_sha256,
    provenance_path,
    read_config,
    tracked,
    tracked_if,
    write_config,
    write_provenance,
    write_table_provenance,
)
from segbench.reporting.curves import curves_all, plot_curves
from segbench.reporting.fig5 import read_log
from segbench.reporting.pages import provenance_page, read_markdown_table, report_pages, table_page, trace
from segbench.reporting.perclass import csv_path, perclass_all

CONFIG = {"results": "results", "seeds": [1, 2], "train": {"iterations": 4}}
NAMES = ["background", "cat", "dog"]
HIST = np.array([[50, 5, 5], [10, 30, 0], [0, 0, 0]])


def _metrics(path, hist=HIST, seed=1):
    result = scores(hist)
    result.update(hist=np.asarray(hist).tolist(), class_names=NAMES, model="fcn8s_vgg16", split="val.h5",
                  train={"seed": seed})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


def _log(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["iteration,images_seen,train_loss,wall_s,val_loss,val_mean_iu"]
    lines += [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _sidecar(path):
    return json.loads(provenance_path(path).read_text())


# --- provenance: the parts the workflow relies on -------------------------------------------------------------

def test_resolved_config_round_trips_and_refuses_non_json(tmp_path):
    path = write_config(tmp_path / "provenance" / "config.json", CONFIG)
    assert read_config(path) == CONFIG and config_sha256(read_config(path)) == config_sha256(CONFIG)
    with pytest.raises(ValueError, match="plain JSON"):
        write_config(tmp_path / "bad.json", {"lr": float("inf")})
    with pytest.raises(FileNotFoundError, match="onstart"):
        read_config(tmp_path / "absent.json")


def test_tracked_takes_late_fields_and_writes_beside_every_output(tmp_path):
    out, also = tmp_path / "model.pt", tmp_path / "log.csv"
    store = tmp_path / "train.h5"
    store.write_bytes(b"store")
    with tracked(out, also=[also], config=CONFIG, inputs=[store, None], seeds=3, precision="auto") as late:
        out.write_bytes(b"w")
        late.update(precision="bf16", batch_size=20, images=7)
    record = _sidecar(out)
    assert _sidecar(also) == record
    assert record["precision"] == "bf16" and record["batch_size"] == 20 and record["seeds"] == [3]
    assert record["extra"] == {"images": 7}  # not a field of collect(): kept as extra
    assert [i["path"] for i in record["inputs"]] == [str(store)]  # None (an unused optional input) skipped
    assert record["inputs"][0]["sha256"] == hashlib.sha256(b"store").hexdigest()


def test_tracked_if_without_config_writes_nothing(tmp_path):
    with tracked_if(None, tmp_path / "x.json") as late:
        late["seeds"] = 1
    assert list(tmp_path.iterdir()) == []
    with tracked_if(CONFIG, tmp_path / "x.json"):
        pass
    assert _sidecar(tmp_path / "x.json")["config"] == CONFIG


def test_collect_resolves_the_config_device_string():
    assert collect(device="auto")["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert collect(device="cpu")["device"]["type"] == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        collect(device="tpu")


def test_table_rows_may_list_one_file_per_seed(tmp_path):
    seeds = [_metrics(tmp_path / f"seed{s}" / "val.json", seed=s) for s in (1, 2)]
    write_provenance(seeds[0], collect(config=CONFIG, seeds=1))
    record = json.loads(write_table_provenance(tmp_path / "table2", {"FCN-8s": {"metrics": seeds}}).read_text())
    first, second = record["rows"]["FCN-8s"]["metrics"]
    assert first["run"]["seeds"] == [1] and first["sha256"] == hashlib.sha256(seeds[0].read_bytes()).hexdigest()
    assert second["run"] is None and record["files_without_provenance"] == [str(seeds[1])]


# --- per-class and curve batches -------------------------------------------------------------------------------

def test_perclass_all_writes_a_csv_beside_each_evaluation_and_the_figures(tmp_path):
    runs = [_metrics(tmp_path / "evaluate" / run / "seed1" / "val.json") for run in ("fcn32s", "fcn8s")]
    written = perclass_all(metrics=runs, figures={"fcn8s": runs[1]}, figure_dir=tmp_path / "figures",
                           config=CONFIG)
    assert csv_path(runs[0]) == runs[0].with_name("val.perclass.csv")
    assert [p.name for p in written] == ["val.perclass.csv", "val.perclass.csv", "fcn8s.png", "fcn8s.pdf"]
    with open(csv_path(runs[1])) as f:
        rows = list(csv.DictReader(f))
    # hand-built matrix: cat IU 30 / (40 + 35 - 30), accuracy 30 / 40; dog absent but predicted: IU 0
    assert [(r["class"], r["iu_percent"], r["acc_percent"]) for r in rows] == [
        ("background", "71.4286", "83.3333"), ("cat", "66.6667", "75.0000"), ("dog", "0.0000", "nan")]
    side = _sidecar(csv_path(runs[1]))
    assert side["config"] == CONFIG and [i["path"] for i in side["inputs"]] == [str(runs[1])]
    assert _sidecar(tmp_path / "figures" / "fcn8s.png")["inputs"][0]["path"] == str(runs[1])
    with pytest.raises(ValueError, match="figure_dir"):
        perclass_all(metrics=runs, figures={"fcn8s": runs[1]})
    (tmp_path / "plain").mkdir()
    perclass_all(metrics=[_metrics(tmp_path / "plain" / "val.json")])  # no config: no sidecar
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["val.json", "val.perclass.csv"]


def test_curves_draw_every_seed_of_a_run(tmp_path):
    logs = [_log(tmp_path / "train" / "fcn8s" / f"seed{s}" / "log.csv",
                 [[it, it, 10.0 * s - it, 0.1 * it, None, None] for it in range(1, 6)]) for s in (1, 2)]
    fig = plot_curves({f"seed{s}": read_log(p) for s, p in zip((1, 2), logs)}, run="fcn8s", window=2)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 4  # raw and running mean per seed
    np.testing.assert_array_equal(fig.axes[0].lines[2].get_ydata(), [20.0 - it for it in range(1, 6)])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][0] == "seed1: per iteration"
    written = curves_all(runs={"fcn8s": logs}, out_dir=tmp_path / "curves", config=CONFIG)
    assert [p.name for p in written] == ["fcn8s.png", "fcn8s.pdf"]
    assert [i["path"] for i in _sidecar(written[0])["inputs"]] == [str(p) for p in logs]
    with pytest.raises(ValueError, match="no training log"):
        plot_curves({}, run="x")


# --- report pages ----------------------------------------------------------------------------------------------

def _traced_table(tmp_path):
    """A table whose row reads an evaluation made from weights made from a store: three sidecars deep."""
    store = tmp_path / "val.h5"
    store.write_bytes(b"store")
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    write_provenance(weights, collect(config=CONFIG, inputs=[store], seeds=1, batch_size=20, precision="bf16"))
    metrics = _metrics(tmp_path / "val.json")
    write_provenance(metrics, collect(config=CONFIG, inputs=[store, weights], seeds=1, precision="fp32"))
    prefix = tmp_path / "tables" / "table2"
    prefix.parent.mkdir()
    prefix.with_suffix(".md").write_text("Table 2: a caption\n\n| net | mean IU |\n|---|---:|\n| FCN-8s | 42.0 |\n")
    write_table_provenance(prefix, {"FCN-8s": {"metrics": [metrics]}}, config=CONFIG)
    return prefix, metrics, weights


def test_markdown_table_is_read_back(tmp_path):
    md = tmp_path / "t.md"
    md.write_text("Caption with | no pipe at the start\n\n| a | b ± c |\n|---|---:|\n| x | 1.0 ± 0.1 |\n| y | -- |\n")
    assert read_markdown_table(md) == ("Caption with | no pipe at the start", ["a", "b ± c"],
                                       [["x", "1.0 ± 0.1"], ["y", "--"]])
    md.write_text("just text\n")
    with pytest.raises(ValueError, match="no Markdown pipe table"):
        read_markdown_table(md)


def test_table_page_shows_the_table_and_the_runs_behind_each_row(tmp_path):
    prefix, metrics, weights = _traced_table(tmp_path)
    page = table_page(md=prefix.with_suffix(".md"), out_html=tmp_path / "pages" / "table2.html", title="T2").read_text()
    assert "<td>FCN-8s</td><td>42.0</td>" in page and "Table 2: a caption" in page
    assert str(metrics) in page and str(weights) in page  # the row's file and what it was made from
    assert config_sha256(CONFIG)[:12] in page and "<details>" in page
    (tmp_path / "tables" / "table2.provenance.json").unlink()
    assert "No provenance sidecar" in table_page(md=prefix.with_suffix(".md"), out_html=tmp_path / "p.html",
                                                 title="T2").read_text()


def test_trace_follows_sidecars_to_the_stores_and_weights(tmp_path):
    prefix, metrics, weights = _traced_table(tmp_path)
    found, missing = trace([provenance_path(prefix), tmp_path / "absent.png.provenance.json"])
    assert list(found) == [str(provenance_path(p)) for p in (prefix, metrics, weights)]
    assert missing == [str(tmp_path / "absent.png.provenance.json")]
    page = provenance_page(sidecars=[provenance_path(prefix)], out_html=tmp_path / "prov.html").read_text()
    assert page.count("<tr>") == 4  # header and three outputs
    assert f"<td>{weights}</td>" in page and "bf16" in page and f"{weights} (" in page  # an output and an input
    assert "resolved configuration" in page and "&quot;iterations&quot;: 4" in page


def test_report_pages_cli(tmp_path):
    prefix, _, _ = _traced_table(tmp_path)
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"png")
    write_provenance(figure, collect(config=CONFIG))
    out = tmp_path / "report"
    assert main(["report-pages", "--table", f"table2={prefix}", "--title", "table2=Table 2: skips",
                 "--figure", str(figure), "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["provenance.html", "table2.html"]
    assert "<title>Table 2: skips</title>" in (out / "table2.html").read_text()
    assert str(figure) in (out / "provenance.html").read_text()
    assert report_pages(tables={}, figures=[figure], out_dir=tmp_path / "only")[0].name == "provenance.html"


# --- subcommands write sidecars with --provenance ----------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """A store, weights and the evaluation of them, made through the subcommands with --provenance."""
    from segbench import models
    from segbench.weights import save_model

    tmp = tmp_path_factory.mktemp("eval")
    config = write_config(tmp / "config.json", CONFIG)
    rng = np.random.default_rng(0)
    store = write_store(tmp / "val.h5", dataset="voc", split="val", ids=["a", "b"],
                        fields={"image": [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)],
                                "label": [rng.integers(0, 21, (32, 32), dtype=np.uint8) for _ in range(2)]},
                        class_names=CLASS_NAMES, attrs={"mean_bgr": list(MEAN_BGR)})
    torch.manual_seed(0)
    weights = save_model(tmp / "model.pt", models.build("fcn32s_vgg16", 21, width=1 / 16), name="fcn32s_vgg16",
                         num_classes=21, width=1 / 16, meta={"input_norm": "caffe", "seed": 5})
    metrics = tmp / "evaluate" / "val.json"
    assert main(["evaluate", "--store", str(store), "--weights", str(weights), "--out", str(metrics), "--device",
                 "cpu", "--threads", "1", "--provenance", str(config)]) == 0
    return tmp, config, store, weights, metrics


def test_evaluate_writes_its_sidecar(evaluation):
    _, _, store, weights, metrics = evaluation
    record = _sidecar(metrics)
    assert [i["path"] for i in record["inputs"]] == [str(store), str(weights)]
    assert record["seeds"] == [5] and record["precision"] == "fp32" and record["threads"] == 1
    assert record["config"] == CONFIG and record["device"]["type"] == "cpu" and record["wall_s"] > 0
    assert set(record["software"]) >= {"torch", "torchvision", "cuda", "cudnn"}
    assert set(record["git"]) == {"commit", "dirty"}


def test_table_subcommands_trace_rows_to_metric_files(evaluation):
    tmp, config, _, _, metrics = evaluation
    prefix = tmp / "tables" / "table2"
    assert main(["table2", "--run", f"FCN-32s={metrics},{metrics}", "--out-prefix", str(prefix),
                 "--provenance", str(config)]) == 0
    record = json.loads(provenance_path(prefix).read_text())
    assert [e["path"] for e in record["rows"]["FCN-32s"]["metrics"]] == [str(metrics)] * 2
    assert record["rows"]["FCN-32s"]["metrics"][0]["run"]["seeds"] == [5]
    assert record["config_sha256s"] == [config_sha256(CONFIG)] and record["files_without_provenance"] == []
    plain = tmp / "tables" / "plain"
    assert main(["table2", "--run", f"FCN-32s={metrics}", "--out-prefix", str(plain)]) == 0
    assert not provenance_path(plain).exists()  # without --provenance, no sidecar


def test_perclass_and_curves_subcommands(evaluation, tmp_path, caplog):
    _, config, _, _, metrics = evaluation
    assert main(["perclass-all", "--metrics", str(metrics), "--figure", f"fcn32s={metrics}", "--figure-dir",
                 str(tmp_path / "pc"), "--provenance", str(config)]) == 0
    assert csv_path(metrics).read_text().splitlines()[0].startswith("index,class,iu_percent,acc_percent")
    assert provenance_path(csv_path(metrics)).exists() and provenance_path(tmp_path / "pc" / "fcn32s.pdf").exists()
    logs = [_log(tmp_path / "fcn8s" / f"seed{s}" / "log.csv", [[1, 1, 2.0, 0.1, 1.5, 0.2]]) for s in (1, 2)]
    assert main(["curves-all", "--run", f"fcn8s={logs[0]},{logs[1]}", "--out-dir", str(tmp_path / "c"),
                 "--provenance", str(config)]) == 0
    assert len(_sidecar(tmp_path / "c" / "fcn8s.png")["inputs"]) == 2
    caplog.clear()
    assert main(["curves-all", "--run", f"x={tmp_path / 'absent.csv'}", "--out-dir", str(tmp_path / "c")]) == 1
    assert "absent.csv does not exist: run its train step first" in caplog.text
