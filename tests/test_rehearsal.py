"""The rehearsal (config/rehearsal.yaml): twins of every download at the real sizes, read by the real code paths
and verified against the mirror's checksum table; the paper's DAG, layered under it."""

import json
import re

import pytest
from conftest import ROOT
from test_workflow import _snakemake

from segbench.data.download import ChecksumError, md5sum, read_checksums
from segbench.data.msd import load_case, read_task
from segbench.data.nyud import preprocess_nyud
from segbench.data.siftflow import preprocess_siftflow
from segbench.data.sources import download_dataset
from segbench.data.store import Store
from segbench.data.voc import preprocess_voc
from segbench.evaluation.submission import extract_test_images
from segbench.pretraining.imagenet import fetch_weights
from segbench.rehearsal import VOC_SHAPES, write_mirror

COUNTS = {"voc": {"n_sbd_train": 5, "n_sbd_val": 1, "n_voc_train": 1, "n_voc_val": 3, "n_overlap": 1},
          "nyud": {"n_images": 2}, "siftflow": {"n_train": 3, "n_test": 1},
          "msd": {"n_train": 3, "n_test": 1, "shape": [12, 10, 6]}}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirror")
    write_mirror(out, **COUNTS, test_images=1, test_years=("2012",), weights=[("googlenet", "torchvision")])
    return out


def test_the_checksum_table_lists_every_file_of_the_mirror_with_its_md5(mirror):
    table = read_checksums(mirror / "checksums.json")
    files = sorted(p for p in [*(mirror / "datasets").iterdir(), *(mirror / "weights").iterdir()])
    assert sorted(table) == sorted(p.name for p in files) == sorted([
        "VOCtrainval_25-May-2011.tar", "VOCtrainval_11-May-2012.tar", "benchmark.tgz", "nyu_depth_v2_labeled.mat",
        "splits.mat", "classMapping40.mat", "SiftFlowDataset.zip", "VOC2012test.tar", "googlenet-1378be20.pth",
        "Task05_Prostate.tar"])
    assert all(table[p.name] == md5sum(p) for p in files)


def test_the_published_checksums_refuse_the_twin_and_the_table_admits_it(mirror, tmp_path):
    with pytest.raises(ChecksumError, match=r"VOCtrainval_25-May-2011.tar has md5 \w+, expected 6c3384ef"):
        download_dataset("voc", tmp_path / "published", data_root=mirror / "datasets")
    manifest = json.loads(download_dataset("voc", tmp_path / "voc", data_root=mirror / "datasets",
                                           checksums=mirror / "checksums.json").read_text())
    assert [f["checked_against"] for f in manifest["files"]] == [str(mirror / "checksums.json")] * 3


def test_a_table_without_the_file_is_refused_naming_it(mirror, tmp_path):
    table = tmp_path / "partial.json"
    table.write_text(json.dumps({"md5": {"splits.mat": "0" * 32}}))
    with pytest.raises(ChecksumError, match=r"no entry for nyu_depth_v2_labeled.mat; it lists \['splits.mat'\]"):
        download_dataset("nyud", tmp_path / "nyud", data_root=mirror / "datasets", checksums=table)
    (tmp_path / "page.json").write_text("<html>")
    with pytest.raises(ChecksumError, match="is not a checksum table"):
        read_checksums(tmp_path / "page.json")
    (tmp_path / "sha.json").write_text(json.dumps({"md5": {"a.tar": "z" * 32, "b.tar": "0" * 64}}))
    with pytest.raises(ChecksumError, match=r"entries \['a.tar', 'b.tar'\] are not 32-digit hex md5s"):
        read_checksums(tmp_path / "sha.json")


def test_the_twin_archives_extract_and_preprocess_through_the_real_paths_at_real_sizes(mirror, tmp_path):
    checksums = mirror / "checksums.json"
    raw = tmp_path / "raw"
    for dataset in ("voc", "nyud", "siftflow", "msd_prostate"):
        download_dataset(dataset, raw / dataset, data_root=mirror / "datasets", checksums=checksums)
    # the folders the workflow's raw_dir names for real data (workflow/rules/common.smk)
    written = preprocess_voc(raw / "voc/VOC2011/TrainVal/VOCdevkit/VOC2011", raw / "voc/SBD/benchmark_RELEASE/dataset",
                             tmp_path / "voc", voc2012=raw / "voc/VOC2012/VOCdevkit/VOC2012", progress=False)
    assert sorted(written) == ["train", "val", "val2012"]
    shapes = set()
    for split, n in (("train", 5), ("val", 2), ("val2012", 3)):  # seg11valid: VOC val minus its SBD-train overlap
        with Store(written[split]) as store:
            assert len(store) == n
            shapes |= {store.shape("image", i)[:2] for i in range(n)}
    assert shapes <= set(VOC_SHAPES) and len(shapes) >= 2  # varying, VOC's sizes
    with Store(preprocess_nyud(raw / "nyud", tmp_path / "nyud", progress=False)["train"]) as store:
        assert store.shape("image", 0)[:2] == (425, 560)  # the valid window of the real camera's 480 x 640 frames
    with Store(preprocess_siftflow(raw / "siftflow/SiftFlow", tmp_path / "siftflow", progress=False)["test"]) as store:
        assert store.shape("image", 0)[:2] == (256, 256)
    test = json.loads(extract_test_images("2012", tmp_path / "test", data_root=mirror / "datasets").read_text())
    assert test["test_ids"] == 1
    task = read_task(raw / "msd_prostate/MSD/Task05_Prostate")  # the workflow's VOLUMETRIC_TASK for real data
    assert (task["numTraining"], task["numTest"]) == (3, 1)
    assert load_case(task, task["training"][0]).label.shape == (12, 10, 6)


