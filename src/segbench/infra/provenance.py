"""Provenance: where a number came from, written beside the file that holds it.

Every output ``X`` can have a sidecar ``X.provenance.json`` that records the code (git commit, whether the
checkout had local changes, and the code identity of ``segbench.infra.identity``), the resolved configuration and
its sha256, the sha256 of every input file (with the path of that input's own sidecar, so a chain of
sidecars leads from a table back to the dataset stores and starting weights), the software and hardware,
threads, batch size, seeds, precision and the wall time of the job. A table's sidecar
(:func:`write_table_provenance`) maps each of its rows to the metric files it was built from and their sidecars.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from segbench.infra.atomic import write_json
from segbench.infra.cpuinfo import cpu_info
from segbench.infra.identity import code_identity, sha256sum
from segbench.infra.runtime import resolve_device

FORMAT_VERSION = 1
SUFFIX = ".provenance.json"
UNKNOWN = "unknown"


def provenance_path(output: str | os.PathLike) -> Path:
    """Where the provenance of ``output`` lives: ``<output>.provenance.json`` (any output, any suffix)."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def config_sha256(config: Mapping) -> str:
    """sha256 of a configuration's canonical JSON (sorted keys, no whitespace): equal configs, equal hashes."""
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the configuration must be plain JSON data (dicts, lists, strings, finite numbers, "
                         f"booleans, null): {err}") from err
    return hashlib.sha256(text.encode()).hexdigest()


def git_state(directory: str | os.PathLike | None = None) -> dict:
    """``{"commit", "dirty"}`` of the git checkout that holds the ``segbench`` package (or ``directory``).

    ``dirty`` is True when tracked files differ from the commit (untracked files do not count). Both are
    "unknown" when git is missing, the code is not inside a git checkout, or the directory is not a tracked
    part of it (an installed copy inside some other repository); this never raises.
    """
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30,
                              check=True)
        return done.stdout.strip()

    try:
        git("ls-files", "--error-unmatch", ".")  # the code is tracked by this repository, not just inside it
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    return {"commit": commit, "dirty": dirty}


def hardware(device: str | torch.device = "cpu") -> dict:
    """The device a job ran on: ``{"type", "name", "count", ...}``; ``device`` may be a config's device string
    ("auto", "cpu", "cuda", "cuda:N"), resolved as the jobs resolve it.

    CUDA: the GPU's name, the number of visible GPUs and its compute capability. CPU: the model name from
    /proc/cpuinfo, the logical CPUs this process may run on, and the ``CPU_FLAGS`` present.
    """
    if isinstance(device, str):
        device = resolve_device(device)  # "auto" becomes the device the job really ran on
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "count": torch.cuda.device_count(),
                "capability": f"{major}.{minor}"}
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"type": device.type, **cpu_info(), "count": count}


def torchvision_version() -> str:
    """torchvision's ``__version__`` (e.g. ``0.29.1+cu130``), read from its ``version.py`` when it is not imported
    yet: importing it costs a second a job, and the package metadata lacks the local build tag."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"].__version__
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return UNKNOWN
    try:
        text = Path(spec.submodule_search_locations[0], "version.py").read_text()
    except OSError:
        text = ""
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else importlib.metadata.version("torchvision")


def software() -> dict:
    """Python, torch, torchvision, numpy, and the CUDA / cuDNN versions torch was built with (None on CPU builds)."""
    import numpy

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision_version(),
            "numpy": numpy.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "cuda_available": torch.cuda.is_available()}


def file_record(path: str | os.PathLike) -> dict:
    """``{"path", "bytes", "sha256", "provenance"}`` of one input file; ``provenance`` is the path of its own
    sidecar when it has one, else None."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"provenance input {path} is not a file: pass the files a job read "
                                "(stores, weights, metric files), not folders")
    side = provenance_path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256sum(path),
            "provenance": str(side) if side.exists() else None}


