"""Cluster resources per rule: a GPU for the network rules unless the device is cpu, never for data or reports."""

import re
import subprocess
import sys

import pytest
from conftest import ROOT

from segbench.resources import CPU_RULES, GPU_RULES, rule_resources


@pytest.mark.parametrize("device", ["auto", "cuda"])
@pytest.mark.parametrize("rule", ["train", "pretrain", "benchmark", "evaluate"])
def test_network_rules_request_one_gpu_unless_cpu(rule, device):
    res = rule_resources(rule, device=device)
    assert res["gpu"] == 1
    assert "cpus_per_task" not in res and res["mem_mb"] > 0 and res["runtime"] > 0  # CPUs follow threads
    cpu = rule_resources(rule, device="cpu")
    assert "gpu" not in cpu
    assert cpu == {k: v for k, v in res.items() if k != "gpu"}


@pytest.mark.parametrize("rule", sorted(CPU_RULES))
@pytest.mark.parametrize("device", ["auto", "cuda", "cpu"])
def test_data_and_report_rules_never_request_a_gpu(rule, device):
    res = rule_resources(rule, device=device)
    assert not {"gpu", "gpu_model", "gres", "cpus_per_gpu"} & set(res)
    assert res["mem_mb"] > 0 and res["runtime"] > 0


def test_overrides_replace_defaults_add_keys_and_none_removes():
    overrides = {"train": {"mem_mb": 64000, "runtime": "2880", "gpu_model": "a100", "slurm_partition": "gpu",
                           "cpus_per_task": 8, "gpu": None},
                 "table2": {"mem_mb": 500}}
    assert rule_resources("train", device="auto", overrides=overrides) == {
        "mem_mb": 64000, "runtime": 2880, "gpu_model": "a100", "slurm_partition": "gpu", "cpus_per_task": 8}
    assert rule_resources("table2", device="auto", overrides=overrides)["mem_mb"] == 500
    assert rule_resources("evaluate", device="auto", overrides=overrides) == rule_resources("evaluate", device="auto")


def test_gpu_override_is_refused_with_device_cpu_and_on_cpu_rules():
    with pytest.raises(ValueError, match="resources.train asks for a GPU.*device is 'cpu'"):
        rule_resources("train", device="cpu", overrides={"train": {"gpu": 2}})
    with pytest.raises(ValueError, match="rule 'preprocess_voc' never uses one"):
        rule_resources("preprocess_voc", device="auto", overrides={"preprocess_voc": {"gpu": 1}})
    assert "gpu" not in rule_resources("train", device="auto", overrides={"train": {"gpu": None}})


def test_unknown_names_are_refused_listing_the_valid_ones():
    with pytest.raises(KeyError, match="no resources for rule 'trian'; valid rules: benchmark, dataset_stats"):
        rule_resources("trian", device="auto")
    with pytest.raises(KeyError, match=r"unknown rules \['trian'\]"):
        rule_resources("train", device="auto", overrides={"trian": {"mem_mb": 1}})
    with pytest.raises(ValueError, match="device must be one of .* got 'gpu'"):
        rule_resources("train", device="gpu")


def test_defaults_are_not_shared_between_calls():
    rule_resources("train", device="auto")["mem_mb"] = 1
    assert rule_resources("train", device="auto")["mem_mb"] == GPU_RULES["train"]["mem_mb"] != 1


SNAKEFILE = """
from segbench.resources import rule_resources

rule all:
    input: "t.txt", "r.txt"

rule train:
    output: "t.txt"
    resources:
        **rule_resources("train", device=config["device"], overrides=config.get("resources")),
    shell: "touch {output}"

rule table2:
    output: "r.txt"
    resources:
        **rule_resources("table2", device=config["device"], overrides=config.get("resources")),
    shell: "touch {output}"
"""


def _dry_run_resources(*args, cwd) -> dict[str, str]:
    """rule name -> its `resources:` line, from `snakemake --dry-run` output."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", *args], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    blocks = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", result.stdout, flags=re.M | re.S)
    return {rule: re.search(r"resources: (.*)", body).group(1) for rule, body in blocks}


@pytest.mark.parametrize("device, gpu", [("auto", True), ("cuda", True), ("cpu", False)])
def test_snakemake_sees_the_gpu_request_by_device(tmp_path, device, gpu):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "c.yaml").write_text("resources:\n  table2: {mem_mb: 700, runtime: 2h}\n")
    res = _dry_run_resources("--configfile", "c.yaml", "--config", f"device={device}", cwd=tmp_path)
    assert ("gpu=1" in res["train"].split(", ")) is gpu
    assert "mem_mb=16000" in res["train"].split(", ")
    assert "gpu" not in res["table2"] and {"mem_mb=700", "runtime=120"} <= set(res["table2"].split(", "))


@pytest.mark.parametrize("device, gpu", [("auto", True), ("cpu", False)])
def test_the_pipeline_requests_gpus_only_for_network_rules(tmp_path, device, gpu):
    res = _dry_run_resources("--configfile", "config/config.yaml", "tests/tiny-config.yaml",
                             "--config", f"results={tmp_path}", f"device={device}", cwd=ROOT)
    with_gpu = {rule for rule, line in res.items() if "gpu=1" in line.split(", ")}
    assert with_gpu == ({"pretrain", "train", "evaluate", "benchmark"} if gpu else set())
    assert {"train", "preprocess_voc", "table2"} <= set(res)
