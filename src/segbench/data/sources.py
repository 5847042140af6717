"""Where the real datasets come from: URL, size and md5 per file, and the download step that uses them.

Provenance of the checksums:

- VOC2011 / VOC2012 tars: md5 from torchvision's VOC table (VOC2012 also in wkentaro/fcn).
- SBD ``benchmark.tgz``: two md5s circulate for the same URL (torchvision ``82b4d8...``, wkentaro/fcn
  ``2b2af8...``); either is accepted and the one that matched is recorded in ``<file>.md5.json``.
- NYUDv2 labeled set: NYU publishes no checksum; md5 and size are third-party (a DVC file, loaders).
- ``splits.mat``: third-party md5, identical to the copy in VainF/nyuv2-python-toolkit.
- ``classMapping40.mat`` (Gupta et al. CVPR13): NYU does not host it. The URL is the copy in
  ankurhanda/nyuv2-meta-data, byte-identical (md5 e377c8..., 10474 bytes) to VainF/nyuv2-python-toolkit.
  The original ships inside Gupta's data tarball (``benchmarkData/metadata/`` of
  http://people.eecs.berkeley.edu/~sgupta/cvpr13/data.tgz); place it under ``data_root`` if the
  GitHub copy is unreachable.
- SIFT Flow zip: no md5 or size is published; the md5 of the first download is recorded and
  checked from then on.
- MSD ``Task05_Prostate.tar`` (the volumetric nets' stand-in for V-Net's PROMISE12, which needs a registration
  to download, ships MetaImage files and has 50 training volumes): the Decathlon's own download is a Google
  Drive folder; the URL is MONAI's S3 mirror and the md5 MONAI's ``DecathlonDataset.md5`` table. Neither the
  file's size (a third-party downloader says 239,839,232 bytes) nor its content was checked here. The tar
  unpacks to ``Task05_Prostate/`` with macOS ``._*`` files beside the volumes (``segbench.data.msd`` ignores
  them). MSD prostate is two-channel (T2, ADC) with labels 0 background, 1 peripheral zone, 2 transition zone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from segbench.data import MANIFEST
from segbench.data.download import expected_md5, extract, fetch, read_checksums, sidecar_path, verify
from segbench.errors import MissingInputError
from segbench.infra.atomic import write_json


@dataclass(frozen=True)
class Source:
    """One downloadable file. ``md5`` is one hex digest or a tuple of accepted ones (None: unpublished)."""

    filename: str
    url: str
    md5: str | tuple[str, ...] | None
    size: int | None = None
    extract_to: str | None = None  # sub-folder of the dataset's raw folder to unpack into


SOURCES: dict[str, tuple[Source, ...]] = {
    "voc": (
        Source("VOCtrainval_25-May-2011.tar",
               "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
               "6c3384ef61512963050cb5d687e5bf1e", extract_to="VOC2011"),
        Source("VOCtrainval_11-May-2012.tar",
               "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
               "6cd6e144f989b92b3379bac3b3de84fd", extract_to="VOC2012"),
        Source("benchmark.tgz",
               "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
               ("82b4d87ceb2ed10f6038a1cba92111cb", "2b2af8a6cff7365684e002c08be823a6"), extract_to="SBD"),
    ),
    "nyud": (
        Source("nyu_depth_v2_labeled.mat",
               "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
               "520609c519fba3ba5ac58c8fefcc3530", size=2_972_037_809),
        Source("splits.mat", "http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat",
               "08e3c3aea27130ac7c01ffd739a4535f", size=2626),
        Source("classMapping40.mat", "https://github.com/ankurhanda/nyuv2-meta-data/raw/master/classMapping40.mat",
               "e377c88729dd63af81205ac9a8634a19", size=10474),
    ),
    "siftflow": (
        Source("SiftFlowDataset.zip", "http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip",
               None, extract_to="SiftFlow"),
    ),
    "msd_prostate": (
        Source("Task05_Prostate.tar", "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task05_Prostate.tar",
               "35138f08b1efaef89d7424d2bcc928db", extract_to="MSD"),
    ),
}


def download_dataset(name: str, dest_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
                     *, checksums: str | os.PathLike | None = None, progress: bool | None = None) -> Path:
    """Download (or, with ``data_root``, only verify) every file of dataset ``name``; return the manifest path.

    Files land in ``dest_dir``; archives are unpacked into ``dest_dir/<extract_to>/``. With
    ``data_root`` (a folder already holding the files under their published names, or under
    ``data_root/<name>/``) nothing is downloaded: each file is verified there and linked into
    ``dest_dir``. ``dest_dir/manifest.json`` (``segbench.data.MANIFEST``) is written last and lists every
    file with the md5 that matched, so its existence means the dataset is complete. ``checksums`` (a table
    that :func:`segbench.data.download.read_checksums` reads) replaces the published md5s and sizes.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {sorted(SOURCES)}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    table = read_checksums(checksums) if checksums is not None else None
    entries = []
    for src in SOURCES[name]:
        path = dest_dir / src.filename
        md5, size = expected_md5(src.filename, src.md5, table), (src.size if table is None else None)
        if data_root is not None:
            path, matched = _link_verified(src, Path(data_root), name, path, md5=md5, size=size)
        else:
            path = fetch(src.url, path, md5, size, progress=progress)
            matched = json.loads(sidecar_path(path).read_text())["md5"]
        entry = {"file": src.filename, "url": src.url, "path": str(path), "md5": matched,
                 "checked_against": "published" if table is None else str(checksums)}
        if src.extract_to:
            entry["extracted"] = str(extract(path, dest_dir / src.extract_to))
        entries.append(entry)
    return write_json(dest_dir / MANIFEST, {"dataset": name, "files": entries})


def _link_verified(src: Source, data_root: Path, name: str, path: Path, *, md5, size) -> tuple[Path, str]:
    candidates = [data_root / src.filename, data_root / name / src.filename]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise MissingInputError(f"{src.filename} is not in data_root (looked at {[str(c) for c in candidates]}); "
                                f"download it from {src.url} or unset data_root")
    matched = verify(found, md5, size=size)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(found.resolve())
    return path, matched
