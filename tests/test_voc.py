import hashlib
import json
import tracemalloc

import numpy as np
import pytest
import scipy.io
from conftest import SHARED
from PIL import Image

from segbench.data.store import Store, StoreError, write_store
from segbench.data.synthetic.objects import (
    NUM_OBJECT_CLASSES,
    class_spec,
    render_scene,
    void_borders,
)
from segbench.data.synthetic.voc import write_twin
from segbench.data.voc import (
    SEG11VALID_MD5,
    DatasetError,
    preprocess_voc,
    read_ids,
    seg11valid_ids,
    split_list_md5,
)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_twin(root, image_size=48, n_sbd_train=12, n_sbd_val=3, n_voc_train=4, n_voc_val=8, n_overlap=3, seed=5,
               progress=False)
    return root, root / "VOCdevkit/VOC2011", root / "benchmark_RELEASE/dataset"


def test_twin_is_in_the_real_formats(twin):
    root, voc, sbd = twin
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["seg11valid"] == 5
    i = read_ids(voc / "ImageSets/Segmentation/val.txt")[0]
    png = Image.open(voc / "SegmentationClass" / f"{i}.png")
    assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    assert Image.open(voc / "JPEGImages" / f"{i}.jpg").format == "JPEG"
    j = read_ids(sbd / "train.txt")[0]
    gt = scipy.io.loadmat(sbd / "cls" / f"{j}.mat", squeeze_me=True, struct_as_record=False)["GTcls"]
    assert gt.Segmentation.dtype == np.uint8 and 255 not in gt.Segmentation