def test_twin_weights_load_through_fetch_weights_only_with_the_table(mirror, tmp_path):
    with pytest.raises(ChecksumError, match=r"googlenet-1378be20.pth has sha256 \w+\.\.\., expected a prefix 1378be20"):
        fetch_weights("googlenet", tmp_path / "published.pt", cache=mirror / "weights")
    out = fetch_weights("googlenet", tmp_path / "googlenet.pt", cache=mirror / "weights",
                        checksums=mirror / "checksums.json")
    assert out.is_file()


def test_weights_pre_staged_in_torch_hubs_cache_are_checked_and_read_in_place(mirror, tmp_path, monkeypatch):
    import shutil

    import torch

    from segbench.pretraining import imagenet

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    staged = shutil.copy(mirror / "weights" / "googlenet-1378be20.pth", hub / "checkpoints")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_download(url, dest, *args, **kwargs):
        raise AssertionError(f"downloaded {url}")

    monkeypatch.setattr(imagenet, "fetch", no_download)
    cache = tmp_path / "cache"
    out = fetch_weights("googlenet", tmp_path / "googlenet.pt", cache=cache, checksums=mirror / "checksums.json")
    assert torch.load(out, weights_only=True)["backbone"] == "googlenet"
    assert not cache.exists() and sorted(p.name for p in (hub / "checkpoints").iterdir()) == [
        "googlenet-1378be20.pth"]  # nothing written beside the site's copy
    with pytest.raises(ChecksumError, match=re.escape(str(staged)) + r" has sha256 \w+\.\.\., expected a prefix"):
        fetch_weights("googlenet", tmp_path / "published.pt", cache=cache)  # the twin is not torchvision's file


@pytest.mark.slow
def test_the_rehearsal_runs_every_job_of_the_paper_dag_on_the_twin_at_paper_settings(tmp_path):
    def dry(*configfiles):
        result = _snakemake("--dry-run", "--forceall", "--nolock", "--printshellcmds", "--configfile", *configfiles,
                            "--config", f"results={tmp_path / 'r'}")
        stats = result.stdout[result.stdout.rindex("Job stats:"):]
        return dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)), result.stdout

    paper, _ = dry("config/paper.yaml")
    rehearsal, commands = dry("config/rehearsal.yaml")
    assert rehearsal == {**paper, "rehearsal_mirror": "1", "total": str(int(paper["total"]) + 1)}
    train = [line for line in commands.splitlines() if "segbench train " in line and "/train/fcn8s/" in line]
    assert train and all(s in train[0] for s in ("--recipe heavy", "--width 1.0", "--iterations 2", "--device cpu"))
    assert "--checksums" in commands and "rehearsal-mirror" in commands
    scored = [line for line in commands.splitlines() if "segbench evaluate " in line and "deeplabv3" in line]
    assert len(scored) == 4 and all("""--model-options '{"eval_output_stride": 8}'""" in line for line in scored)


def test_the_rehearsal_refuses_a_mirror_its_downloads_do_not_read(tmp_path):
    (tmp_path / "moved.yaml").write_text("rehearsal: {mirror: elsewhere}\n")  # merged into the rehearsal's section
    result = _snakemake("--dry-run", "--nolock", "--configfile", "config/rehearsal.yaml", str(tmp_path / "moved.yaml"),
                        "--config", f"results={tmp_path / 'r'}", check=False)
    assert result.returncode == 1
    assert ("rehearsal.mirror is 'elsewhere', so the rehearsal needs data.data_root: elsewhere/datasets, "
            "data.checksums: elsewhere/checksums.json, pretrain.cache: elsewhere/weights") in (
                result.stdout + result.stderr)


def test_the_layered_config_keeps_papers_values_under_the_rehearsal(tmp_path):
    import yaml

    rehearsal = yaml.safe_load((ROOT / "config" / "rehearsal.yaml").read_text())
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    assert rehearsal["layered_on"] == "config/paper.yaml"
    assert "models" not in rehearsal and paper["models"]["width"]["vgg16"] == 1.0  # full width comes from paper.yaml
