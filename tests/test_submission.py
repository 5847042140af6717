"""The evaluation server's submission layout, its completeness check and archive, on a tiny test store."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from segbench import models
from segbench.data.store import Store, write_store
from segbench.data.tensors import to_input
from segbench.data.voc import CLASS_NAMES, MEAN_BGR, voc_palette
from segbench.evaluation.predict import load_for_store
from segbench.evaluation.submission import (
    SubmissionError,
    check_submission,
    results_folder,
    write_label_png,
    write_submission,
)
from segbench.weights import save_model

IDS = ["2008_000001", "2008_000007", "2009_000012"]
SHAPES = [(30, 40), (36, 28), (30, 40)]


@pytest.fixture(scope="module")
def test_store(tmp_path_factory):
    """A VOC test split: images only, as the real test set has no labels."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]
    path = tmp_path_factory.mktemp("store") / "test2012.h5"
    return write_store(path, dataset="voc", split="test2012", ids=IDS, fields={"image": images},
                       class_names=CLASS_NAMES, attrs={"mean_bgr": list(MEAN_BGR)})


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    net = models.build("fcn8s_vgg16", 21, width=1 / 16)
    with torch.no_grad():
        for layer in ("score_fr", "score_pool4", "score_pool3"):
            getattr(net, layer).weight.normal_(0, 0.05)
            getattr(net, layer).bias.normal_(0, 1.0)
    return save_model(tmp_path_factory.mktemp("w") / "model.pt", net, name="fcn8s_vgg16", num_classes=21,
                      width=1 / 16, meta={"input_norm": "caffe"})


def test_layout_and_pngs(tmp_path, test_store, weights):
    ids_list = tmp_path / "test.txt"
    ids_list.write_text("\n".join(IDS))  # no trailing newline, as some lists ship
    folder = write_submission(store_path=test_store, model_path=weights, out_dir=tmp_path / "sub", ids_list=ids_list,
                              device="cpu", progress=False)
    assert folder == tmp_path / "sub/results/VOC2012/Segmentation/comp6_test_cls"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.png" for i in IDS]
    assert not folder.with_name(folder.name + ".partial").exists()
    store = Store(test_store)
    predictor = load_for_store(weights, store, torch.device("cpu"))
    for k, (sample_id, (h, w)) in enumerate(zip(IDS, SHAPES)):
        png = Image.open(folder / f"{sample_id}.png")
        assert png.mode == "P" and png.size == (w, h)
        assert png.getpalette()[:63] == voc_palette()[:63].tolist()
        with torch.no_grad():
            expected = predictor.model(to_input([store.image(k)], MEAN_BGR, predictor.norm))[0].argmax(0).numpy()
        np.testing.assert_array_equal(np.asarray(png), expected)
    assert len(np.unique(np.asarray(Image.open(folder / f"{IDS[0]}.png")))) > 1  # not a constant map


def test_voc2011_naming_archive_and_rerun(tmp_path, test_store, weights):
    out = tmp_path / "sub"
    folder = write_submission(store_path=test_store, model_path=weights, out_dir=out, year="2011",
                              archive=tmp_path / "voc2011.tar.gz", device="cpu", progress=False)
    assert folder == results_folder(out, "2011") == out / "results/VOC2011/Segmentation/comp6_test_cls"
    with tarfile.open(tmp_path / "voc2011.tar.gz") as tar:
        names = tar.getnames()
        assert {m.mtime for m in tar.getmembers()} == {0}
    prefix = "results/VOC2011/Segmentation/comp6_test_cls"
    assert names == ["results", "results/VOC2011", "results/VOC2011/Segmentation", prefix] + \
        [f"{prefix}/{i}.png" for i in IDS]
    first = (tmp_path / "voc2011.tar.gz").read_bytes()
    (folder / "stale.png").write_bytes(b"from an older run")
    write_submission(store_path=test_store, model_path=weights, out_dir=out, year="2011",
                     archive=tmp_path / "voc2011.tar.gz", device="cpu", progress=False)
    assert not (folder / "stale.png").exists()
    assert (tmp_path / "voc2011.tar.gz").read_bytes() == first  # deterministic archive
    with pytest.raises(ValueError, match=r"year must be one of \('2011', '2012'\), got '2010'"):
        results_folder(out, "2010")


def test_completeness_check_lists_what_is_wrong(tmp_path):
    folder = results_folder(tmp_path)
    expected = dict(zip(IDS, SHAPES))
    for sample_id, (h, w) in expected.items():
        write_label_png(folder / f"{sample_id}.png", np.zeros((h, w), np.uint8))
    check_submission(folder, expected)
    (folder / IDS[1]).with_suffix(".png").unlink()
    (folder / "notes.txt").write_text("x")
    write_label_png(folder / "2010_999999.png", np.zeros((2, 2), np.uint8))
    write_label_png(folder / f"{IDS[2]}.png", np.zeros((40, 30), np.uint8))  # transposed
    with pytest.raises(SubmissionError) as err:
        check_submission(folder, expected)
    msg = str(err.value)
    assert "1 of 3 ids have no PNG: 2008_000007" in msg
    assert "2 entries are not PNGs of a test id: 2010_999999.png, notes.txt" in msg
    assert "2009_000012.png is 30x40, expected 40x30 (width x height)" in msg
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(folder / f"{IDS[0]}.png")  # grey, not palette
    write_label_png(folder / f"{IDS[2]}.png", np.full((30, 40), 21, np.uint8))
    with pytest.raises(SubmissionError, match=r"2008_000001.png has mode L.*2009_000012.png has class index 21 >= 21"):
        check_submission(folder, expected)
    with pytest.raises(SubmissionError, match="does not exist"):
        check_submission(tmp_path / "absent", expected)


def test_mismatched_ids_list_and_model(tmp_path, test_store, weights):
    ids_list = tmp_path / "test.txt"
    ids_list.write_text("2008_000001\n2008_000007\n2011_000003\n")
    with pytest.raises(ValueError, match=r"1 listed ids are not in the store \(2011_000003\), 1 store ids are not "
                                         r"listed \(2009_000012\)"):
        write_submission(store_path=test_store, model_path=weights, out_dir=tmp_path, ids_list=ids_list,
                         device="cpu", progress=False)
    nyud = write_store(tmp_path / "nyud.h5", dataset="nyud", split="test", ids=["a"],
                       fields={"image": [np.zeros((8, 8, 3), np.uint8)]}, class_names=[str(k) for k in range(40)])
    with pytest.raises(ValueError, match="predicts 21 classes but .* has 40"):
        write_submission(store_path=nyud, model_path=weights, out_dir=tmp_path, device="cpu", progress=False)


def test_cli_submission(tmp_path, test_store, weights):
    from segbench.cli import main

    assert main(["submission", "--store", str(test_store), "--weights", str(weights), "--out-dir", str(tmp_path),
                 "--archive", str(tmp_path / "sub.tar.gz"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in results_folder(tmp_path).iterdir()) == [f"{i}.png" for i in IDS]
    assert (tmp_path / "sub.tar.gz").stat().st_size > 0