def collect(*, config: Mapping | None = None, inputs: Sequence[str | os.PathLike | None] = (),
            device: str | torch.device = "cpu", threads: int | None = None, batch_size: int | None = None,
            seeds: int | Sequence[int] | None = None, precision: str = "fp32", wall_s: float | None = None,
            extra: Mapping | None = None) -> dict:
    """A JSON-able provenance record of one job.

    ``config`` is the resolved configuration the job ran under (hashed with :func:`config_sha256` and kept
    whole); ``inputs`` the files it read (each hashed, see :func:`file_record`; None entries, optional inputs
    the job did not have, are skipped); ``threads`` defaults to
    torch's intra-op thread count; ``seeds`` one seed or several; ``precision`` a free-form mode such as
    "fp32" or "bf16 autocast"; ``wall_s`` the job's wall time in seconds; ``extra`` anything the job wants
    to add (kept under "extra").
    """
    seed_list = None if seeds is None else [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
    config = dict(config or {})
    return {
        "format_version": FORMAT_VERSION,
        "written_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "code": code_identity(),
        "config_sha256": config_sha256(config),
        "config": config,
        "inputs": [file_record(p) for p in inputs if p is not None],
        "software": software(),
        "device": hardware(device),
        "threads": int(threads) if threads else torch.get_num_threads(),
        "batch_size": batch_size,
        "seeds": seed_list,
        "precision": precision,
        "wall_s": wall_s,
        "extra": dict(extra or {}),
    }


def write_provenance(output: str | os.PathLike, record: Mapping) -> Path:
    """Atomically write ``record`` as ``<output>.provenance.json``; returns that path."""
    return write_json(provenance_path(output), dict(record))


# Fields of :func:`collect` that only the job itself may know (a resolved "auto" precision, the batch a recipe
# chose): set in the dict that :func:`tracked` yields, they replace the values given on entry.
LATE_FIELDS = ("inputs", "device", "threads", "batch_size", "seeds", "precision")


@contextmanager
def tracked(output: str | os.PathLike, *, also: Sequence[str | os.PathLike] = (), **collect_kwargs) -> Iterator[dict]:
    """Time the body and, if it succeeds, write the provenance of ``output`` (and the same record beside every
    path of ``also``); ``collect_kwargs`` as :func:`collect`, without ``wall_s``.

    Yields a dict the body may fill: entries named in ``LATE_FIELDS`` replace those keyword arguments (values
    known only once the job ran); any other entry is kept under "extra".

    >>> with tracked("results/evaluate/fcn8s/val.json", config=cfg, inputs=[store, weights]) as extra:
    ...     result = evaluate(...)
    ...     extra["seeds"] = result["train"]["seed"]
    """
    extra: dict = dict(collect_kwargs.pop("extra", None) or {})
    start = time.perf_counter()
    yield extra
    late = {key: extra.pop(key) for key in LATE_FIELDS if key in extra}
    record = collect(**{**collect_kwargs, **late}, wall_s=time.perf_counter() - start, extra=extra)
    for path in (output, *also):
        write_provenance(path, record)


def tracked_if(config: Mapping | None, output: str | os.PathLike, **kwargs):
    """:func:`tracked` with ``config`` when a configuration is given (a workflow job), else a context that
    yields a dict and records nothing (a library call or a subcommand run by hand)."""
    return tracked(output, config=config, **kwargs) if config is not None else nullcontext({})


def write_config(path: str | os.PathLike, config: Mapping) -> Path:
    """Atomically write the resolved configuration of a workflow run as JSON (what ``--provenance`` reads);
    raises ValueError, like :func:`config_sha256`, for anything that is not plain JSON data."""
    config_sha256(config)
    return write_json(path, dict(config))


def read_config(path: str | os.PathLike) -> dict:
    """The configuration written by :func:`write_config`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resolved configuration {path} does not exist: the workflow writes it when it "
                                "starts (onstart); pass the file of that run, or leave out --provenance")
    return json.loads(path.read_text())


def _summary(record: Mapping) -> dict:
    keys = ("config_sha256", "seeds", "precision", "batch_size", "threads", "wall_s")
    summary = {k: record.get(k) for k in keys}
    summary.update(git_commit=record.get("git", {}).get("commit"), git_dirty=record.get("git", {}).get("dirty"),
                   code=record.get("code"), device=record.get("device", {}).get("name"))
    return summary


def write_table_provenance(table: str | os.PathLike,
                           rows: Mapping[str, Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]]], *,
                           config: Mapping | None = None) -> Path:
    """The sidecar of a table: for each row label, the files its cells were read from.

    ``table`` is the table's output (e.g. the prefix ``results/tables/table2`` of its .csv/.tex/.md: the
    sidecar is ``results/tables/table2.provenance.json``). ``rows`` maps a row label ("FCN-8s") to
    ``{role: file}`` ({"metrics": val.json, "benchmark": ...}), or to ``{role: [file, ...]}`` for a role with
    one file per seed. Each file is recorded with its sha256, its own sidecar path and a summary of that
    sidecar (commit, config hash, seeds, device, ...), or None for a file without one. Top level: the
    distinct commits and config hashes over all rows, so a mixed table is visible at a glance, and the
    provenance of the table job itself.
    """
    traced, commits, codes, configs, without = {}, set(), set(), set(), []

    def trace(path) -> dict:
        entry = file_record(path)
        if entry["provenance"] is None:
            without.append(str(path))
            entry["run"] = None
        else:
            entry["run"] = _summary(json.loads(Path(entry["provenance"]).read_text()))
            commits.add(str(entry["run"]["git_commit"]))
            codes.add(str(entry["run"]["code"]))
            configs.add(str(entry["run"]["config_sha256"]))
        return entry

    for label, files in rows.items():
        traced[label] = {role: [trace(p) for p in paths] if isinstance(paths, (list, tuple)) else trace(paths)
                         for role, paths in files.items()}
    record = {"format_version": FORMAT_VERSION, "kind": "table", "rows": traced, "git_commits": sorted(commits),
              "code_identities": sorted(codes),
              "config_sha256s": sorted(configs), "files_without_provenance": without,
              "table_job": collect(config=config)}
    return write_provenance(table, record)
