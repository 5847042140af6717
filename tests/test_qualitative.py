"""The Figure 4-like qualitative figure and the training curves, on stores and logs made here."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from segbench import models
from segbench.data.store import Store, write_store
from segbench.data.tensors import modality_input, to_input
from segbench.data.voc import CLASS_NAMES, MEAN_BGR
from segbench.evaluation.predict import load_for_store
from segbench.reporting.curves import plot_curves, training_curves
from segbench.reporting.qualitative import VOID_RGB, colorize, palette_for, plot_rows, qualitative, select_indices
from segbench.training.trainlog import read_log
from segbench.weights import save_model

WIDTH = 1 / 16


def _store(path, *, dataset, num_classes, shapes, seed=0, hha=False):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    labels = []
    for h, w in shapes:
        label = rng.integers(0, num_classes, (h, w), dtype=np.uint8)
        label[:2] = 255  # a void border
        labels.append(label)
    fields, attrs = {"image": images, "label": labels}, {"mean_bgr": list(MEAN_BGR)}
    if hha:
        fields["hha"] = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
        attrs["mean_hha"] = [118.5, 94.8, 132.4]
    return write_store(path, dataset=dataset, split="val", ids=[f"img{k}" for k in range(len(shapes))],
                       fields=fields, attrs=attrs,
                       class_names=[f"class{k}" for k in range(num_classes)] if dataset != "voc" else CLASS_NAMES)


def _weights(path, name, num_classes, seed, norm="caffe", modality="rgb", in_channels=3):
    torch.manual_seed(seed)
    net = models.build(name, num_classes, width=WIDTH, in_channels=in_channels)
    with torch.no_grad():  # non-zero score layers, so that predictions differ between classes and models
        for module_name, module in net.named_modules():
            if module_name.split(".")[-1].startswith("score") and isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 0.05)
                module.bias.normal_(0, 1.0)
    return save_model(path, net, name=name, num_classes=num_classes, width=WIDTH, in_channels=in_channels,
                      meta={"input_norm": norm, "modality": modality})


def test_palettes_and_void_colour():
    voc = palette_for("voc", 21)
    assert voc.shape == (21, 3) and tuple(voc[0]) == (0, 0, 0) and tuple(voc[1]) == (128, 0, 0)
    for dataset, n in (("nyud", 40), ("siftflow", 33)):
        generic = palette_for(dataset, n)
        assert generic.shape == (n, 3) and generic.dtype == np.uint8
        assert len({tuple(c) for c in generic}) == n  # distinct colours
        assert VOID_RGB not in {tuple(c) for c in generic}
    with pytest.raises(ValueError, match="61 classes but the 'nyud' palette has 60 colours"):
        palette_for("nyud", 61)
    label = np.array([[0, 1], [255, 2]], dtype=np.uint8)
    assert colorize(label, voc).tolist() == [[[0, 0, 0], [128, 0, 0]], [[255, 255, 255], [0, 128, 0]]]


def test_select_indices(tmp_path):
    store = Store(_store(tmp_path / "val.h5", dataset="voc", num_classes=21, shapes=[(20, 24)] * 7))
    assert select_indices(store, ["img5", "img1"]) == [5, 1]
    assert select_indices(store, count=3) == [0, 3, 6]
    assert select_indices(store, count=50) == list(range(7))
    with pytest.raises(ValueError, match=r"ids \['nope'\] are not in"):
        select_indices(store, ["img0", "nope"])


def test_predictions_follow_the_record_input_norm(tmp_path):
    store = Store(_store(tmp_path / "val.h5", dataset="voc", num_classes=21, shapes=[(30, 26)]))
    path = _weights(tmp_path / "tv.pt", "fcn32s_vgg16", 21, seed=1, norm="torchvision")
    predictor = load_for_store(path, store, torch.device("cpu"))
    assert predictor.norm == "torchvision" and predictor.modality == "rgb" and not predictor.model.training
    got = predictor.labels(store, 0, torch.device("cpu"))
    with torch.no_grad():
        expected = predictor.model(to_input([store.image(0)], MEAN_BGR, "torchvision"))[0].argmax(0).numpy()
    assert got.dtype == np.uint8 and got.shape == (30, 26)
    np.testing.assert_array_equal(got, expected)
    nyud = Store(_store(tmp_path / "nyud.h5", dataset="nyud", num_classes=40, shapes=[(30, 26)]))
    with pytest.raises(ValueError, match="predicts 21 classes but .* has 40"):
        load_for_store(path, nyud, torch.device("cpu"))


def test_predictions_feed_the_trained_modality_and_read_the_first_head(tmp_path):
    """An HHA or colour + HHA net gets the store's HHA channels (minus mean_hha), a late-fusion net its six
    channels; SIFT Flow's two-headed net is read on its semantic head (the first 33 of 36 channels)."""
    cpu = torch.device("cpu")
    nyud = Store(_store(tmp_path / "nyud.h5", dataset="nyud", num_classes=40, shapes=[(34, 30)], hha=True))
    for name, modality, channels in (("fcn32s_vgg16", "hha", 3), ("fcn32s_rgbhha_vgg16", "rgb_hha", 6)):
        predictor = load_for_store(_weights(tmp_path / f"{modality}.pt", name, 40, seed=3, modality=modality,
                                            in_channels=channels), nyud, cpu)
        x = modality_input(nyud, [0], modality, "caffe")
        assert x.shape[1] == channels
        with torch.no_grad():
            expected = predictor.model(x)[0].argmax(0).numpy()
        np.testing.assert_array_equal(predictor.labels(nyud, 0, cpu), expected)
    rgb_only = Store(_store(tmp_path / "rgb.h5", dataset="nyud", num_classes=40, shapes=[(34, 30)]))
    with pytest.raises(ValueError, match=r"takes 'hha' input but .*rgb.h5 has no \['hha'\] field"):
        load_for_store(tmp_path / "hha.pt", rgb_only, cpu)
    inconsistent = _weights(tmp_path / "rgbd3.pt", "fcn32s_vgg16", 40, seed=3, modality="rgbd", in_channels=3)
    with pytest.raises(ValueError, match="takes 3 input channels but its modality 'rgbd' gives 4"):
        load_for_store(inconsistent, nyud, cpu)

    sift = Store(_store(tmp_path / "sift.h5", dataset="siftflow", num_classes=33, shapes=[(34, 30)]))
    predictor = load_for_store(_weights(tmp_path / "sift.pt", "fcn16s_siftflow_vgg16", 33, seed=4), sift, cpu)
    assert dict(predictor.model.heads) == {"label": 33, "label_geo": 3}
    with torch.no_grad():
        predictor.model.score_fr_geo.bias.fill_(50.0)  # the geometric head outscores every semantic class
        scores = predictor.model(modality_input(sift, [0], "rgb", "caffe"))[0]
    assert scores.shape[0] == 36
    got = predictor.labels(sift, 0, cpu)
    np.testing.assert_array_equal(got, scores[:33].argmax(0).numpy())
    assert (scores.argmax(0) >= 33).all()  # over all 36 channels a geometric one wins everywhere: not read


