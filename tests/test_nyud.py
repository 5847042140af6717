"""NYUDv2 twin formats, preprocessing into the store, twin geometry, HHA hook, and every bad input."""

import json
import shutil

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from segbench import hha
from segbench.data import nyud, synth_nyud
from segbench.data.store import Store


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return synth_nyud.write_twin(tmp_path_factory.mktemp("nyud") / "raw", n_images=6, seed=3)


@pytest.fixture
def bad_copy(twin, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(twin, raw)
    return raw


def test_twin_is_in_the_real_formats(twin):
    head = (twin / "nyu_depth_v2_labeled.mat").read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
    with h5py.File(twin / "nyu_depth_v2_labeled.mat", "r") as f:
        assert f.userblock_size == 512
        assert (f["images"].shape, f["images"].dtype) == ((6, 3, 640, 480), np.uint8)
        for key in ("depths", "rawDepths"):
            assert (f[key].shape, f[key].dtype) == ((6, 640, 480), np.float32)
        assert (f["labels"].shape, f["labels"].dtype) == ((6, 640, 480), np.uint16)
        assert f["labels"][()].max() <= 894
    splits = scipy.io.loadmat(twin / "splits.mat")
    assert splits["trainNdxs"].dtype == np.uint16 and splits["trainNdxs"].shape == (3, 1)
    both = np.concatenate([splits["trainNdxs"].ravel(), splits["testNdxs"].ravel()])
    assert sorted(both.tolist()) == [1, 2, 3, 4, 5, 6]
    mapping = scipy.io.loadmat(twin / "classMapping40.mat")
    assert mapping["mapClass"].shape == (1, 894) and mapping["mapClass"].dtype == np.uint8
    assert mapping["mapClass"].min() >= 1 and mapping["mapClass"].max() <= 40
    assert mapping["className"].shape == (1, 40)


@pytest.fixture(scope="module")
def stores(twin, tmp_path_factory):
    return nyud.preprocess_nyud(twin, tmp_path_factory.mktemp("pre"), progress=False)


def test_preprocess_crops_maps_and_names_like_fcn(twin, stores):
    train = scipy.io.loadmat(twin / "splits.mat")["trainNdxs"].ravel()
    map_class = scipy.io.loadmat(twin / "classMapping40.mat")["mapClass"].ravel()
    s = Store(stores["train"])
    assert s.ids == [f"img_{i + 5000}" for i in sorted(train)]
    assert s.fields == ["depth", "image", "label", "raw_depth"] and s.num_classes == 40
    assert s.class_names[:3] == ["wall", "floor", "cabinet"]
    np.testing.assert_allclose(s.attrs["camera_matrix"][0][2], 325.58244941119034 - 40)
    np.testing.assert_allclose(s.attrs["camera_matrix"][1][2], 253.73616633400465 - 45)
    with h5py.File(twin / "nyu_depth_v2_labeled.mat", "r") as f:
        k = int(train.min()) - 1
        img = f["images"][k].transpose(2, 1, 0)[45:470, 40:600]
        lab = f["labels"][k].T[45:470, 40:600]
        raw = f["rawDepths"][k].T[45:470, 40:600]
    assert s.image(0).shape == (425, 560, 3) and np.array_equal(s.image(0), img)
    expected = np.where(lab == 0, 255, map_class[np.maximum(lab, 1) - 1].astype(np.int64) - 1)
    assert np.array_equal(s.label(0), expected)
    assert s.get("raw_depth", 0).dtype == np.float32 and np.array_equal(s.get("raw_depth", 0), raw)
    # The crop removes the white registration border entirely.
    assert not np.all(s.image(0)[0] == 255) and not np.all(s.image(0)[:, 0] == 255)
    assert len(Store(stores["test"])) == 3


def test_twin_floor_lies_on_the_recorded_gravity_plane(twin, stores):
    meta = json.loads((twin / "twin.json").read_text())
    s = Store(stores["train"])
    cam = np.asarray(s.attrs["camera_matrix"])
    for i in range(len(s)):
        frame = meta["frames"][s.attrs["labeled_index"][i] - 1]
        gravity = np.asarray(frame["gravity_down_camera"])
        floor = s.label(i) == s.class_names.index("floor")
        v, u = np.nonzero(floor)
        z = s.get("depth", i)[floor].astype(np.float64)
        points = np.stack([(u + 1 - cam[0, 2]) * z / cam[0, 0], (v + 1 - cam[1, 2]) * z / cam[1, 1], z], axis=1)
        assert floor.sum() > 1000
        np.testing.assert_allclose(points @ gravity, frame["camera_height_m"], atol=2e-3)
        tilt = np.degrees(np.arccos(gravity[1]))
        assert 5 <= tilt <= np.hypot(20, 6) + 1e-6


def test_twin_raw_depth_has_holes_and_agrees_elsewhere(stores):
    s = Store(stores["test"])
    for i in range(len(s)):
        depth, raw = s.get("depth", i), s.get("raw_depth", i)
        holes = raw == 0
        assert 0.001 < holes.mean() < 0.5
        np.testing.assert_allclose(raw[~holes], depth[~holes], rtol=0.03)


def test_expect_counts_mismatch_writes_nothing(twin, tmp_path):
    with pytest.raises(nyud.NyudError, match=r"split sizes \{'train': 3, 'test': 3\}, expected"):
        nyud.preprocess_nyud(twin, tmp_path, expect_counts=nyud.REAL_COUNTS)
    assert list(tmp_path.iterdir()) == []


def _truncate(raw):
    path = raw / "nyu_depth_v2_labeled.mat"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_hdf5(raw):
    shutil.copy(raw / "splits.mat", raw / "nyu_depth_v2_labeled.mat")


def _wrong_hdf5(raw):
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "a") as f:
        del f["labels"]


