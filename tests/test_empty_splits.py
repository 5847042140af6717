"""A split list without ids stops preprocessing with an error naming the list, before any store is written."""

import numpy as np
import pytest
import scipy.io

from segbench.data import nyud, siftflow, voc
from segbench.data.store import write_store
from segbench.data.synthetic import nyud as synth_nyud
from segbench.data.synthetic import siftflow as synth_siftflow
from segbench.data.synthetic import voc as synth_voc


@pytest.fixture(scope="module")
def voc_twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    synth_voc.write_twin(root, image_size=32, n_sbd_train=3, n_sbd_val=1, n_voc_train=1, n_voc_val=3, n_overlap=1,
                         progress=False)
    return root / "VOCdevkit/VOC2011", root / "benchmark_RELEASE/dataset"


@pytest.mark.parametrize("listed", ["sbd train", "voc val", "voc val blank lines"])
def test_empty_voc_list_names_the_file(voc_twin, tmp_path, listed):
    voc2011, sbd = voc_twin
    emptied = sbd / "train.txt" if listed == "sbd train" else voc2011 / "ImageSets/Segmentation/val.txt"
    saved = emptied.read_text()
    emptied.write_text("\n \n" if listed.endswith("blank lines") else "")
    try:
        with pytest.raises(voc.DatasetError, match="lists no ids") as err:
            voc.preprocess_voc(voc2011, sbd, tmp_path / "out", progress=False)
    finally:
        emptied.write_text(saved)
    assert str(emptied) in str(err.value) and "extract the dataset again" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_seg11valid_without_ids_names_both_lists(voc_twin, tmp_path):
    voc2011, sbd = voc_twin
    val = voc2011 / "ImageSets/Segmentation/val.txt"
    saved = val.read_text()
    val.write_text(voc.read_ids(sbd / "train.txt")[0] + "\n")  # only an image that SBD train also has
    try:
        with pytest.raises(voc.DatasetError, match="seg11valid is empty") as err:
            voc.preprocess_voc(voc2011, sbd, tmp_path / "out", progress=False)
    finally:
        val.write_text(saved)
    assert str(val) in str(err.value) and str(sbd / "train.txt") in str(err.value)
    assert not (tmp_path / "out").exists()


def test_empty_nyud_split_names_splits_mat(tmp_path):
    raw = synth_nyud.write_twin(tmp_path / "raw", n_images=2, seed=0, frame_scale=0.25)
    scipy.io.savemat(raw / "splits.mat", {"trainNdxs": np.zeros((0, 1), np.uint16),
                                          "testNdxs": np.array([[1], [2]], np.uint16)})
    with pytest.raises(nyud.NyudError, match="the train split lists no images") as err:
        nyud.preprocess_nyud(raw, tmp_path / "out", progress=False)
    assert str(raw / "splits.mat") in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def siftflow_twin(tmp_path_factory):
    return synth_siftflow.write_twin(tmp_path_factory.mktemp("sf") / "raw", n_train=3, n_test=1, seed=0)


@pytest.mark.parametrize("emptied, split", [("TestSet1.txt", "test"), ("trainval.txt", "trainval")])
def test_empty_siftflow_list_names_the_file(siftflow_twin, tmp_path, emptied, split):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("Images", "SemanticLabels", "GeoLabels"):
        (raw / name).symlink_to(siftflow_twin / name)
    (raw / "TestSet1.txt").write_bytes((siftflow_twin / "TestSet1.txt").read_bytes())
    if emptied == "trainval.txt":  # FCN's own lists take precedence over TestSet1.txt
        (raw / "test.txt").write_text("\n".join(siftflow.read_list(raw / "TestSet1.txt")))
    (raw / emptied).write_text("")
    with pytest.raises(siftflow.SiftFlowError, match=f"the {split} split is empty") as err:
        siftflow.preprocess_siftflow(raw, tmp_path / "out", progress=False)
    assert str(raw / emptied) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_write_store_refuses_no_ids(tmp_path):
    with pytest.raises(ValueError, match="no ids for the voc train split"):
        write_store(tmp_path / "train.h5", dataset="voc", split="train", ids=[], fields={"image": []},
                    class_names=["background"])
    assert list(tmp_path.iterdir()) == []
