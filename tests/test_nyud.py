"""NYUDv2 twin formats, preprocessing into the store (full size and scaled), twin geometry, what depth and HHA
tell that colour does not, input means, the HHA hook, and every bad input."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from segbench import hha
from segbench.data import MANIFEST, nyud, stats, tensors
from segbench.data.store import Store, StoreError, write_store
from segbench.data.synthetic import nyud as synth_nyud


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return synth_nyud.write_twin(tmp_path_factory.mktemp("nyud") / "raw", n_images=4, seed=3)


@pytest.fixture(scope="module")
def stores(twin, tmp_path_factory):
    return nyud.preprocess_nyud(twin, tmp_path_factory.mktemp("pre"), progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A quarter-scale twin (120 x 160 frames), preprocessed and HHA-encoded: {"raw", "train", "test"}."""
    root = tmp_path_factory.mktemp("small")
    raw = synth_nyud.write_twin(root / "raw", n_images=24, seed=5, frame_scale=0.25)
    pre = nyud.preprocess_nyud(raw, root / "pre", progress=False)
    train = nyud.add_hha(pre["train"], root / "png" / "train", out_path=root / "pre" / "train-hha.h5", progress=False)
    test = nyud.add_hha(pre["test"], root / "png" / "test", out_path=root / "pre" / "test-hha.h5",
                        train_hha_store=train, progress=False)
    return {"raw": raw, "train": train, "test": test}


def test_twin_is_in_the_real_formats(twin):
    head = (twin / "nyu_depth_v2_labeled.mat").read_bytes()[:128]
    assert head.startswith(b"MATLAB 7.3 MAT-file") and head[124:128] == b"\x00\x02IM"
    with h5py.File(twin / "nyu_depth_v2_labeled.mat", "r") as f:
        assert f.userblock_size == 512
        assert (f["images"].shape, f["images"].dtype) == ((4, 3, 640, 480), np.uint8)
        for key in ("depths", "rawDepths"):
            assert (f[key].shape, f[key].dtype) == ((4, 640, 480), np.float32)
        assert (f["labels"].shape, f["labels"].dtype) == ((4, 640, 480), np.uint16)
        assert f["labels"][()].max() <= 894
    splits = scipy.io.loadmat(twin / "splits.mat")
    assert splits["trainNdxs"].dtype == np.uint16 and splits["trainNdxs"].shape == (2, 1)
    both = np.concatenate([splits["trainNdxs"].ravel(), splits["testNdxs"].ravel()])
    assert sorted(both.tolist()) == [1, 2, 3, 4]
    mapping = scipy.io.loadmat(twin / "classMapping40.mat")
    assert mapping["mapClass"].shape == (1, 894) and mapping["mapClass"].dtype == np.uint8
    assert mapping["mapClass"].min() >= 1 and mapping["mapClass"].max() <= 40
    assert mapping["className"].shape == (1, 40)
    assert json.loads((twin / MANIFEST).read_text())["frame_scale"] == 1.0
    assert not list(twin.glob("*.tmp"))


def test_preprocess_crops_maps_and_names_like_fcn(twin, stores):
    train = scipy.io.loadmat(twin / "splits.mat")["trainNdxs"].ravel()
    map_class = scipy.io.loadmat(twin / "classMapping40.mat")["mapClass"].ravel()
    s = Store(stores["train"])
    assert s.ids == [f"img_{i + 5000}" for i in sorted(train)]
    assert s.fields == ["depth", "image", "label", "raw_depth"] and s.num_classes == 40
    assert s.class_names[:3] == ["wall", "floor", "cabinet"]
    np.testing.assert_allclose(s.attrs["camera_matrix"][0][2], 325.58244941119034 - 40)
    np.testing.assert_allclose(s.attrs["camera_matrix"][1][2], 253.73616633400465 - 45)
    assert s.attrs["crop_1based"] == {"rows": [46, 470], "cols": [41, 600]} and s.attrs["frame_scale"] == 1.0
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
    assert len(Store(stores["test"])) == 2


@pytest.mark.parametrize("scale,rows,cols", [(1.0, (45, 470), (40, 600)), (0.5, (23, 236), (20, 300)),
                                             (0.25, (11, 117), (10, 150))])
