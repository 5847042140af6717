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
file without padding. Files are written to a temporary name and renamed, so a store that exists is
complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import h5py
import numpy as np

FORMAT_VERSION = 1


class StoreError(RuntimeError):
    """A store is missing, truncated or not in the expected layout."""


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
    """Write one split atomically. ``fields`` maps a field name to one array per id, in id order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = len(ids)
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["dataset"] = dataset
        f.attrs["split"] = split
        f.attrs["num_classes"] = len(class_names)
        f.attrs["class_names"] = json.dumps(list(class_names))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        f.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype())
        for name, arrays in fields.items():
            arrays = [np.ascontiguousarray(a) for a in arrays]
            if len(arrays) != n:
                raise ValueError(f"field {name!r} has {len(arrays)} samples but there are {n} ids")
            dtypes = {a.dtype for a in arrays}
            if len(dtypes) > 1:
                raise ValueError(f"field {name!r} mixes dtypes {sorted(map(str, dtypes))}")
            ndims = {a.ndim for a in arrays}
            if len(ndims) > 1:
                raise ValueError(f"field {name!r} mixes ranks {sorted(ndims)}")
            sizes = np.array([a.size for a in arrays], dtype=np.int64)
            g = f.create_group(name)
            g.create_dataset("offset", data=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
            g.create_dataset("shape", data=np.array([a.shape for a in arrays], dtype=np.int32).reshape(n, -1))
            flat = np.concatenate([a.ravel() for a in arrays]) if n else np.zeros(0, np.uint8)
            g.create_dataset("data", data=flat, chunks=True if flat.size else None)
    os.replace(tmp, path)
    return path


class Store:
    """Read access to one split; samples are loaded into memory once (the stores here are small).

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
                self._fields = {}
                for name in f:
                    if isinstance(f[name], h5py.Group):
                        g = f[name]
                        self._fields[name] = (g["data"][()], g["offset"][()], g["shape"][()])
        except (OSError, KeyError) as err:
            raise StoreError(f"{self.path} is not a readable segbench store ({err}); "
                             "delete it and rerun the preprocess step") from err
        self.class_names = list(self.attrs["class_names"])
        self.num_classes = int(self.attrs["num_classes"])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def fields(self) -> list[str]:
        return sorted(self._fields)

    def get(self, field: str, i: int) -> np.ndarray:
        """Sample ``i`` of ``field`` as an array of its stored shape."""
        if field not in self._fields:
            raise KeyError(f"{self.path} has no field {field!r}; it has {self.fields}")
        data, offset, shape = self._fields[field]
        shp = tuple(int(s) for s in shape[i])
        start = int(offset[i])
        return data[start:start + int(np.prod(shp))].reshape(shp)

    def image(self, i: int) -> np.ndarray:
        """uint8 H x W x 3 RGB."""
        return self.get("image", i)

    def label(self, i: int) -> np.ndarray:
        """uint8 H x W, class index or 255 (ignore)."""
        return self.get("label", i)


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
