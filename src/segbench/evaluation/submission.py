"""Table 3: predictions on a VOC test set in the layout of the PASCAL VOC evaluation server.

The server takes, per image of the test list, a palette PNG of class indices (VOC colour map, the image's
size) at ``results/VOC<year>/Segmentation/comp6_test_cls/<id>.png``, uploaded as a tar.gz of ``results/``.
``comp6`` is the segmentation competition that allows training data from outside VOC (FCN trains on SBD and
ImageNet); VOC2011 and VOC2012 test sets are separate submissions, one store each.

The test images themselves come only from the evaluation server (an account is needed), as
``VOC<year>test.tar``; :func:`extract_test_images` takes that archive from a folder the user fills. The
paper's Table 3 numbers are the server's scores of such archives; :func:`table3` lists ours beside them.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from segbench.data import MANIFEST
from segbench.data.download import extract, md5sum
from segbench.data.store import Store
from segbench.data.voc import find_test_devkit, read_ids, seg_test_list, voc_palette
from segbench.errors import MissingInputError, SegbenchError
from segbench.evaluation.predict import load_for_store
from segbench.infra import runtime
from segbench.infra.atomic import replacing, write_json
from segbench.infra.identity import sha256sum
from segbench.infra.progress import progress_bar
from segbench.infra.tables import write_table

YEARS = ("2011", "2012")
COMPETITION = "comp6"
SERVER = "http://host.robots.ox.ac.uk:8080/"  # the PASCAL VOC evaluation server (registration required)
# The paper's Table 3: mean IU (%) on the VOC test sets as scored by the server, and inference time.
PAPER_TABLE3 = {
    "R-CNN": {"2011": 47.9, "2012": None, "time": None},
    "SDS": {"2011": 52.6, "2012": 51.6, "time": "~50 s"},
    "FCN-8s": {"2011": 62.7, "2012": 62.2, "time": "~175 ms"},
}


class SubmissionError(SegbenchError):
    """A submission folder does not hold exactly one correct PNG per test id."""


def results_folder(out_dir: str | os.PathLike, year: str = "2012") -> Path:
    """``out_dir/results/VOC<year>/Segmentation/comp6_test_cls``."""
    if str(year) not in YEARS:
        raise ValueError(f"year must be one of {YEARS}, got {year!r}")
    return Path(out_dir) / "results" / f"VOC{year}" / "Segmentation" / f"{COMPETITION}_test_cls"


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> Path:
    """Atomically write uint8 H x W class indices as a palette ('P') PNG in the VOC colour map."""
    png = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))
    png.putpalette(voc_palette().tolist())
    with replacing(path) as tmp:
        png.save(tmp, format="PNG")
    return Path(path)


def _listing(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_submission(folder: str | os.PathLike, expected: Mapping[str, tuple[int, int]], *,
                     num_classes: int = 21) -> None:
    """Raise :class:`SubmissionError` unless ``folder`` holds exactly one ``<id>.png`` per id of ``expected``
    (id -> image (height, width)), each a palette PNG of that size with values in 0..num_classes-1, and
    nothing else. The message lists what is missing, extra or wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SubmissionError(f"submission folder {folder} does not exist")
    found, extra, wrong = set(), [], []
    for entry in sorted(folder.iterdir()):
        if not entry.is_file() or entry.suffix != ".png" or entry.stem not in expected:
            extra.append(entry.name)
            continue
        found.add(entry.stem)
        with Image.open(entry) as png:
            h, w = expected[entry.stem]
            if png.size != (w, h):
                wrong.append(f"{entry.name} is {png.size[0]}x{png.size[1]}, expected {w}x{h} (width x height)")
            elif png.mode != "P":
                wrong.append(f"{entry.name} has mode {png.mode}, expected a palette ('P') PNG")
            elif int(np.asarray(png).max()) >= num_classes:
                wrong.append(f"{entry.name} has class index {int(np.asarray(png).max())} >= {num_classes}")
    missing = sorted(set(expected) - found)
    if missing or extra or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} of {len(expected)} ids have no PNG: {_listing(missing)}")
        if extra:
            problems.append(f"{len(extra)} entries are not PNGs of a test id: {_listing(extra)}")
        if wrong:
            problems.append(f"{len(wrong)} PNGs are wrong: {_listing(wrong)}")
        raise SubmissionError(f"submission folder {folder} is not complete: " + "; ".join(problems))