def test_crop_window_scales_gupta_crop(scale, rows, cols):
    shape = (int(480 * scale), int(640 * scale))
    r, c = nyud.crop_window(shape)
    assert (r.start, r.stop, c.start, c.stop) == (*rows, *cols)
    camera = nyud.cropped_camera(shape=shape)
    k = nyud.NYU_COLOR_CAMERA
    np.testing.assert_allclose(camera[[0, 1], [0, 1]], k[[0, 1], [0, 1]] * scale)
    np.testing.assert_allclose(camera[:2, 2], k[:2, 2] * scale - [cols[0], rows[0]])


def test_scales_must_keep_the_frame_whole(tmp_path):
    with pytest.raises(ValueError, match="multiple of 1/160"):
        synth_nyud.write_twin(tmp_path / "twin", n_images=2, frame_scale=0.33)
    with pytest.raises(ValueError, match="480 s x 640 s"):
        nyud.crop_window((100, 160))


def test_scaled_twin_is_read_back_by_the_parser_and_preprocessing(small):
    meta = json.loads((small["raw"] / MANIFEST).read_text())
    assert meta["frame_shape"] == [120, 160]
    with nyud.open_labeled(small["raw"] / "nyu_depth_v2_labeled.mat") as f:
        assert f["images"].shape == (24, 3, 160, 120)
        frame = nyud.read_frame(f, 0)
    assert frame["image"].shape == (120, 160, 3) and frame["depth"].shape == (120, 160)
    s = Store(small["train"])
    assert s.image(0).shape == (106, 140, 3) and s.get("hha", 0).shape == (106, 140, 3)
    assert s.attrs["frame_scale"] == 0.25 and s.attrs["crop_1based"] == {"rows": [12, 117], "cols": [11, 150]}
    np.testing.assert_allclose(s.attrs["camera_matrix"], nyud.cropped_camera(shape=(120, 160)))
    np.testing.assert_allclose(np.asarray(meta["camera_matrix"])[:2, 2] - [10, 11],
                               np.asarray(s.attrs["camera_matrix"])[:2, 2])
    assert not np.all(s.image(0)[0] == 255) and not np.all(s.image(0)[:, -1] == 255)


@pytest.mark.parametrize("which", ["stores", "small"])
def test_twin_floor_lies_on_the_recorded_gravity_plane(which, twin, stores, small):
    raw, path = (twin, stores["train"]) if which == "stores" else (small["raw"], small["train"])
    meta = json.loads((raw / MANIFEST).read_text())
    s = Store(path)
    cam = np.asarray(s.attrs["camera_matrix"])
    for i in range(len(s)):
        frame = meta["frames"][s.attrs["labeled_index"][i] - 1]
        gravity = np.asarray(frame["gravity_down_camera"])
        floor = s.label(i) == s.class_names.index("floor")
        v, u = np.nonzero(floor)
        z = s.get("depth", i)[floor].astype(np.float64)
        points = np.stack([(u + 1 - cam[0, 2]) * z / cam[0, 0], (v + 1 - cam[1, 2]) * z / cam[1, 1], z], axis=1)
        assert floor.mean() > 0.03
        np.testing.assert_allclose(points @ gravity, frame["camera_height_m"], atol=2e-3)
        tilt = np.degrees(np.arccos(gravity[1]))
        assert 2 <= tilt <= np.hypot(18, 6) + 1e-6


def test_twin_raw_depth_has_holes_and_agrees_elsewhere(stores):
    s = Store(stores["test"])
    for i in range(len(s)):
        depth, raw = s.get("depth", i), s.get("raw_depth", i)
        holes = raw == 0
        assert 0.001 < holes.mean() < 0.5
        np.testing.assert_allclose(raw[~holes], depth[~holes], rtol=0.03)


def _pixels(store, i, name):
    return store.label(i) == store.class_names.index(name)


