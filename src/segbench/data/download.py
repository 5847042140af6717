"""Downloads with resume and md5 verification, and safe extraction of tar and zip archives.

Nothing reads a downloaded file before :func:`verify` has accepted it: :func:`fetch` downloads into
``<dest>.part`` and renames it to ``dest`` only after the size and md5 checks pass, so a file at
``dest`` is always complete. Which md5 matched (SBD has two published values for one URL) is kept
in the sidecar ``<dest>.md5.json``, written through :mod:`segbench.infra.atomic` like every other file.
The ``.part`` file is the exception, by design: it is appended to in place and kept when a download
fails, so that the next run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import stat
import string
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Sequence

from segbench.errors import ChecksumError, MissingInputError, SegbenchError
from segbench.infra.atomic import write_json
from segbench.infra.progress import progress_bar

CHUNK = 1 << 20


class DownloadError(SegbenchError):
    """A download could not be completed."""


class ExtractError(SegbenchError):
    """An archive is truncated, corrupt, or has a member that would leave the destination."""


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _accepted(md5: str | Sequence[str] | None) -> tuple[str, ...]:
    if md5 is None:
        return ()
    if isinstance(md5, str):
        return (md5.lower(),)
    return tuple(m.lower() for m in md5)


def sidecar_path(dest: str | os.PathLike) -> Path:
    """Where :func:`fetch` records the md5 that matched: ``<dest>.md5.json``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".md5.json")


def verify(path: str | os.PathLike, md5: str | Sequence[str] | None, *, size: int | None = None) -> str:
    """Check ``path`` against one md5 or a tuple of accepted md5s; return the md5 that matched.

    With ``md5=None`` nothing is compared and the file's md5 is returned (for downloads without a
    published checksum). Raises :class:`ChecksumError` naming the file, the expected and actual values.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: download it first (snakemake --cores all {path})")
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(f"{path} has {path.stat().st_size} bytes, expected {size}: the file is truncated "
                            "or not the published one; delete it and download it again")
    actual = md5sum(path)
    accepted = _accepted(md5)
    if accepted and actual not in accepted:
        raise ChecksumError(f"{path} has md5 {actual}, expected {' or '.join(accepted)}: the file is corrupt "
                            "or not the published one; delete it and download it again "
                            "(or point data_root at a verified copy)")
    return actual


def read_checksums(path: str | os.PathLike) -> dict[str, str]:
    """A checksum table: the JSON file ``{"md5": {file name: hex md5}}`` whose entries replace the published
    checksums of the downloads and weight files (``data.checksums``: the rehearsal's twin archives, which are
    packed and named as the real ones but are not the published files). Raises ChecksumError for a file that
    is not such a table."""
    path = Path(path)
    try:
        table = json.loads(path.read_text())["md5"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ChecksumError(f"{path} is not a checksum table ({type(err).__name__}: {err}); expected JSON "
                            '{"md5": {"<file name>": "<hex md5>", ...}}, as segbench rehearsal-mirror writes '
                            "it") from None
    bad = [name for name, md5 in table.items()
           if not (isinstance(md5, str) and len(md5) == 32 and all(c in string.hexdigits for c in md5))]
    if bad:
        raise ChecksumError(f"{path}: entries {bad[:5]} are not 32-digit hex md5s")
    return table


def expected_md5(filename: str, published, checksums: dict[str, str] | None):
    """The md5 (or accepted md5s) ``filename`` must have: the ``published`` value, or with a checksum table
    (:func:`read_checksums`) the table's entry, which must exist."""
    if checksums is None:
        return published
    if filename not in checksums:
        raise ChecksumError(f"the checksum table (data.checksums) has no entry for {filename}; it lists "
                            f"{sorted(checksums)}")
    return checksums[filename]


def _write_sidecar(dest: Path, *, url: str, md5: str, accepted: tuple[str, ...]) -> None:
    record = {"file": dest.name, "url": url, "md5": md5, "size": dest.stat().st_size if dest.exists() else None,
              "accepted": list(accepted), "published": bool(accepted)}
    write_json(sidecar_path(dest), record)


def _recorded_md5(dest: Path) -> str | None:
    side = sidecar_path(dest)
    if side.exists():
        return json.loads(side.read_text()).get("md5")
    return None


