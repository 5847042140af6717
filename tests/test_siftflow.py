"""SIFT Flow twin layout, split derivation, label conventions, absent classes, and bad inputs."""

import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from segbench.data import siftflow
from segbench.data.siftflow import SUBDIR
from segbench.data.store import Store
from segbench.data.synthetic import siftflow as synth_siftflow
from segbench.evaluation.metrics import confusion_matrix


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return synth_siftflow.write_twin(tmp_path_factory.mktemp("sf") / "raw", n_train=10, n_test=4, seed=2)


@pytest.fixture(scope="module")
def stores(twin, tmp_path_factory):
    return siftflow.preprocess_siftflow(twin, tmp_path_factory.mktemp("pre"), progress=False)


def test_twin_layout_and_label_files(twin):
    jpgs = sorted((twin / "Images" / SUBDIR).glob("*.jpg"))
    sems = sorted((twin / "SemanticLabels" / SUBDIR).glob("*.mat"))
    assert len(jpgs) == 16 and len(sems) == 14 and len(list((twin / "GeoLabels" / SUBDIR).glob("*.mat"))) == 14
    with Image.open(jpgs[0]) as im:
        assert (im.format, im.size, im.mode) == ("JPEG", (256, 256), "RGB")
    s = scipy.io.loadmat(sems[0])["S"]
    assert s.shape == (256, 256) and s.min() >= 0 and s.max() <= 33
    lines = (twin / "TestSet1.txt").read_bytes().split(b"\r\n")
    assert lines[0].startswith(SUBDIR.encode() + b"\\") and lines[0].endswith(b".jpg") and len(lines) == 5


def test_splits_are_derived_from_testset1_and_annotations(twin, stores):
    test_ids = siftflow.read_list(twin / "TestSet1.txt")
    tv, te = Store(stores["trainval"]), Store(stores["test"])
    assert te.ids == test_ids and len(te) == 4
    assert len(tv) == 10 and not set(tv.ids) & set(te.ids)
    assert len(tv.attrs["unannotated"]) == 2 and not set(tv.attrs["unannotated"]) & set(tv.ids)
    assert tv.num_classes == 33 and tv.attrs["geo_class_names"] == ["sky", "horizontal", "vertical"]


def test_labels_are_decremented_with_void_255(twin, stores):
    s = Store(stores["trainval"])
    sem = scipy.io.loadmat(twin / "SemanticLabels" / SUBDIR / f"{s.ids[0]}.mat")["S"]
    geo = scipy.io.loadmat(twin / "GeoLabels" / SUBDIR / f"{s.ids[0]}.mat")["S"]
    assert np.array_equal(s.label(0), np.where(sem == 0, 255, sem - 1))
    assert np.array_equal(s.get("label_geo", 0), np.where(geo <= 0, 255, geo - 1))
    assert (s.label(0) == 255).any() and (s.get("label_geo", 0) == 255).any()
    with Image.open(twin / "Images" / SUBDIR / f"{s.ids[0]}.jpg") as im:
        assert np.array_equal(s.image(0), np.asarray(im))


def test_absent_test_classes_are_recorded(stores):
    te = Store(stores["test"])
    present = set()
    for i in range(len(te)):
        present |= {te.class_names[c] for c in np.unique(te.label(i)) if c != 255}
    absent = te.attrs["absent_from_test"]
    assert set(absent) == set(te.class_names) - present
    assert {"cow", "desert", "moon"} <= set(absent)
    assert Store(stores["trainval"]).attrs["absent_from_test"] == absent


