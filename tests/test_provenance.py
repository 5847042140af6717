"""Provenance records, their sidecars and a table's sidecar, on files and git repositories made here."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segbench.infra import identity, provenance
from segbench.infra.provenance import (
    collect,
    config_sha256,
    git_state,
    provenance_path,
    tracked,
    write_provenance,
    write_table_provenance,
)

CONFIG = {"seed": 1337, "train": {"lr": 1e-7, "iterations": 600}, "models": {"width": {"vgg16": 0.125}}}


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_provenance_path_is_beside_any_output(tmp_path):
    assert provenance_path(tmp_path / "val.json") == tmp_path / "val.json.provenance.json"
    assert provenance_path("results/tables/table2") == Path("results/tables/table2.provenance.json")


def test_config_hash_is_canonical_and_rejects_non_json():
    reordered = {"models": {"width": {"vgg16": 0.125}}, "train": {"iterations": 600, "lr": 1e-7}, "seed": 1337}
    canonical = json.dumps(CONFIG, sort_keys=True, separators=(",", ":"))
    assert config_sha256(CONFIG) == config_sha256(reordered) == hashlib.sha256(canonical.encode()).hexdigest()
    assert config_sha256({**CONFIG, "seed": 1}) != config_sha256(CONFIG)
    with pytest.raises(ValueError, match="plain JSON data"):
        config_sha256({"path": object()})
    with pytest.raises(ValueError, match="plain JSON data"):
        config_sha256({"lr": float("nan")})


def test_collect_hashes_inputs_in_chunks_and_links_their_sidecars(tmp_path):
    big = tmp_path / "train.h5"
    payload = np.random.default_rng(0).integers(0, 256, 2 * identity.CHUNK + 12345, dtype=np.uint8).tobytes()
    big.write_bytes(payload)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    write_provenance(weights, {"git": {"commit": "abc"}})
    record = collect(config=CONFIG, inputs=[big, weights], seeds=1337, batch_size=20, precision="bf16 autocast",
                     wall_s=12.5, device="cpu")
    json.dumps(record)  # JSON-able
    assert record["config"] == CONFIG and record["config_sha256"] == config_sha256(CONFIG)
    assert record["inputs"] == [
        {"path": str(big), "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "provenance": None},
        {"path": str(weights), "bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest(),
         "provenance": str(tmp_path / "model.pt.provenance.json")},
    ]
    assert record["seeds"] == [1337] and record["batch_size"] == 20 and record["precision"] == "bf16 autocast"
    assert record["wall_s"] == 12.5 and record["threads"] == torch.get_num_threads()
    assert record["software"]["torch"] == torch.__version__
    assert record["software"]["cuda"] == torch.version.cuda
    assert record["device"]["type"] == "cpu" and record["device"]["count"] >= 1 and record["device"]["name"]
    assert record["git"]["commit"] == "unknown" or len(record["git"]["commit"]) == 40
    assert collect(seeds=[1, 2], threads=3)["seeds"] == [1, 2]
    assert collect(threads=3)["threads"] == 3


def test_collect_refuses_a_missing_or_folder_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a file"):
        collect(inputs=[tmp_path / "absent.h5"])
    with pytest.raises(FileNotFoundError, match="not folders"):
        collect(inputs=[tmp_path])


def test_git_state_of_a_repository_clean_dirty_and_outside(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "pkg")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo / "pkg") == {"commit": head, "dirty": False}
    (repo / "notes.txt").write_text("untracked files do not make a checkout dirty")
    assert git_state(repo / "pkg") == {"commit": head, "dirty": False}
    (repo / "pkg" / "__init__.py").write_text("x = 2\n")
    assert git_state(repo / "pkg") == {"commit": head, "dirty": True}
    (repo / "installed").mkdir()  # inside the repository but not tracked by it
    assert git_state(repo / "installed") == {"commit": "unknown", "dirty": "unknown"}
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_state(outside) == {"commit": "unknown", "dirty": "unknown"}


def test_git_state_without_git_is_unknown(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert git_state() == {"commit": "unknown", "dirty": "unknown"}


def test_tracked_writes_only_after_success(tmp_path):
    out = tmp_path / "val.json"
    with pytest.raises(RuntimeError):
        with tracked(out, config=CONFIG, seeds=1):
            raise RuntimeError("job failed")
    assert not provenance_path(out).exists()
    with tracked(out, config=CONFIG, seeds=1, extra={"split": "val"}) as extra:
        out.write_text("{}")
        extra["images"] = 80
    record = json.loads(provenance_path(out).read_text())
    assert record["extra"] == {"split": "val", "images": 80} and record["seeds"] == [1]
    assert record["wall_s"] >= 0.0 and record["config_sha256"] == config_sha256(CONFIG)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_table_sidecar_traces_rows_to_runs(tmp_path):
    files = {}
    for run, seed in (("fcn32s", 1), ("fcn8s", 2)):
        metrics = tmp_path / run / "val.json"
        metrics.parent.mkdir()
        metrics.write_text(json.dumps({"mean_iu": 0.1 * seed}))
        write_provenance(metrics, collect(config=CONFIG, seeds=seed, wall_s=float(seed)))
        files[run] = metrics
    bench = tmp_path / "bench.json"
    bench.write_text("{}")
    rows = {"FCN-32s": {"metrics": files["fcn32s"], "benchmark": bench}, "FCN-8s": {"metrics": files["fcn8s"]}}
    side = write_table_provenance(tmp_path / "tables" / "table2", rows, config=CONFIG)
    assert side == tmp_path / "tables" / "table2.provenance.json"
    record = json.loads(side.read_text())
    assert list(record["rows"]) == ["FCN-32s", "FCN-8s"]
    cell = record["rows"]["FCN-8s"]["metrics"]
    assert cell["path"] == str(files["fcn8s"]) and cell["provenance"] == str(provenance_path(files["fcn8s"]))
    assert cell["sha256"] == hashlib.sha256(files["fcn8s"].read_bytes()).hexdigest()
    assert cell["run"]["seeds"] == [2] and cell["run"]["wall_s"] == 2.0
    assert cell["run"]["config_sha256"] == config_sha256(CONFIG)
    assert record["rows"]["FCN-32s"]["benchmark"]["run"] is None
    assert record["files_without_provenance"] == [str(bench)]
    assert record["config_sha256s"] == [config_sha256(CONFIG)] and len(record["git_commits"]) == 1
    assert record["table_job"]["config"] == CONFIG


def test_jobs_record_torchvision_without_importing_it():
    """The version comes from torchvision's version.py: model, training and provenance code never import
    torchvision (a second per job); the recorded string equals torchvision.__version__."""
    code = ("import sys\n"
            "import segbench.cli, segbench.evaluation.evaluate, segbench.models, segbench.infra.provenance\n"
            "import segbench.training.train\n"
            "v = segbench.infra.provenance.software()['torchvision']\n"
            "assert not [m for m in sys.modules if m.startswith('torchvision')], 'torchvision was imported'\n"
            "import torchvision\n"
            "assert v == torchvision.__version__, (v, torchvision.__version__)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
