"""The HDF5 store: lazy reads equal to the whole file read at once, streaming atomic writes, worker pickling."""

import pickle
import tracemalloc

import h5py
import numpy as np
import pytest
import torch

from segbench.data.store import FORMAT_VERSION, Store, StoreError, write_store
from segbench.data.synthetic.sbd_store import sbd_like_samples, write_sbd_like_store


def _samples(seed=0, n=7):
    """Fields of ``n`` samples of varying size: noisy images, blocky labels, smooth float depth."""
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(5, 40)), int(rng.integers(5, 40))) for _ in range(n)]
    return {
        "image": [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes],
        "label": [np.kron(rng.integers(0, 4, (h // 4 + 1, w // 4 + 1)), np.ones((4, 4)))[:h, :w].astype(np.uint8)
                  for h, w in shapes],
        "depth": [np.outer(np.linspace(1, 2, h), np.ones(w)).astype(np.float32) for h, w in shapes],
    }


def _write(path, fields, n=None):
    n = len(next(iter(fields.values()))) if n is None else n
    return write_store(path, dataset="toy", split="train", ids=[f"id{i}" for i in range(n)], fields=fields,
                       class_names=["a", "b", "c", "d"], attrs={"mean_bgr": [1.5, 2, 3]})


def _eager(path):
    """Every field read whole, then cut by offset and shape (how the store was read before it was lazy)."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in f:
            if isinstance(f[name], h5py.Group):
                data, offset, shape = (f[name][k][()] for k in ("data", "offset", "shape"))
                out[name] = [data[o:o + int(np.prod(s))].reshape(s) for o, s in zip(offset, shape)]
    return out


def test_lazy_reads_equal_the_eager_read_and_the_written_arrays(tmp_path):
    fields = _samples()
    store = Store(_write(tmp_path / "s.h5", {k: iter(v) for k, v in fields.items()}, n=7))  # iterators are fine
    eager = _eager(store.path)
    assert store.fields == sorted(fields) == sorted(eager)
    assert store.ids == [f"id{i}" for i in range(7)] and len(store) == 7
    assert store.num_classes == 4 and store.class_names == ["a", "b", "c", "d"]
    assert store.attrs["mean_bgr"] == [1.5, 2, 3] and store.attrs["format_version"] == FORMAT_VERSION
    for name in fields:
        for i in [*range(7), -1]:
            got = store.get(name, i)
            assert got.dtype == fields[name][i].dtype and store.shape(name, i) == got.shape
            np.testing.assert_array_equal(got, eager[name][i])
            np.testing.assert_array_equal(got, fields[name][i])
    np.testing.assert_array_equal(store.image(2), fields["image"][2])
    np.testing.assert_array_equal(store.label(5), fields["label"][5])


def test_compressible_fields_are_compressed_and_noise_is_not(tmp_path):
    path = _write(tmp_path / "s.h5", _samples())
    with h5py.File(path, "r") as f:
        assert f["label/data"].compression == "gzip" and not f["label/data"].shuffle  # uint8: nothing to shuffle
        assert f["depth/data"].compression == "gzip" and f["depth/data"].shuffle
        assert f["image/data"].compression is None
        assert all(f[k]["data"].chunks for k in ("image", "label", "depth"))


def test_a_store_of_the_earlier_writer_reads_the_same(tmp_path):
    """Same layout written in one piece without compression, as before streaming (format version 1)."""
    fields = _samples(seed=1)
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(format_version=1, dataset="toy", split="val", num_classes=4, class_names='["a","b","c","d"]')
        f.create_dataset("ids", data=np.array([f"x{i}" for i in range(7)], dtype=object), dtype=h5py.string_dtype())
        for name, arrays in fields.items():
            sizes = np.array([a.size for a in arrays])
            f[f"{name}/offset"] = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            f[f"{name}/shape"] = np.array([a.shape for a in arrays], dtype=np.int32)
            f.create_dataset(f"{name}/data", data=np.concatenate([a.ravel() for a in arrays]), chunks=True)
    store = Store(path)
    assert store.ids == [f"x{i}" for i in range(7)] and store.attrs["split"] == "val"
    for name, arrays in fields.items():
        for i, expected in enumerate(arrays):
            np.testing.assert_array_equal(store.get(name, i), expected)


def test_another_format_version_is_refused_with_what_to_do(tmp_path):
    path = _write(tmp_path / "s.h5", _samples(n=2))
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(StoreError, match=f"format_version 99, expected {FORMAT_VERSION}; delete it and rerun"):
        Store(path)


def _failing(arrays, after):
    yield from arrays[:after]
    raise RuntimeError("reader failed mid-split")


@pytest.mark.parametrize("existing", [False, True])
def test_an_error_mid_write_leaves_no_file_and_keeps_an_earlier_store(tmp_path, existing):
    path = tmp_path / "out" / "s.h5"
    if existing:
        _write(path, _samples(seed=2, n=3))
        before = path.read_bytes()
    fields = _samples()
    with pytest.raises(RuntimeError, match="reader failed mid-split"):
        _write(path, {"image": fields["image"], "label": _failing(fields["label"], after=4)})
    assert sorted(p.name for p in path.parent.iterdir()) == (["s.h5"] if existing else [])
    if existing:
        assert path.read_bytes() == before


@pytest.mark.parametrize("label_count, message", [
    (6, "field 'label' has 6 samples but there are 7 ids"),
    (8, "field 'label' has more than 7 samples but there are 7 ids"),
])
def test_sample_counts_must_match_the_ids(tmp_path, label_count, message):
    fields = _samples(n=8)
    with pytest.raises(ValueError, match=message):
        _write(tmp_path / "s.h5", {"image": fields["image"][:7], "label": fields["label"][:label_count]}, n=7)
    assert list(tmp_path.iterdir()) == []


def test_mixed_dtypes_and_ranks_are_refused(tmp_path):
    labels = _samples(n=3)["label"]
    with pytest.raises(ValueError, match="field 'label' mixes dtypes or ranks: sample 0 is uint8 with 2 dims, "
                                         "sample 2 is int64 with 2 dims"):
        _write(tmp_path / "s.h5", {"label": labels[:2] + [labels[2].astype(np.int64)]})
    with pytest.raises(ValueError, match="sample 1 is uint8 with 3 dims"):
        _write(tmp_path / "s.h5", {"label": [labels[0], labels[1][..., None], labels[2]]})
    assert list(tmp_path.iterdir()) == []


def test_bad_field_and_index_name_what_exists(tmp_path):
    store = Store(_write(tmp_path / "s.h5", _samples(n=3)))
    with pytest.raises(StoreError, match=r"has no field 'hha'; it has \['depth', 'image', 'label'\]"):
        store.get("hha", 0)
    with pytest.raises(IndexError, match="sample 3 out of range .* with 3 samples"):
        store.image(3)


def test_reading_holds_one_sample_not_the_split(tmp_path):
    """numpy reports its buffers to tracemalloc: a lazy store's peak is a few samples, an eager one the split."""
    images = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8) for i in range(60)]
    path = _write(tmp_path / "s.h5", {"image": images})
    total = sum(a.nbytes for a in images)
    tracemalloc.start()
    try:
        store = Store(path)
        for i in np.random.default_rng(0).integers(0, 60, 30):
            store.image(int(i))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < total / 10, (peak, total)


class _Samples(torch.utils.data.Dataset):
    """What a training loader does: one store, read by index in worker processes."""

    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, i):
        return i, self.store.image(i), self.store.label(i)