def test_twin_mat_files_do_not_record_when_they_were_written(tmp_path, monkeypatch):
    """scipy.io.savemat writes the time into the header: two writes a second apart differed (a flaky twin)."""
    import time

    import scipy.io

    from segbench.data.synthetic.matfile import HEADER, savemat
    data = {"GTcls": {"Segmentation": np.arange(6, dtype=np.uint8).reshape(2, 3)}}
    for name, clock in (("a.mat", "Sun Dec  6 23:59:59 2026"), ("b.mat", "Mon Dec  7 00:00:00 2026")):
        monkeypatch.setattr(time, "asctime", lambda *args, clock=clock: clock)
        savemat(tmp_path / name, data, compression=True)
    a, b = (tmp_path / "a.mat").read_bytes(), (tmp_path / "b.mat").read_bytes()
    assert a == b and a.startswith(HEADER) and b"2026" not in a[:116]
    seg = scipy.io.loadmat(tmp_path / "a.mat", struct_as_record=False, squeeze_me=True)["GTcls"].Segmentation
    assert seg.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_twin_is_deterministic(tmp_path):
    for d in ("a", "b"):
        write_twin(tmp_path / d, image_size=32, n_sbd_train=2, n_sbd_val=1, n_voc_train=1, n_voc_val=2,
                   n_overlap=1, seed=3, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_seg11valid_is_voc_val_minus_sbd_train(twin):
    _, voc, sbd = twin
    val = read_ids(voc / "ImageSets/Segmentation/val.txt")
    train = set(read_ids(sbd / "train.txt"))
    derived = seg11valid_ids(voc, sbd)
    assert derived == [i for i in val if i not in train]
    assert len(derived) == 5 and not set(derived) & train


def test_split_md5_matches_the_published_seg11valid_list():
    path = SHARED / "reference/splits/pascal/seg11valid.txt"
    if not path.exists():
        pytest.skip("../shared is not beside the repository")
    ids = read_ids(path)
    assert len(ids) == 736
    assert split_list_md5(ids) == SEG11VALID_MD5 == hashlib.md5(path.read_bytes()).hexdigest()


def test_preprocess_writes_train_and_val_stores(twin, tmp_path):
    _, voc, sbd = twin
    out = preprocess_voc(voc, sbd, tmp_path, progress=False)
    train, val = Store(out["train"]), Store(out["val"])
    assert len(train) == 12 and len(val) == 5
    assert train.ids == read_ids(sbd / "train.txt")
    assert train.image(0).shape == (48, 48, 3) and train.label(0).shape == (48, 48)
    assert 255 in np.concatenate([val.label(i).ravel() for i in range(len(val))])  # VOC void borders
    assert train.num_classes == 21 and train.class_names[15] == "person"
    np.testing.assert_array_equal(val.image(0), np.asarray(Image.open(voc / "JPEGImages" / f"{val.ids[0]}.jpg")))


def test_voc2012_val_is_flagged_as_overlapping_sbd_train(twin, tmp_path):
    _, voc, sbd = twin  # the twin's VOC2011 tree stands in for VOC2012: same layout
    out = preprocess_voc(voc, sbd, tmp_path, voc2012=voc, progress=False)
    s = Store(out["val2012"])
    assert len(s) == 8 and s.attrs["overlaps_sbd_train"] == 3 and "not report" in s.attrs["warning"]


def test_preprocess_checks_seg11valid_md5_on_request(twin, tmp_path):
    _, voc, sbd = twin
    with pytest.raises(DatasetError, match="expected 7984b6ce"):
        preprocess_voc(voc, sbd, tmp_path, check_md5=True, progress=False)
    assert not (tmp_path / "train.h5").exists()


def _copy_twin(twin, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(twin[0], root)
    return root / "VOCdevkit/VOC2011", root / "benchmark_RELEASE/dataset"


def test_missing_file_is_named(twin, tmp_path):
    voc, sbd = _copy_twin(twin, tmp_path)
    victim = read_ids(sbd / "train.txt")[2]
    (sbd / "cls" / f"{victim}.mat").unlink()
    with pytest.raises(DatasetError, match=f"{victim}.mat.*does not exist"):
        preprocess_voc(voc, sbd, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "train.h5").exists()


def test_label_outside_class_set_is_refused(twin, tmp_path):
    voc, sbd = _copy_twin(twin, tmp_path)
    victim = seg11valid_ids(voc, sbd)[0]
    path = voc / "SegmentationClass" / f"{victim}.png"
    img = Image.open(path)
    arr = np.asarray(img).copy()
    arr[0, 0] = 42
    bad = Image.fromarray(arr, mode="P")
    bad.putpalette(img.getpalette())
    bad.save(path)
    with pytest.raises(DatasetError, match=r"label values \[42\] are outside 0..20 and 255"):
        preprocess_voc(voc, sbd, tmp_path / "out", progress=False)


def test_image_and_label_of_different_sizes_are_refused(twin, tmp_path):
    voc, sbd = _copy_twin(twin, tmp_path)
    victim = read_ids(sbd / "train.txt")[0]
    Image.open(sbd / "img" / f"{victim}.jpg").resize((40, 48)).save(sbd / "img" / f"{victim}.jpg")
    with pytest.raises(DatasetError, match="image is 48x40 but label is 48x48"):
        preprocess_voc(voc, sbd, tmp_path / "out", progress=False)


def test_classes_are_not_identified_by_colour_alone():
    colours = {}
    for c in range(1, NUM_OBJECT_CLASSES + 1):
        for colour in class_spec(c)["colours"]:
            colours.setdefault(tuple(colour), set()).add(c)
    assert all(len(classes) >= 2 for classes in colours.values())
    signatures = {(class_spec(c)["shape"], class_spec(c)["variant"]) for c in range(1, NUM_OBJECT_CLASSES + 1)}
    assert len(signatures) == NUM_OBJECT_CLASSES  # the shape family alone tells classes apart


def test_scenes_have_thin_parts_and_occlusion_borders():
    rng = np.random.default_rng(0)
    labels = [render_scene(rng, 96)[1] for _ in range(20)]
    assert len(np.unique(np.concatenate([l.ravel() for l in labels]))) > 10
    bordered = void_borders(labels[0])
    changed = bordered != labels[0]
    assert changed.any() and (bordered[changed] == 255).all()


def test_store_round_trip_and_errors(tmp_path):
    images = [np.full((3, 4, 3), 7, np.uint8), np.zeros((5, 2, 3), np.uint8)]
    labels = [np.ones((3, 4), np.uint8), np.zeros((5, 2), np.uint8)]
    path = write_store(tmp_path / "s.h5", dataset="d", split="train", ids=["a", "b"],
                       fields={"image": images, "label": labels}, class_names=["x", "y"], attrs={"mean_bgr": [1, 2, 3]})
    s = Store(path)
    assert s.ids == ["a", "b"] and s.attrs["mean_bgr"] == [1, 2, 3] and s.num_classes == 2
    np.testing.assert_array_equal(s.image(1), images[1])
    np.testing.assert_array_equal(s.label(0), labels[0])
    with pytest.raises(StoreError, match="has no field 'depth'"):
        s.get("depth", 0)
    (tmp_path / "bad.h5").write_bytes(path.read_bytes()[:200])
    with pytest.raises(StoreError, match="not a readable segbench store"):
        Store(tmp_path / "bad.h5")
    with pytest.raises(StoreError, match="run the preprocess step"):
        Store(tmp_path / "missing.h5")


def _peak_bytes(root, out_dir):
    """Peak of the Python and numpy memory that preprocess_voc allocates (decoded images and labels included)."""
    tracemalloc.start()
    try:
        preprocess_voc(root / "VOCdevkit/VOC2011", root / "benchmark_RELEASE/dataset", out_dir, progress=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_preprocess_memory_does_not_grow_with_the_image_count(tmp_path):
    size, n = 128, 6
    pair = size * size * 4  # one decoded RGB image and its label
    peaks = {}
    for count in (n, n, 4 * n):  # the first run pays for imports and caches
        root = tmp_path / f"twin{count}"
        if not root.exists():
            write_twin(root, image_size=size, n_sbd_train=count, n_sbd_val=1, n_voc_train=1, n_voc_val=2, n_overlap=1,
                       seed=1, progress=False)
        peaks[count] = _peak_bytes(root, tmp_path / f"out{count}-{len(peaks)}")
    assert len(Store(tmp_path / f"out{4 * n}-1" / "train.h5")) == 4 * n
    # holding the split would add 3n pairs (1.2 MB here); streaming holds one pair whatever the count
    assert peaks[4 * n] - peaks[n] < 2 * pair, peaks