def test_hha_on_scaled_frames_finds_gravity_floor_walls_and_heights(small):
    meta = json.loads((small["raw"] / MANIFEST).read_text())
    s = Store(small["train"])
    cam = np.asarray(s.attrs["camera_matrix"])
    tables = 0
    for i in range(len(s)):
        frame = meta["frames"][s.attrs["labeled_index"][i] - 1]
        found = hha.gravity(s.get("depth", i), s.get("raw_depth", i), cam)
        assert np.degrees(np.arccos(np.clip(found @ frame["gravity_down_camera"], -1, 1))) < 2.0
        out = s.get("hha", i).astype(int)
        assert abs(np.median(out[..., 2][_pixels(s, i, "floor")]) - 38) <= 2  # horizontal: 0 degrees + 38
        assert abs(np.median(out[..., 2][_pixels(s, i, "wall")]) - 128) <= 2  # vertical: 90 degrees + 38
        assert np.median(out[..., 1][_pixels(s, i, "floor")]) <= 5  # height above the floor, cm
        for obj in frame["objects"]:
            if obj["class"] == "table":
                tables += 1
                top = _pixels(s, i, "table") & (out[..., 2] < 50)
                true_cm = 100 * (frame["camera_height_m"] - obj["boxes"][0][0][1])
                # a gravity error of 1 degree moves a point 4 m away by 7 cm: height is good to ~10 cm
                assert top.sum() > 5 and abs(np.median(out[..., 1][top]) - true_cm) <= 10
    assert tables > 0


@pytest.mark.parametrize("a,b,channel,gap", [("floor", "table", 1, 60), ("floor mat", "bed", 1, 35)])
def test_same_colour_different_height(small, a, b, channel, gap):
    """Up-facing parts of ``a`` and ``b`` in one frame: one colour, heights ``gap`` cm or more apart.

    Medians, because at quarter scale the 7 x 7 normals of a table's edge and legs can look up-facing too.
    """
    s = Store(small["train"])
    pairs = 0
    for i in range(len(s)):
        image, out = s.image(i).astype(float), s.get("hha", i).astype(float)
        up = out[..., 2] < 45  # normal within 7 degrees of gravity
        pa, pb = _pixels(s, i, a) & up, _pixels(s, i, b) & up
        if pa.sum() < 20 or pb.sum() < 20:
            continue
        pairs += 1
        assert np.abs(np.median(image[pa], 0) - np.median(image[pb], 0)).max() <= 4
        assert np.median(out[..., channel][pb]) - np.median(out[..., channel][pa]) >= gap
    assert pairs >= 1


def test_same_colour_different_normal_or_depth(small):
    """Wall and ceiling share a colour but not a normal; a cabinet front and the wall share both, not depth."""
    s = Store(small["train"])
    meta = json.loads((small["raw"] / MANIFEST).read_text())
    checked = {"ceiling": 0, "cabinet": 0}
    for i in range(len(s)):
        image, out, depth = s.image(i).astype(float), s.get("hha", i).astype(float), s.get("depth", i)
        wall, ceiling, cabinet = (_pixels(s, i, n) for n in ("wall", "ceiling", "cabinet"))
        if ceiling.sum() >= 20:
            checked["ceiling"] += 1
            assert np.abs(image[wall].mean(0) - image[ceiling].mean(0)).max() < 3.0
            assert np.median(out[..., 2][ceiling]) - np.median(out[..., 2][wall]) >= 60  # degrees
        fronts = cabinet & (np.abs(out[..., 2] - 128) <= 5)
        if fronts.sum() >= 20:
            checked["cabinet"] += 1
            assert np.abs(image[wall].mean(0) - image[fronts].mean(0)).max() < 3.0
            frame = meta["frames"][s.attrs["labeled_index"][i] - 1]
            cabinets = [o for o in frame["objects"] if o["class"] == "cabinet"]
            assert all(0.35 <= min(hi[0] - lo[0], hi[2] - lo[2]) <= 0.6 for o in cabinets for lo, hi in o["boxes"])
            assert depth[fronts].max() < depth[wall].max()
    assert checked["ceiling"] >= 1 and checked["cabinet"] >= 1


def test_colour_tells_what_depth_cannot(small):
    """A picture is flush with its wall and a floor mat with the floor: same height, different colour."""
    s = Store(small["train"])
    seen = 0
    for i in range(len(s)):
        image, out = s.image(i).astype(float), s.get("hha", i).astype(float)
        floor, mat = _pixels(s, i, "floor"), _pixels(s, i, "floor mat")
        if mat.sum() >= 20:
            seen += 1
            assert abs(np.median(out[..., 1][mat]) - np.median(out[..., 1][floor])) <= 2
            assert np.abs(image[mat].mean(0) - image[floor].mean(0)).max() > 25
    assert seen >= 1