@pytest.mark.parametrize("dataset,num_classes", [("voc", 21), ("nyud", 40), ("siftflow", 33)])
def test_qualitative_figure_shows_image_truth_and_each_model(tmp_path, dataset, num_classes):
    store_path = _store(tmp_path / "val.h5", dataset=dataset, num_classes=num_classes,
                        shapes=[(32, 40), (36, 28), (32, 40)])
    weights = {"FCN-32s": _weights(tmp_path / "a.pt", "fcn32s_vgg16", num_classes, seed=1),
               "FCN-8s": _weights(tmp_path / "b.pt", "fcn8s_vgg16", num_classes, seed=2)}
    written = qualitative(store_path=store_path, models=weights, out_figure=tmp_path / "fig" / "qualitative",
                          ids=["img2", "img1"], device="cpu")
    assert [p.name for p in written] == ["qualitative.png", "qualitative.pdf"]
    assert Image.open(written[0]).size[0] > 200 and written[1].read_bytes()[:5] == b"%PDF-"

    # the same grid, drawn in memory: each panel is the colorized truth / prediction
    store = Store(store_path)
    palette = palette_for(dataset, num_classes)
    predictors = [load_for_store(p, store, torch.device("cpu")) for p in weights.values()]
    rows = []
    for i in (2, 1):
        preds = [p.labels(store, i, torch.device("cpu")) for p in predictors]
        rows.append({"id": store.ids[i], "panels": [store.image(i), store.label(i), *preds]})
    fig = plot_rows(rows, columns=["image", "ground truth", *weights], palette=palette, class_names=store.class_names)
    axes = fig.axes
    assert [ax.get_title() for ax in axes[:4]] == ["image", "ground truth", "FCN-32s", "FCN-8s"]
    assert [axes[0].get_ylabel(), axes[4].get_ylabel()] == ["img2", "img1"]
    np.testing.assert_array_equal(axes[4].images[0].get_array(), store.image(1))
    np.testing.assert_array_equal(axes[5].images[0].get_array(), colorize(store.label(1), palette))
    np.testing.assert_array_equal(axes[7].images[0].get_array(), colorize(rows[1]["panels"][3], palette))
    assert (axes[5].images[0].get_array()[:2] == 255).all()  # the void border is white
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    shown = sorted(set().union(*[np.unique(p).tolist() for r in rows for p in r["panels"][1:]]) - {255})
    assert legend == [store.class_names[k] for k in shown] + ["void"]