def archive_submission(folder: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Atomically write ``archive`` (.tar.gz) of one submission ``folder`` (see :func:`results_folder`), with
    paths starting at ``results/VOC<year>/...`` as the server expects.

    Entries are sorted, with zero times and owners, so the same PNGs give the same bytes.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: write the submission first")
    base = folder.parents[3]  # out_dir, above results/VOC<year>/Segmentation/<comp>_test_cls
    entries = [folder.parents[2], folder.parents[1], folder.parent, folder, *sorted(folder.iterdir())]

    def normalised(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with replacing(archive) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in entries:
                tar.add(path, arcname=path.relative_to(base).as_posix(), recursive=False, filter=normalised)
    return Path(archive)


def write_submission(*, store_path: str | os.PathLike, model_path: str | os.PathLike, out_dir: str | os.PathLike,
                     year: str = "2012", ids_list: str | os.PathLike | None = None,
                     archive: str | os.PathLike | None = None, device: str = "auto", threads: int | None = None,
                     progress: bool = True) -> Path:
    """Predict every image of a test store with saved weights and write the server's folder; returns it.

    ``ids_list`` (e.g. ``VOC2012/ImageSets/Segmentation/test.txt``) must list exactly the store's ids. The
    folder is written under a temporary name and renamed when complete, replacing an older one; it is then
    checked with :func:`check_submission`. With ``archive`` the folder is also written as a .tar.gz.
    """
    folder = results_folder(out_dir, year)
    runtime.setup(threads=threads)
    dev = runtime.resolve_device(device)
    store = Store(store_path)
    if len(set(store.ids)) != len(store.ids):
        raise ValueError(f"{store_path} lists some ids twice; a submission has exactly one PNG per id")
    if ids_list is not None:
        listed = read_ids(Path(ids_list))
        missing, unlisted = sorted(set(listed) - set(store.ids)), sorted(set(store.ids) - set(listed))
        if missing or unlisted:
            raise ValueError(f"{store_path} does not hold the split {ids_list}: {len(missing)} listed ids are not in "
                             f"the store ({_listing(missing)}), {len(unlisted)} store ids are not listed "
                             f"({_listing(unlisted)})")
    predictor = load_for_store(model_path, store, dev)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    expected = {}
    for i in progress_bar(range(len(store)), desc=f"VOC{year} test", disable=not progress):
        expected[store.ids[i]] = store.shape("image", i)[:2]
        write_label_png(partial / f"{store.ids[i]}.png", predictor.labels(store, i, dev))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    check_submission(folder, expected, num_classes=store.num_classes)
    if archive is not None:
        archive_submission(folder, archive)
    return folder


def extract_test_images(year: str, dest_dir: str | os.PathLike, *,
                        data_root: str | os.PathLike | None = None) -> Path:
    """Extract the evaluation server's ``VOC<year>test.tar`` into ``dest_dir`` and write ``dest_dir/manifest.json``
    (the archive's md5 and sha256, the devkit folder and the number of test ids); returns the manifest.

    The archive is looked for in ``dest_dir`` itself, then in ``data_root`` and ``data_root/voc``. Nothing
    is downloaded: the server hands the test images only to registered users, and publishes no checksum.
    """
    results_folder("", year)  # checks the year
    dest_dir = Path(dest_dir)
    name = f"VOC{year}test.tar"
    roots = [dest_dir] + ([Path(data_root), Path(data_root) / "voc"] if data_root is not None else [])
    archive = next((root / name for root in roots if (root / name).is_file()), None)
    if archive is None:
        raise MissingInputError(f"{name} was not found (looked in {', '.join(str(r) for r in roots)}): the VOC{year} "
                                f"test images come only from the evaluation server ({SERVER}, registration needed); "
                                f"download {name} there and put it in {dest_dir} or in data.data_root")
    devkit = find_test_devkit(extract(archive, dest_dir / "extracted"), year)
    return write_json(dest_dir / MANIFEST, {"dataset": f"voc{year}-test", "archive": str(archive),
                                            "md5": md5sum(archive), "sha256": sha256sum(archive),
                                            "devkit": str(devkit), "test_ids": len(read_ids(seg_test_list(devkit)))})


def table3(submissions: Mapping[str, str | os.PathLike], out_prefix: str | os.PathLike, *, net: str = "FCN-8s",
           dataset_note: str = "") -> list[Path]:
    """Table 3: the paper's rows (mean IU on VOC2011 and VOC2012 test) and ours, whose scores only the
    evaluation server gives: for each ``year -> archive`` of ``submissions``, the number of PNGs in the
    archive and its sha256, to upload. Writes ``out_prefix.{csv,tex,md}`` (``tables.write_table``)."""
    rows = [{"method": f"{method} (paper)", **{f"iu_{y}": values[y] for y in YEARS}, "time": values["time"]}
            for method, values in PAPER_TABLE3.items()]
    ours = {"method": f"{net} (ours)", "time": None}
    for year in YEARS:
        ours[f"iu_{year}"] = None
        if str(year) in submissions:
            archive = Path(submissions[str(year)])
            if not archive.is_file():
                raise FileNotFoundError(f"{archive} does not exist: run the submission step for VOC{year} first")
            with tarfile.open(archive) as tar:
                pngs = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".png")]
            ours[f"archive_{year}"] = f"{archive.name}: {len(pngs)} PNGs (sha256 {sha256sum(archive)[:12]})"
    rows.append(ours)
    columns = [("method", "method"), ("iu_2011", "VOC2011 test mean IU"), ("iu_2012", "VOC2012 test mean IU"),
               ("time", "inference time"), ("archive_2011", "VOC2011 submission"),
               ("archive_2012", "VOC2012 submission")]
    caption = ("Table 3: mean IU (%) on the PASCAL VOC test sets; the paper's rows beside our submission archives "
               f"(comp6, palette PNGs), whose mean IU only the evaluation server ({SERVER}) computes: upload them "
               "there" + (f"; {dataset_note}" if dataset_note else ""))
    return write_table(out_prefix, columns, rows, caption=caption)