def test_input_means_come_from_the_train_split(small):
    tr, te = Store(small["train"]), Store(small["test"])
    images = [tr.image(i) for i in range(len(tr))]
    np.testing.assert_allclose(tr.attrs["mean_bgr"], np.concatenate([im.reshape(-1, 3) for im in images]).mean(0)[::-1])
    depths = np.concatenate([tr.get("depth", i).ravel() for i in range(len(tr))]).astype(np.float64)
    np.testing.assert_allclose(tr.attrs["mean_logdepth"], np.log(depths * 1000).mean())
    hhas = np.concatenate([tr.get("hha", i).reshape(-1, 3) for i in range(len(tr))]).astype(np.float64)
    np.testing.assert_allclose(tr.attrs["mean_hha"], hhas.mean(0))
    for key in ("mean_bgr", "mean_logdepth", "mean_hha"):
        assert te.attrs[key] == tr.attrs[key]
    assert 7.0 < tr.attrs["mean_logdepth"] < 9.0  # log of a few metres in mm (real NYUDv2: 7.844)


def test_mean_helpers_weigh_every_pixel_alike():
    a, b = np.zeros((1, 1, 3), np.uint8), np.full((1, 3, 3), [10, 20, 30], np.uint8)
    assert stats.mean_bgr([a, b]) == [22.5, 15.0, 7.5]
    assert stats.mean_log_depth([np.full((2, 2), 1.0)]) == pytest.approx(np.log(1000.0))
    assert stats.log_depth(np.array([0.0]))[0] == 0.0  # missing depth counts as 1 mm


def test_hha_of_a_test_split_needs_the_train_mean(small, tmp_path):
    with pytest.raises(nyud.NyudError, match="train split's HHA store"):
        nyud.add_hha(small["test"], tmp_path / "png", out_path=tmp_path / "t.h5", progress=False)
    with pytest.raises(nyud.NyudError, match="not a train split"):
        nyud.add_hha(small["test"], tmp_path / "png", out_path=tmp_path / "t.h5", train_hha_store=small["test"],
                     progress=False)


def test_expect_counts_mismatch_writes_nothing(twin, tmp_path):
    with pytest.raises(nyud.NyudError, match=r"split sizes \{'train': 2, 'test': 2\}, expected"):
        nyud.preprocess_nyud(twin, tmp_path, expect_counts=nyud.REAL_COUNTS)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_scaled_twin(tmp_path):
    subprocess.run([sys.executable, "-m", "segbench.cli", "synth-nyud", "--out-dir", str(tmp_path), "--n-images", "2",
                    "--frame-scale", "0.25"], check=True)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "r") as f:
        assert f["images"].shape == (2, 3, 160, 120)


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
        f["labels"] = labels[:, :-8, :]


def _not_four_by_three(raw):
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "a") as f:
        for key in ("images", "depths", "rawDepths", "labels"):
            data = f[key][()]
            del f[key]
            f[key] = data[..., :-8]


def _label_out_of_range(raw):
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "a") as f:
        f["labels"][0, 80, 60] = 900


def _split_id_without_image(raw):
    m = scipy.io.loadmat(raw / "splits.mat")
    m["testNdxs"][0, 0] = 25
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
    (_not_four_by_three, "nyu_depth_v2_labeled.mat", "480 s x 640 s"),
    (_label_out_of_range, "nyu_depth_v2_labeled.mat", "label value 900 outside 0..894"),
    (_split_id_without_image, "splits.mat", "lists image 25 .* only 24 images"),
    (_overlapping_splits, "splits.mat", "in both train and test"),
    (_truncated_splits, "splits.mat", "truncated"),
    (_bad_mapping, "classMapping40.mat", "expected 1..40"),
])
def test_bad_input_names_the_file_and_writes_nothing(small, tmp_path, breaker, file, message):
    raw = tmp_path / "raw"
    shutil.copytree(small["raw"], raw)
    breaker(raw)
    out = tmp_path / "out"
    with pytest.raises(nyud.NyudError, match=message) as err:
        nyud.preprocess_nyud(raw, out, progress=False)
    assert str(raw / file) in str(err.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_add_hha_adds_the_field_and_pngs(stores, tmp_path):
    train = nyud.add_hha(stores["train"], tmp_path / "png-train", out_path=tmp_path / "train.h5", progress=False)
    out = nyud.add_hha(stores["test"], tmp_path / "png", out_path=tmp_path / "test.h5", train_hha_store=train,
                       threads=1, progress=False)
    s, before = Store(out), Store(stores["test"])
    assert s.fields == ["depth", "hha", "image", "label", "raw_depth"] and s.ids == before.ids
    expected = hha.encode(before.get("depth", 1).astype(np.float64), before.get("raw_depth", 1).astype(np.float64),
                          np.asarray(before.attrs["camera_matrix"]))
    np.testing.assert_array_equal(s.get("hha", 1), expected)
    assert np.array_equal(s.image(1), before.image(1)) and s.attrs["labeled_index"] == before.attrs["labeled_index"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(f"{i}.png" for i in before.ids)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / f"{s.ids[1]}.png")), expected)
    assert s.attrs["mean_hha"] == Store(train).attrs["mean_hha"]