def _log(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "images_seen", "train_loss", "wall_s", "val_loss", "val_mean_iu"])
        w.writerows(rows)
    return path


def test_training_curves_with_and_without_validation(tmp_path):
    rows = [[it, it, 100.0 - it, 0.1 * it, "", ""] for it in range(1, 11)]
    rows[4][4:] = [55.0, 0.25]
    rows[9][4:] = [50.0, 0.5]
    fig = plot_curves(read_log(_log(tmp_path / "log.csv", rows)), run="fcn8s", window=2)
    loss_ax, iu_ax = fig.axes
    raw, smooth = loss_ax.lines
    np.testing.assert_array_equal(raw.get_ydata(), [100.0 - it for it in range(1, 11)])
    np.testing.assert_allclose(smooth.get_ydata(), [99.0] + [100.0 - it + 0.5 for it in range(2, 11)])
    np.testing.assert_array_equal(iu_ax.lines[0].get_xdata(), [5, 10])
    np.testing.assert_allclose(iu_ax.lines[0].get_ydata(), [25.0, 50.0])
    no_val = plot_curves(read_log(_log(tmp_path / "noval.csv", [r[:4] + ["", ""] for r in rows])), run="x", window=2)
    assert len(no_val.axes) == 1
    written = training_curves(log_csv=tmp_path / "log.csv", out_figure=tmp_path / "curves" / "fcn8s", run="fcn8s")
    assert [p.name for p in written] == ["fcn8s.png", "fcn8s.pdf"] and all(p.stat().st_size > 0 for p in written)
    with pytest.raises(FileNotFoundError, match="run its train step"):
        training_curves(log_csv=tmp_path / "absent.csv", out_figure=tmp_path / "x", run="x")


def test_cli_qualitative_and_curves(tmp_path):
    from segbench.cli import main

    store = _store(tmp_path / "val.h5", dataset="voc", num_classes=21, shapes=[(24, 24)] * 3)
    a = _weights(tmp_path / "a.pt", "fcn32s_vgg16", 21, seed=1)
    assert main(["qualitative", "--store", str(store), "--model", f"FCN-32s={a}", "--id", "img1",
                 "--out-figure", str(tmp_path / "q"), "--device", "cpu"]) == 0
    assert (tmp_path / "q.png").exists() and (tmp_path / "q.pdf").exists()
    log = _log(tmp_path / "log.csv", [[it, it, 10.0 - it, 0.1 * it, "", ""] for it in range(1, 6)])
    assert main(["curves", "--log", str(log), "--run", "fcn32s", "--out-figure", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c.png").exists() and (tmp_path / "c.pdf").exists()
    assert main(["qualitative", "--store", str(store), "--model", f"FCN-32s={a}", "--id", "nope",
                 "--out-figure", str(tmp_path / "x"), "--device", "cpu"]) == 1
