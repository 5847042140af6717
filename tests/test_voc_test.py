"""Table 3 on the twin and on real data: the twin's test split, test archives from the server, the test store,
the submission and Table 3."""

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from segbench import models
from segbench.cli import main
from segbench.data.store import Store
from segbench.data.synthetic.voc import write_test_split
from segbench.data.voc import MEAN_BGR, find_test_devkit, preprocess_voc_test, seg_test_list
from segbench.errors import MissingInputError
from segbench.evaluation.submission import PAPER_TABLE3, extract_test_images, table3
from segbench.infra.provenance import provenance_path, write_config
from segbench.weights import save_model

TWIN_IDS = [f"2012_90000{k}" for k in range(3)]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    raw = tmp_path_factory.mktemp("voc-test2012")
    write_test_split(raw, year="2012", n_images=3, image_size=48, seed=0, progress=False)
    return raw


def test_twin_test_split_has_the_server_archive_layout(twin, tmp_path):
    devkit = twin / "VOCdevkit" / "VOC2012"
    assert find_test_devkit(twin, "2012") == devkit
    assert seg_test_list(devkit).read_text() == "".join(f"{i}\n" for i in TWIN_IDS)
    assert sorted(p.name for p in (devkit / "JPEGImages").iterdir()) == [f"{i}.jpg" for i in TWIN_IDS]
    assert not (devkit / "SegmentationClass").exists()  # no labels, as the server's test archives
    assert json.loads((twin / "manifest.json").read_text())["test_ids"] == 3
    again = tmp_path / "again"
    write_test_split(again, year="2012", n_images=3, image_size=48, seed=0, progress=False)
    for i in TWIN_IDS:  # deterministic
        name = f"VOCdevkit/VOC2012/JPEGImages/{i}.jpg"
        assert (again / name).read_bytes() == (twin / name).read_bytes()
    with pytest.raises(ValueError, match="at least one image"):
        write_test_split(tmp_path / "none", n_images=0)


def test_test_store_holds_images_in_list_order_without_labels(twin, tmp_path):
    store = Store(preprocess_voc_test(twin, tmp_path / "test2012.h5", year="2012", progress=False))
    assert store.ids == TWIN_IDS and store.fields == ["image"] and store.attrs["split"] == "test2012"
    assert store.input_mean("mean_bgr") == pytest.approx(MEAN_BGR) and store.num_classes == 21
    jpeg = np.asarray(Image.open(twin / "VOCdevkit/VOC2012/JPEGImages" / f"{TWIN_IDS[1]}.jpg").convert("RGB"))
    np.testing.assert_array_equal(store.image(1), jpeg)
    with pytest.raises(MissingInputError, match="found 0"):
        preprocess_voc_test(twin, tmp_path / "x.h5", year="2011")


def _test_tar(path, year="2012", ids=("2012_000003", "2012_000010")):
    """A stand-in for the server's VOC<year>test.tar: VOCdevkit/VOC<year> with JPEGs and the test list."""
    folder = path.parent / "src"
    devkit = folder / "VOCdevkit" / f"VOC{year}"
    (devkit / "JPEGImages").mkdir(parents=True)
    for k, i in enumerate(ids):
        Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(devkit / "JPEGImages" / f"{i}.jpg")
    seg_test_list(devkit).parent.mkdir(parents=True)
    seg_test_list(devkit).write_text("\n".join(ids) + "\n")
    with tarfile.open(path, "w") as tar:
        tar.add(folder / "VOCdevkit", arcname="VOCdevkit")
    return path


def test_real_test_images_come_from_the_server_archive(tmp_path):
    root = tmp_path / "data_root"
    (root / "voc").mkdir(parents=True)
    dest = tmp_path / "raw" / "voc-test2012"
    with pytest.raises(MissingInputError, match=r"evaluation server .*registration"):
        extract_test_images("2012", dest, data_root=root)
    _test_tar(root / "voc" / "VOC2012test.tar")
    manifest = json.loads(extract_test_images("2012", dest, data_root=root).read_text())
    assert manifest["test_ids"] == 2 and len(manifest["sha256"]) == 64
    store = Store(preprocess_voc_test(dest, tmp_path / "test2012.h5", year="2012", progress=False))
    assert store.ids == ["2012_000003", "2012_000010"] and store.image(0).shape == (20, 30, 3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    net = models.build("fcn8s_vgg16", 21, width=1 / 16)
    with torch.no_grad():
        net.score_fr.bias.normal_(0, 1.0)
    return save_model(tmp_path_factory.mktemp("w") / "model.pt", net, name="fcn8s_vgg16", num_classes=21,
                      width=1 / 16, meta={"input_norm": "caffe"})


def test_workflow_chain_on_the_twin(twin, weights, tmp_path):
    """synth-voc-test, preprocess-voc-test, submission and table3 as the rules call them."""
    config = write_config(tmp_path / "config.json", {"results": str(tmp_path)})
    raw = tmp_path / "raw" / "voc-test2012"
    assert main(["synth-voc-test", "--out-dir", str(raw), "--n-images", "3", "--image-size", "48"]) == 0
    store = tmp_path / "test2012.h5"
    assert main(["preprocess-voc-test", "--raw-dir", str(raw), "--out", str(store), "--year", "2012",
                 "--provenance", str(config)]) == 0
    assert json.loads(provenance_path(store).read_text())["inputs"][0]["path"] == str(raw / "manifest.json")
    archive = tmp_path / "submission" / "VOC2012.tar.gz"
    assert main(["submission", "--store", str(store), "--weights", str(weights), "--out-dir",
                 str(tmp_path / "submission"), "--year", "2012", "--archive", str(archive), "--device", "cpu",
                 "--provenance", str(config)]) == 0
    folder = tmp_path / "submission" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.png" for i in TWIN_IDS]
    side = json.loads(provenance_path(archive).read_text())
    assert [i["path"] for i in side["inputs"]] == [str(store), str(weights)]
    prefix = tmp_path / "tables" / "table3"
    assert main(["table3", "--submission", f"2012={archive}", "--out-prefix", str(prefix), "--note", "twin",
                 "--provenance", str(config)]) == 0
    rows = prefix.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "method,iu_2011,iu_2012,time,archive_2011,archive_2012"
    assert rows[3].startswith("FCN-8s (paper),62.7000,62.2000,~175 ms")
    assert rows[4].startswith("FCN-8s (ours),,,,,VOC2012.tar.gz: 3 PNGs (sha256 ")
    trace = json.loads(provenance_path(prefix).read_text())
    assert trace["rows"]["FCN-8s VOC2012 test"]["archive"]["provenance"] == str(provenance_path(archive))


def test_table3_keeps_the_paper_values_and_needs_the_archives(tmp_path):
    assert PAPER_TABLE3["FCN-8s"] == {"2011": 62.7, "2012": 62.2, "time": "~175 ms"}
    with pytest.raises(FileNotFoundError, match="run the submission step for VOC2011"):
        table3({"2011": tmp_path / "VOC2011.tar.gz"}, tmp_path / "t3")
