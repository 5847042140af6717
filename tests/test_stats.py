"""dataset_stats on small hand-made stores: exact counts, frequencies, absent classes, count checks."""

import json

import numpy as np
import pytest

from segbench.data.stats import StatsError, dataset_stats
from segbench.data.store import write_store

NAMES = ["sky", "road", "car"]


def _store(path, split, labels, geo=None):
    fields = {"image": [np.zeros(lab.shape + (3,), np.uint8) for lab in labels], "label": labels}
    attrs = {}
    if geo is not None:
        fields["label_geo"], attrs["geo_class_names"] = geo, ["sky", "horizontal", "vertical"]
    return write_store(path, dataset="toy", split=split, ids=[f"{split}{i}" for i in range(len(labels))],
                       fields=fields, class_names=NAMES, attrs=attrs)


@pytest.fixture
def paths(tmp_path):
    train = [np.array([[0, 0, 1], [2, 255, 1]], np.uint8), np.array([[1, 1], [1, 0]], np.uint8)]
    test = [np.array([[0, 1, 255, 255]], np.uint8)]
    geo = [np.array([[0, 1, 2, 255]], np.uint8)]
    return [_store(tmp_path / "train.h5", "train", train), _store(tmp_path / "test.h5", "test", test, geo)]


def test_counts_frequencies_and_absent_classes(paths, tmp_path):
    out = tmp_path / "stats" / "toy.json"
    result = dataset_stats(paths, out)
    assert json.loads(out.read_text()) == result
    train, test = result["splits"]["train"], result["splits"]["test"]
    assert (train["images"], test["images"]) == (2, 1)
    assert train["fields"]["label"]["pixels"] == {"sky": 3, "road": 5, "car": 1}
    assert train["fields"]["label"]["void_pixels"] == 1
    assert train["fields"]["label"]["frequency"]["road"] == pytest.approx(5 / 9)
    assert train["fields"]["label"]["absent"] == [] and test["fields"]["label"]["absent"] == ["car"]
    assert test["fields"]["label_geo"]["pixels"] == {"sky": 1, "horizontal": 1, "vertical": 1}
    assert "label_geo" not in train["fields"]


def test_expected_counts_are_checked(paths, tmp_path):
    out = tmp_path / "toy.json"
    dataset_stats(paths, out, expected_counts={"train": 2, "test": 1})
    out.unlink()
    with pytest.raises(StatsError, match=r"images per split \{'train': 2, 'test': 1\}, published"):
        dataset_stats(paths, out, expected_counts={"train": 795, "test": 654})
    with pytest.raises(StatsError, match="'val': None"):
        dataset_stats(paths, out, expected_counts={"train": 2, "val": 1})
    assert not out.exists()


def test_label_outside_range_is_refused(tmp_path):
    path = _store(tmp_path / "train.h5", "train", [np.array([[0, 3]], np.uint8)])
    with pytest.raises(StatsError, match="has value 3, expected 0..2 or 255"):
        dataset_stats([path], tmp_path / "s.json")