def _size_mismatch(raw):
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "a") as f:
        labels = f["labels"][()]
        del f["labels"]
        f["labels"] = labels[:, :600, :]


def _label_out_of_range(raw):
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "a") as f:
        f["labels"][0, 300, 200] = 900


def _split_id_without_image(raw):
    m = scipy.io.loadmat(raw / "splits.mat")
    m["testNdxs"][0, 0] = 7
    scipy.io.savemat(raw / "splits.mat", {"trainNdxs": m["trainNdxs"], "testNdxs": m["testNdxs"]})


def _overlapping_splits(raw):
    m = scipy.io.loadmat(raw / "splits.mat")
    m["testNdxs"][0, 0] = m["trainNdxs"][0, 0]
    scipy.io.savemat(raw / "splits.mat", {"trainNdxs": m["trainNdxs"], "testNdxs": m["testNdxs"]})


def _truncated_splits(raw):
    (raw / "splits.mat").write_bytes((raw / "splits.mat").read_bytes()[:100])


def _bad_mapping(raw):
    m = scipy.io.loadmat(raw / "classMapping40.mat")
    m["mapClass"][0, 5] = 41
    scipy.io.savemat(raw / "classMapping40.mat", {"mapClass": m["mapClass"], "className": m["className"]})


@pytest.mark.parametrize("breaker,file,message", [
    (_truncate, "nyu_depth_v2_labeled.mat", "truncated"),
    (_not_hdf5, "nyu_depth_v2_labeled.mat", "not a MATLAB v7.3"),
    (_wrong_hdf5, "nyu_depth_v2_labeled.mat", r"lacks the datasets \['labels'\]"),
    (_size_mismatch, "nyu_depth_v2_labeled.mat", "sizes must agree"),
    (_label_out_of_range, "nyu_depth_v2_labeled.mat", "label value 900 outside 0..894"),
    (_split_id_without_image, "splits.mat", "lists image 7 .* only 6 images"),
    (_overlapping_splits, "splits.mat", "in both train and test"),
    (_truncated_splits, "splits.mat", "truncated"),
    (_bad_mapping, "classMapping40.mat", "expected 1..40"),
])
def test_bad_input_names_the_file_and_writes_nothing(bad_copy, tmp_path, breaker, file, message):
    breaker(bad_copy)
    out = tmp_path / "out"
    with pytest.raises(nyud.NyudError, match=message) as err:
        nyud.preprocess_nyud(bad_copy, out, progress=False)
    assert str(bad_copy / file) in str(err.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_add_hha_adds_the_field_and_pngs(stores, tmp_path):
    out = nyud.add_hha(stores["test"], tmp_path / "png", out_path=tmp_path / "test.h5", threads=1, progress=False)
    s, before = Store(out), Store(stores["test"])
    assert s.fields == ["depth", "hha", "image", "label", "raw_depth"] and s.ids == before.ids
    expected = hha.encode(before.get("depth", 1).astype(np.float64), before.get("raw_depth", 1).astype(np.float64),
                          np.asarray(before.attrs["camera_matrix"]))
    np.testing.assert_array_equal(s.get("hha", 1), expected)
    assert np.array_equal(s.image(1), before.image(1)) and s.attrs["labeled_index"] == before.attrs["labeled_index"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(f"{i}.png" for i in before.ids)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / f"{s.ids[1]}.png")), expected)