def test_modality_inputs_follow_the_reference(small):
    s = Store(small["train"])
    idx = [0, 2, 3]
    rgb = tensors.modality_input(s, idx, "rgb")
    assert torch.equal(rgb, tensors.to_input([s.image(i) for i in idx], s.attrs["mean_bgr"]))
    hha_in = tensors.modality_input(s, idx, "hha")
    expected = np.stack([s.get("hha", i) for i in idx]).astype(np.float32) - np.float32(s.attrs["mean_hha"])
    assert hha_in.shape == (3, 3, 106, 140) and hha_in.dtype == torch.float32
    np.testing.assert_allclose(hha_in.numpy(), expected.transpose(0, 3, 1, 2), rtol=0, atol=1e-5)
    rgbd = tensors.modality_input(s, idx, "rgbd")
    assert rgbd.shape == (3, 4, 106, 140) and torch.equal(rgbd[:, :3], rgb)
    logd = np.log(np.stack([s.get("depth", i) for i in idx]).astype(np.float64) * 1000) - s.attrs["mean_logdepth"]
    np.testing.assert_allclose(rgbd[:, 3].numpy(), logd, rtol=0, atol=1e-5)
    assert abs(float(rgbd[:, 3].mean())) < 1.0 and float(rgbd[:, 3].abs().max()) < 3.0
    fused = tensors.modality_input(s, idx, "rgb_hha")
    assert fused.shape == (3, 6, 106, 140) and torch.equal(fused, torch.cat([rgb, hha_in], 1))
    assert {k: tensors.modality_input(s, [1], k).shape[1] for k in tensors.MODALITIES} == tensors.MODALITIES
    tv = tensors.modality_input(s, [1], "rgb_hha", norm="torchvision")
    assert torch.equal(tv[:, :3], tensors.to_input([s.image(1)], (0, 0, 0), "torchvision"))
    np.testing.assert_allclose(tv[0, 3:].numpy(), ((s.get("hha", 1) / 255.0 - tensors.IMAGENET_MEAN_RGB)
                                                   / tensors.IMAGENET_STD_RGB).transpose(2, 0, 1), atol=1e-5)


def test_modality_input_errors_say_what_was_expected(small, tmp_path):
    s = Store(small["train"])
    with pytest.raises(ValueError, match=r"modality must be one of \['hha', 'rgb', 'rgb_hha', 'rgbd'\], got 'depth'"):
        tensors.modality_input(s, [0], "depth")
    with pytest.raises(ValueError, match="at least one index"):
        tensors.modality_input(s, [], "rgb")
    with pytest.raises(ValueError, match="input norm"):
        tensors.modality_input(s, [0], "rgb", norm="bgr")
    images = [np.zeros((4, 6, 3), np.uint8), np.zeros((5, 6, 3), np.uint8)]
    path = write_store(tmp_path / "x.h5", dataset="nyud", split="train", ids=["a", "b"], class_names=["x"],
                       fields={"image": images, "depth": [np.ones(im.shape[:2], np.float32) for im in images]},
                       attrs={"mean_bgr": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"sizes \[\(4, 6\), \(5, 6\)\]; a batch needs one size"):
        tensors.modality_input(Store(path), [0, 1], "rgb")
    with pytest.raises(StoreError, match="no 'mean_logdepth' attribute, which the step preprocess_nyud computes"):
        tensors.modality_input(Store(path), [0], "rgbd")