def fetch(url: str, dest: str | os.PathLike, md5: str | Sequence[str] | None, size: int | None = None,
          *, retries: int = 3, timeout: float = 60.0, progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming ``<dest>.part`` with an HTTP Range request; return ``dest``.

    ``md5`` is the expected hex md5, a tuple of accepted md5s, or None when none is published (then
    the md5 seen on the first download is recorded in ``<dest>.md5.json`` and later calls check it).
    ``size`` (bytes) is checked when given. An existing ``dest`` is only verified. A file that fails
    verification is moved aside to ``<dest>.bad`` and :class:`ChecksumError` is raised.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    accepted = _accepted(md5) or _accepted(_recorded_md5(dest))
    if dest.exists():
        try:
            matched = verify(dest, accepted, size=size)
        except ChecksumError:
            os.replace(dest, dest.with_name(dest.name + ".bad"))
            raise
        if not sidecar_path(dest).exists():
            _write_sidecar(dest, url=url, md5=matched, accepted=_accepted(md5))
        return dest
    part = dest.with_name(dest.name + ".part")  # appended to in place and kept on failure: the next run resumes it
    for attempt in range(retries):
        try:
            _download(url, part, size=size, timeout=timeout, progress=progress)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}; check the URL in "
                                    "segbench.data.sources or download it by hand into "
                                    f"{dest} (or set data_root)") from err
            if attempt == retries - 1:
                raise DownloadError(f"downloading {url} to {dest} failed after {retries} attempts ({err}); "
                                    f"{part} is kept, rerun to resume") from err
    try:
        matched = verify(part, accepted, size=size)
    except ChecksumError as err:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(part, bad)
        raise ChecksumError(f"download of {url}: {err} (moved aside to {bad})") from None
    # The sidecar first: a dest without a sidecar is still accepted, never the reverse.
    _write_sidecar(part, url=url, md5=matched, accepted=_accepted(md5))
    os.replace(sidecar_path(part), sidecar_path(dest))
    os.replace(part, dest)
    return dest


def _download(url: str, part: Path, *, size: int | None, timeout: float, progress: bool | None) -> None:
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()  # longer than the published file: cannot be a prefix of it
        have = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part is complete, verify decides
            return
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        mode = "ab" if have else "wb"
        with open(part, mode) as f, progress_bar(total=total, initial=have, unit="B", unit_scale=True,
                                                 desc=part.name[:-5], disable=progress is False) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                f.write(chunk)
                bar.update(len(chunk))


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar (any compression) or zip archive into the directory ``dest``; return ``dest``.

    Members with absolute paths or ``..`` components, links pointing outside ``dest``, and device or
    other special files are refused with :class:`ExtractError` naming the member. Extraction goes to
    ``<dest>.partial`` first and is moved into ``dest`` only when the whole archive was read, so a
    truncated archive leaves nothing behind.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise MissingInputError(f"{archive} does not exist: download it first")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, partial)
        else:
            _extract_tar(archive, partial)
        dest.mkdir(parents=True, exist_ok=True)
        for entry in sorted(partial.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


def _check_name(archive: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ExtractError(f"{archive}: member {name!r} has an absolute path; refusing to extract this archive")
    if ".." in pure.parts:
        raise ExtractError(f"{archive}: member {name!r} contains '..' and would leave the destination; "
                           "refusing to extract this archive")


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads the whole archive: a truncated one fails here
            for m in members:
                _check_name(archive, m.name)
                if m.isdev() or not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise ExtractError(f"{archive}: member {m.name!r} is a device or special file; "
                                       "refusing to extract this archive")
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as err:
        member = getattr(err, "tarinfo", None)
        raise ExtractError(f"{archive}: member {member.name if member else '?'!r} refused ({err}); "
                           "the archive is unsafe, do not extract it by hand either") from err
    except (tarfile.ReadError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        raise ExtractError(f"{archive} is truncated or not a tar/zip archive ({err}); "
                           "delete it and download it again") from err


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_name(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ExtractError(f"{archive}: member {info.filename!r} is a symbolic link; "
                                       "refusing to extract this archive")
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded
                    raise ExtractError(f"{archive}: member {info.filename!r} is a device or special file; "
                                       "refusing to extract this archive")
            for info in zf.infolist():
                zf.extract(info, dest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise ExtractError(f"{archive} is truncated or corrupt ({err}); delete it and download it again") from err