def test_fcn_lists_without_trailing_newline_are_read_id_by_id(twin, stores, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(twin, raw / "SiftFlowDataset")  # the zip's root may sit one folder down
    tv, te = Store(stores["trainval"]), Store(stores["test"])
    (raw / "SiftFlowDataset" / "trainval.txt").write_text("\n".join(tv.ids[:3]))
    (raw / "SiftFlowDataset" / "test.txt").write_text("\n".join(te.ids))
    out = siftflow.preprocess_siftflow(raw, tmp_path / "pre", progress=False)
    assert Store(out["trainval"]).ids == tv.ids[:3] and Store(out["test"]).ids == te.ids


def test_expect_counts_mismatch_writes_nothing(twin, tmp_path):
    with pytest.raises(siftflow.SiftFlowError, match="split sizes"):
        siftflow.preprocess_siftflow(twin, tmp_path / "out", expect_counts=siftflow.REAL_COUNTS)
    assert not (tmp_path / "out").exists()


def _first_test(raw):
    return siftflow.read_list(raw / "TestSet1.txt")[0]


def _missing_image(raw):
    i = _first_test(raw)
    (raw / "Images" / SUBDIR / f"{i}.jpg").unlink()
    return raw / "Images" / SUBDIR / f"{i}.jpg"


def _missing_label(raw):
    i = _first_test(raw)
    (raw / "GeoLabels" / SUBDIR / f"{i}.mat").unlink()
    return raw / "GeoLabels" / SUBDIR / f"{i}.mat"


def _label_out_of_range(raw):
    path = raw / "SemanticLabels" / SUBDIR / f"{_first_test(raw)}.mat"
    s = scipy.io.loadmat(path)["S"]
    s[5, 5] = 34
    scipy.io.savemat(path, {"S": s})
    return path


def _geo_out_of_range(raw):
    path = raw / "GeoLabels" / SUBDIR / f"{_first_test(raw)}.mat"
    s = scipy.io.loadmat(path)["S"]
    s[5, 5] = -2
    scipy.io.savemat(path, {"S": s})
    return path


def _size_mismatch(raw):
    path = raw / "SemanticLabels" / SUBDIR / f"{_first_test(raw)}.mat"
    scipy.io.savemat(path, {"S": scipy.io.loadmat(path)["S"][:200]})
    return path


def _truncated_label(raw):
    path = raw / "SemanticLabels" / SUBDIR / f"{_first_test(raw)}.mat"
    path.write_bytes(path.read_bytes()[:90])
    return path


def _no_testset(raw):
    (raw / "TestSet1.txt").unlink()
    return raw / "TestSet1.txt"


@pytest.mark.parametrize("breaker,message", [
    (_missing_image, "is in a split list but"), (_missing_label, "is in a split list but"),
    (_label_out_of_range, "label value 34 outside 0..33"), (_geo_out_of_range, "outside -1..3"),
    (_size_mismatch, "is 200x256 but .* is 256x256"), (_truncated_label, "truncated"),
    (_no_testset, "TestSet1.txt is missing")])
def test_bad_input_names_the_file_and_writes_nothing(twin, tmp_path, breaker, message):
    raw = tmp_path / "raw"
    shutil.copytree(twin, raw)
    culprit = breaker(raw)
    with pytest.raises(siftflow.SiftFlowError, match=message) as err:
        siftflow.preprocess_siftflow(raw, tmp_path / "out", progress=False)
    assert str(culprit) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_geometric_labels_are_those_of_the_semantic_classes(stores):
    sky, horizontal = {"sky", "sun", "moon"}, {"road", "sidewalk", "crosswalk", "grass", "field", "sand", "desert",
                                               "sea", "river"}
    expected = np.array([0 if c in sky else 1 if c in horizontal else 2 for c in siftflow.CLASSES] + [255] * 223)
    for split in ("trainval", "test"):
        s = Store(stores[split])
        for i in range(len(s)):
            assert np.array_equal(s.get("label_geo", i), expected[s.label(i)])


def test_geometric_labels_follow_the_layout(stores):
    """In every column sky lies above the ground; the top row is never ground, the bottom row never sky."""
    s = Store(stores["trainval"])
    share = np.zeros((2, 3))
    for i in range(len(s)):
        geo = s.get("label_geo", i)
        rows = np.arange(geo.shape[0])[:, None]
        lowest_sky = np.where(geo == 0, rows, -1).max(0)
        highest_ground = np.where(geo == 1, rows, geo.shape[0]).min(0)
        assert (lowest_sky < highest_ground).all()
        assert not (geo[0] == 1).any() and not (geo[-1] == 0).any()
        for k, band in enumerate((geo[:64], geo[-64:])):
            share[k] += np.bincount(band[band != 255], minlength=3)[:3]
    share /= share.sum(1, keepdims=True)
    assert share[0, 0] > 0.5 and share[1, 1] > 0.5  # sky on top, ground at the bottom
    assert share[0, 2] > 0.05 and share[1, 2] > 0.05  # vertical things in both


def test_eval_classes_are_the_classes_present_in_test(stores):
    te, tv = Store(stores["test"]), Store(stores["trainval"])
    present = sorted(set(range(33)) - {te.class_names.index(c) for c in te.attrs["absent_from_test"]})
    assert te.attrs["eval_classes"] == present == tv.attrs["eval_classes"]
    hist = np.zeros((33, 33), np.int64)
    for i in range(len(te)):
        hist += confusion_matrix(te.label(i), np.zeros_like(te.label(i)), 33)
    assert sorted(np.flatnonzero(hist.sum(1)).tolist()) == present
    for name in ("cow", "desert", "moon"):
        assert te.class_names.index(name) not in present
        assert any((tv.label(i) == tv.class_names.index(name)).any() for i in range(len(tv)))


def test_mean_colour_comes_from_trainval(stores):
    tv, te = Store(stores["trainval"]), Store(stores["test"])
    pixels = np.concatenate([tv.image(i).reshape(-1, 3) for i in range(len(tv))]).astype(np.float64)
    np.testing.assert_allclose(tv.attrs["mean_bgr"], pixels.mean(0)[::-1])
    assert te.attrs["mean_bgr"] == tv.attrs["mean_bgr"]


def test_every_semantic_class_occurs_in_a_default_sized_twin(tmp_path):
    raw = synth_siftflow.write_twin(tmp_path / "raw", n_train=40, n_test=16, seed=0)
    seen = set()
    for path in (raw / "SemanticLabels" / SUBDIR).glob("*.mat"):
        seen |= set(np.unique(scipy.io.loadmat(path)["S"]).tolist())
    assert seen == set(range(34))  # void and all 33 classes
