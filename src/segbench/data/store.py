"""The preprocessed HDF5 store: one file per dataset split, read by training and evaluation.

Layout of ``<dataset>/<split>.h5`` (format version 1)::

    /ids                 (N,) utf-8 strings, the dataset's own image ids, in split-list order
    /<field>/data        flat 1-D array holding every sample's values back to back
    /<field>/offset      (N,) int64, start of sample i in ``data``
    /<field>/shape       (N, ndim) int32, shape of sample i (H, W) or (H, W, C)
    attrs: format_version, dataset, split, num_classes, class_names (JSON list),
           plus any dataset-specific attributes (JSON-encoded when not scalar)

Every store has the fields ``image`` (uint8 H x W x 3, RGB) and ``label`` (uint8 H x W, 0..C-1 and
255 = ignore). Dataset families add their own (``depth``, ``raw_depth``, ``hha``, ``label_geo``).
Samples may differ in size: a flat buffer plus offsets keeps real VOC's varying image sizes in one
file without padding.

Storage (invisible to readers: HDF5 applies it on read): ``data`` is chunked in ``CHUNK`` elements, and
gzip-compressed (level 1, with byte shuffling for multi-byte types) when its first sample shrinks to
under half its size. Labels and depth maps compress 5-20x; decoded JPEG photos only to about 0.7 and cost
about 10x more to read compressed (``benchmarks/bench_store_rss.py``), so they stay uncompressed. Stores
written before chunking and compression (same layout) read the same.

Writing streams: each field may be a generator, samples are appended one at a time, so memory follows
one sample, not the split. Reading is lazy: only ids, offsets and shapes are held in memory, each
``get`` reads one sample, and every process opens its own file handle on first use (HDF5 handles must
not cross a fork), so a ``Store`` can go to ``torch.utils.data`` workers. Files are written through
:mod:`segbench.infra.atomic`: a store that exists is complete, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

from segbench.errors import StoreError
from segbench.infra.atomic import replacing

FORMAT_VERSION = 1
CHUNK = 1 << 16  # elements per HDF5 chunk: a 500x375 RGB image spans 9 chunks (measured best for reads)
COMPRESS_BELOW = 0.5  # compress a field when gzip shrinks its first sample below this fraction
# Input means in the attributes: (number of values, the step that writes them).
INPUT_MEANS = {"mean_bgr": (3, "preprocess_{dataset}"), "mean_logdepth": (1, "preprocess_nyud"),
               "mean_hha": (3, "hha_nyud")}


def write_store(
    path: str | os.PathLike,
    *,
    dataset: str,
    split: str,
    ids: Sequence[str],
    fields: Mapping[str, Iterable[np.ndarray]],
    class_names: Sequence[str],
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """Write one split atomically and return ``path``.

    ``fields`` maps a field name to one array per id, in id order (any iterable, consumed once, all fields
    in step: sample i of every field is written before sample i + 1 is requested). Within a field every
    sample has the same dtype and rank; shapes may differ. Raises ValueError, leaving no file, when
    ``ids`` is empty, or a field has more or fewer samples than ``ids`` or mixes dtypes or ranks.
    """
    n = len(ids)
    if n == 0:
        raise ValueError(f"no ids for the {dataset} {split} split: a store holds at least one sample; {path} was "
                         "not written (is the split list empty?)")
    with replacing(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["dataset"] = dataset
        f.attrs["split"] = split
        f.attrs["num_classes"] = len(class_names)
        f.attrs["class_names"] = json.dumps(list(class_names))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        f.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype())
        sources = {name: iter(arrays) for name, arrays in fields.items()}
        writers = {name: _FieldWriter(f.create_group(name), name, n) for name in fields}
        for i in range(n):
            for name, source in sources.items():
                sample = next(source, None)
                if sample is None:
                    raise ValueError(f"field {name!r} has {i} samples but there are {n} ids")
                writers[name].append(np.asarray(sample))
        for name, source in sources.items():
            if next(source, None) is not None:
                raise ValueError(f"field {name!r} has more than {n} samples but there are {n} ids")
            writers[name].finish()
    return Path(path)


class _FieldWriter:
    """Appends the samples of one field to ``<group>/data`` and records their offsets and shapes."""

    def __init__(self, group: h5py.Group, name: str, n: int):
        self.group, self.name, self.n = group, name, n
        self.data = None
        self.offsets = np.zeros(n, np.int64)
        self.shapes: list[tuple[int, ...]] = []
        self.size = 0

    def append(self, sample: np.ndarray) -> None:
        if self.data is None:
            self.data = self._create(sample)
        elif sample.dtype != self.data.dtype or sample.ndim != len(self.shapes[0]):
            raise ValueError(f"field {self.name!r} mixes dtypes or ranks: sample 0 is {self.data.dtype} with "
                             f"{len(self.shapes[0])} dims, sample {len(self.shapes)} is {sample.dtype} with "
                             f"{sample.ndim} dims")
        self.offsets[len(self.shapes)] = self.size
        self.shapes.append(sample.shape)
        end = self.size + sample.size
        self.data.resize((end,))
        self.data[self.size:end] = sample.ravel()
        self.size = end

    def finish(self) -> None:
        if self.data is None:  # no samples
            self.data = self.group.create_dataset("data", shape=(0,), dtype=np.uint8)
        self.group.create_dataset("offset", data=self.offsets)
        ndim = len(self.shapes[0]) if self.shapes else 0
        self.group.create_dataset("shape", data=np.array(self.shapes, dtype=np.int32).reshape(self.n, ndim))

    def _create(self, first: np.ndarray) -> h5py.Dataset:
        raw = np.ascontiguousarray(first).tobytes()
        compress = len(raw) > 0 and len(zlib.compress(raw, 1)) < COMPRESS_BELOW * len(raw)
        options = {"compression": "gzip", "compression_opts": 1, "shuffle": first.itemsize > 1} if compress else {}
        return self.group.create_dataset("data", shape=(0,), maxshape=(None,), dtype=first.dtype, chunks=(CHUNK,),
                                         **options)


class Store:
    """Lazy read access to one split: ids, attributes and per-sample offsets and shapes in memory, samples
    read from the file one at a time. Picklable: each process opens its own handle on first read.

    >>> s = Store("results/preprocessed/voc/val.h5"); img, lab = s.image(0), s.label(0)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path} does not exist: run the preprocess step first "
                             f"(snakemake --cores all {self.path})")
        try:
            with h5py.File(self.path, "r") as f:
                version = int(f.attrs.get("format_version", -1))
                if version != FORMAT_VERSION:
                    raise StoreError(f"{self.path}: format_version {version}, expected {FORMAT_VERSION}; "
                                     "delete it and rerun the preprocess step")
                self.attrs = {k: _decode(v) for k, v in f.attrs.items()}
                self.ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]]
                self._index = {name: (f[name]["offset"][()], f[name]["shape"][()].astype(np.int64))
                               for name in f if isinstance(f[name], h5py.Group)}
        except (OSError, KeyError) as err:
            raise StoreError(f"{self.path} is not a readable segbench store ({err}); "
                             "delete it and rerun the preprocess step") from err
        self.class_names = list(self.attrs["class_names"])
        self.num_classes = int(self.attrs["num_classes"])
        self._file, self._pid = None, None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fields(self) -> list[str]:
        return sorted(self._index)

    def shape(self, field: str, i: int) -> tuple[int, ...]:
        """The stored shape of sample ``i`` of ``field``, without reading it: (H, W) or (H, W, C)."""
        return tuple(int(s) for s in self._lookup(field, i)[1])

    def by_size(self, indices: Iterable[int]) -> dict[tuple[int, int], list[int]]:
        """``indices`` grouped by image size (H, W), sizes in first-seen order, each group in the given order:
        what one forward pass can take (evaluation's batches, training's groups)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i in indices:
            groups.setdefault(self.shape("image", int(i))[:2], []).append(int(i))
        return groups

    def get(self, field: str, i: int) -> np.ndarray:
        """Sample ``i`` of ``field`` as an array of its stored shape (one read from the file)."""
        start, shape = self._lookup(field, i)
        stop = int(start) + int(np.prod(shape))
        try:
            flat = self._open()[field]["data"][int(start):stop]
        except OSError as err:
            raise StoreError(f"{self.path}: cannot read sample {i} of {field!r} ({err}); the file is damaged: "
                             "delete it and rerun the preprocess step") from err
        return flat.reshape(tuple(int(s) for s in shape))

    def input_mean(self, key: str) -> list[float]:
        """The input mean ``key`` (``mean_bgr``, ``mean_hha`` or ``mean_logdepth``) that preprocessing computed on
        the training split and stored in every split; raises StoreError, naming the step to rerun, if absent."""
        if key not in INPUT_MEANS:
            raise ValueError(f"unknown input mean {key!r}; expected one of {sorted(INPUT_MEANS)}")
        length, step = INPUT_MEANS[key]
        step = "the step " + step.format(dataset=self.attrs.get("dataset"))
        if key not in self.attrs:
            raise StoreError(f"{self.path} has no {key!r} attribute, which {step} computes on the training split "
                             f"and writes into every split's store: delete {self.path} and rerun {step}")
        value = self.attrs[key]
        value = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(value) != length:
            raise StoreError(f"{self.path}: {key} has {len(value)} values, expected {length}; delete it and "
                             f"rerun {step}")
        return [float(v) for v in value]

    def image(self, i: int) -> np.ndarray:
        """uint8 H x W x 3 RGB."""
        return self.get("image", i)

    def label(self, i: int) -> np.ndarray:
        """uint8 H x W, class index or 255 (ignore)."""
        return self.get("label", i)

    def close(self) -> None:
        """Close this process's file handle (the next read reopens it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}  # a handle is never pickled

    def _lookup(self, field: str, i: int) -> tuple[int, np.ndarray]:
        if field not in self._index:
            raise StoreError(f"{self.path} has no field {field!r}; it has {self.fields}: pass a store that has it "
                             "(depth and HHA are NYUD's, written by preprocess_nyud and hha_nyud)")
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {self.path} with {len(self)} samples")
        offset, shape = self._index[field]
        return offset[i], shape[i]

    def _open(self) -> h5py.File:
        # A handle inherited through fork shares HDF5 state with the parent: open a fresh one per process.
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