def test_a_store_is_picklable_and_reads_in_forked_workers(tmp_path):
    fields = _samples()
    del fields["depth"]
    store = Store(_write(tmp_path / "s.h5", fields))
    store.image(0)  # the parent has an open handle, which the forked workers inherit
    clone = pickle.loads(pickle.dumps(store))
    assert clone._file is None and clone.ids == store.ids
    np.testing.assert_array_equal(clone.image(1), fields["image"][1])
    loader = torch.utils.data.DataLoader(_Samples(store), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    seen = {int(i): (image.numpy(), label.numpy()) for i, image, label in loader}
    assert sorted(seen) == list(range(len(store)))
    for i, (image, label) in seen.items():
        np.testing.assert_array_equal(image, fields["image"][i])
        np.testing.assert_array_equal(label, fields["label"][i])
    store.close()
    np.testing.assert_array_equal(store.label(0), fields["label"][0])  # reopens after close


def test_the_sbd_like_generator_has_real_shapes_and_photo_like_compressibility(tmp_path):
    samples = list(sbd_like_samples(6, seed=3))
    assert {image.shape for image, _ in samples} <= {(375, 500, 3), (500, 375, 3)}
    assert all(image.dtype == label.dtype == np.uint8 and image.shape[:2] == label.shape for image, label in samples)
    assert all(label.max() <= 20 and len(np.unique(label)) > 1 for _, label in samples)
    store = Store(write_sbd_like_store(tmp_path / "train.h5", n=6, seed=3))
    assert len(store) == 6 and store.num_classes == 21 and store.attrs["mean_bgr"][0] == pytest.approx(104.00698793)
    for i, (image, label) in enumerate(samples):
        np.testing.assert_array_equal(store.image(i), image)
        np.testing.assert_array_equal(store.label(i), label)
    with h5py.File(store.path, "r") as f:  # decoded JPEGs stay uncompressed, labels are compressed
        assert f["image/data"].compression is None and f["label/data"].compression == "gzip"
