"""Cluster resources per rule: a GPU for the network rules only with device cuda, never for data or reports;
GPU requests that the cluster cannot satisfy stop the run before any submission; auto's device choice."""

import json
import os
import re
import stat
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from segbench.errors import SegbenchError
from segbench.infra import resources, runtime
from segbench.infra.resources import (
    CPU_RULES,
    GPU_RULES,
    HHA_MAIN_MB,
    HHA_WORKER_MB,
    asks_for_gpu,
    hha_processes,
    rule_resources,
    sinfo_gpu_partitions,
    slurm_gpu_problem,
)


@pytest.mark.parametrize("rule", ["train", "pretrain", "benchmark", "evaluate"])
def test_network_rules_request_one_gpu_only_with_device_cuda(rule):
    res = rule_resources(rule, device="cuda")
    assert res["gpu"] == 1
    # CPUs follow threads (one); the benchmark's 8 threads are its request, whatever the device
    assert res.get("cpus_per_task") == (8 if rule == "benchmark" else None)
    assert res["mem_mb"] > 0 and res["runtime"] > 0
    for device in ("auto", "cpu"):
        assert rule_resources(rule, device=device) == {k: v for k, v in res.items() if k != "gpu"}


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
    assert rule_resources("train", device="cuda", overrides=overrides) == {
        "mem_mb": 64000, "runtime": 2880, "gpu_model": "a100", "slurm_partition": "gpu", "cpus_per_task": 8}
    assert rule_resources("table2", device="cuda", overrides=overrides)["mem_mb"] == 500
    assert rule_resources("evaluate", device="cuda", overrides=overrides) == rule_resources("evaluate", device="cuda")


def test_gpu_override_is_refused_with_device_cpu_and_on_cpu_rules():
    with pytest.raises(ValueError, match="resources.train asks for a GPU.*device is 'cpu'"):
        rule_resources("train", device="cpu", overrides={"train": {"gpu": 2}})
    with pytest.raises(ValueError, match="rule 'preprocess_voc' never uses one"):
        rule_resources("preprocess_voc", device="auto", overrides={"preprocess_voc": {"gpu": 1}})
    assert "gpu" not in rule_resources("train", device="cuda", overrides={"train": {"gpu": None}})
    # auto asks for no GPU itself, but a job given one through an override uses it
    assert rule_resources("train", device="auto", overrides={"train": {"gpu": 2}})["gpu"] == 2


def test_unknown_names_are_refused_listing_the_valid_ones():
    with pytest.raises(ValueError, match="no resources for rule 'trian'; valid rules: benchmark, dataset_stats"):
        rule_resources("trian", device="auto")
    with pytest.raises(ValueError, match=r"unknown rules \['trian'\]"):
        rule_resources("train", device="auto", overrides={"trian": {"mem_mb": 1}})
    with pytest.raises(ValueError, match="device must be one of .* got 'gpu'"):
        rule_resources("train", device="gpu")


def test_training_processes_and_workers_scale_the_train_request():
    base = GPU_RULES["train"]
    assert rule_resources("train", device="cuda", processes=2, workers=3) == {
        **base, "gpu": 2, "mem_mb": 2 * base["mem_mb"], "cpus_per_task": 8}  # 2 x (1 training + 3 loading)
    assert rule_resources("train", device="auto", processes=2) == {
        **{k: v for k, v in base.items() if k != "gpu"}, "mem_mb": 2 * base["mem_mb"], "cpus_per_task": 2}
    assert rule_resources("train", device="cuda", workers=1)["cpus_per_task"] == 2
    assert rule_resources("train", device="cuda", processes=1, workers=0) == rule_resources("train", device="cuda")
    assert "cpus_per_task" not in rule_resources("train", device="cuda", processes=2,
                                                 overrides={"train": {"cpus_per_gpu": 4}})  # the site's way wins
    with pytest.raises(ValueError, match="only the train rule .* got processes=2, workers=0 for rule 'evaluate'"):
        rule_resources("evaluate", device="cuda", processes=2)
    with pytest.raises(ValueError, match="got processes=0, workers=0"):
        rule_resources("train", device="cuda", processes=0)


def test_hha_workers_are_bounded_by_the_jobs_cpus_and_memory():
    res = rule_resources("hha_nyud", device="cuda")
    assert res["cpus_per_task"] == hha_processes(res) == 4
    assert res["mem_mb"] == HHA_MAIN_MB + 4 * HHA_WORKER_MB == 6600
    assert hha_processes({"cpus_per_task": 64, "mem_mb": 8000}) == 13  # the old request: memory, not cores, bounds it
    assert hha_processes({"cpus_per_task": 2, "mem_mb": 64000}) == 2
    assert hha_processes({"mem_mb": HHA_MAIN_MB + HHA_WORKER_MB}) == 1  # no cpus_per_task: one
    with pytest.raises(ValueError, match=r"resources.hha_nyud.mem_mb is 4000, below the 6150 MB .* raise it"):
        hha_processes({"cpus_per_task": 4, "mem_mb": 4000})


def test_the_time_limit_replaces_the_default_and_an_override_wins():
    import yaml

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["train"]["properties"]["time_limit"]["default"] == resources.TRAIN_TIME_LIMIT == 1440
    assert rule_resources("train", device="cuda")["runtime"] == 1440
    assert rule_resources("train", device="cuda", runtime=240)["runtime"] == 240
    assert rule_resources("train", device="cuda", runtime=240, overrides={"train": {"runtime": 90}})["runtime"] == 90
    with pytest.raises(ValueError, match="time limit of rule 'train' must be a whole number of minutes >= 1, got 0"):
        rule_resources("train", device="cuda", runtime=0)
    assert rule_resources("train", device="cuda", runtime=resources.TRAIN_MIN_MINUTES)["runtime"] == 10
    assert schema["properties"]["train"]["properties"]["time_limit"]["minimum"] == resources.TRAIN_MIN_MINUTES
    for limit in ({"runtime": 9}, {"overrides": {"train": {"runtime": "5"}}}):  # the early SIGTERM would come first
        with pytest.raises(ValueError, match=r"train rule's time limit is 9|train rule's time limit is 5 minutes, below 10"):
            rule_resources("train", device="cuda", **limit)


def test_defaults_are_not_shared_between_calls():
    rule_resources("train", device="cuda")["mem_mb"] = 1
    assert rule_resources("train", device="cuda")["mem_mb"] == GPU_RULES["train"]["mem_mb"] != 1


SNAKEFILE = """
from segbench.infra.resources import rule_resources

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


@pytest.mark.parametrize("device, gpu", [("auto", False), ("cuda", True), ("cpu", False)])
def test_snakemake_sees_the_gpu_request_by_device(tmp_path, device, gpu):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "c.yaml").write_text("resources:\n  table2: {mem_mb: 700, runtime: 2h}\n")
    res = _dry_run_resources("--configfile", "c.yaml", "--config", f"device={device}", cwd=tmp_path)
    assert ("gpu=1" in res["train"].split(", ")) is gpu
    assert "mem_mb=16000" in res["train"].split(", ")
    assert "gpu" not in res["table2"] and {"mem_mb=700", "runtime=120"} <= set(res["table2"].split(", "))


@pytest.mark.parametrize("device, gpu", [("cuda", True), ("auto", False), ("cpu", False)])
def test_the_pipeline_requests_gpus_only_for_network_rules(tmp_path, device, gpu):
    res = _dry_run_resources("--configfile", "config/config.yaml", "tests/tiny-config.yaml",
                             "--config", f"results={tmp_path}", f"device={device}", cwd=ROOT)
    with_gpu = {rule for rule, line in res.items() if "gpu=1" in line.split(", ")}
    nets = {"pretrain", "train", "evaluate", "benchmark", "qualitative", "submission"}  # the rules that run a net
    assert with_gpu == (nets if gpu else set())
    assert {"train", "preprocess_voc", "table2"} <= set(res)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_train_processes_give_each_run_torchrun_and_its_gpus(tmp_path, device):
    (tmp_path / "processes.yaml").write_text("train: {processes: 2}\nprecision: fp16\n")
    configs = ["config/config.yaml", "tests/tiny-config.yaml", tmp_path / "processes.yaml"]
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--nolock", "-p",
                             "--configfile", *configs, "--config", f"results={tmp_path}/r", f"device={device}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {}
    for body, command in re.findall(r"^rule train:\n(.*?)^Shell command: ([^\n]*)", result.stdout, flags=re.M | re.S):
        run = re.search(r"wildcards: run=([^,]+), seed=1", body)
        if run:
            jobs[run.group(1)] = (set(re.search(r"resources: (.*)", body).group(1).split(", ")), command)
    assert {"fcn32s-fixed", "fcn8s", "fig5-p1.0", "fig5-p0.5", "nyud-rgb", "siftflow-32s"} <= set(jobs)
    for run, (res, command) in jobs.items():
        processes = 1 if run == "fig5-p1.0" else 2  # the tiny Figure 5 run at p = 1 draws one image per iteration
        gpus = processes if device == "cuda" else 0
        assert ("gpu=2" in res, "gpu=1" in res) == (gpus == 2, gpus == 1), run
        assert f"cpus_per_task={processes}" in res and f"mem_mb={processes * 16000}" in res, run
        torchrun = "torchrun --standalone --nproc-per-node 2 -m segbench.cli train "
        assert command.startswith(torchrun if processes == 2 else "segbench train "), command
        assert "--precision fp16" in command
    pretrain = re.findall(r"^rule pretrain:\n.*?^Shell command: ([^\n]*)", result.stdout, flags=re.M | re.S)
    assert pretrain and all("--precision auto" in command for command in pretrain)  # fp16 is for training only


def _dry_run_outputs(*args) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--forceall", "--cores", "1", "--nolock",
                             *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return [path for line in re.findall(r"^    output: (.*)$", result.stdout, flags=re.M) for path in line.split(", ")]


def test_the_paper_config_asks_for_gpus_and_writes_only_under_its_own_results_root():
    res = _dry_run_resources("--forceall", "--configfile", "config/config.yaml", "config/paper.yaml", cwd=ROOT)
    nets = {"train", "evaluate", "evaluate_crf", "benchmark", "qualitative", "submission", "evaluate_released",
            "train_volumetric", "evaluate_volumetric"}  # torchvision weights; the volumetric nets on MSD
    assert {rule for rule, line in res.items() if "gpu=1" in line.split(", ")} == nets
    outputs = _dry_run_outputs("--configfile", "config/config.yaml", "config/paper.yaml")
    assert len(outputs) > 50
    assert [path for path in outputs if not path.startswith("results/paper/")] == []


def test_the_default_config_writes_under_results_and_never_under_the_paper_root(tmp_path):
    outputs = _dry_run_outputs("--configfile", "config/config.yaml", "--config", f"results={tmp_path}/r")
    assert len(outputs) > 30 and all(path.startswith(f"{tmp_path}/r/") for path in outputs)


SINFO_CPU_ONLY = "debug*|(null)\nlong|(null)\n"
SINFO_GPU = "cpu*|(null)\ngpu|gpu:a100:4(S:0-1),tmpdisk:100\ngpu|(null)\nbig|gres/gpu:h100:8\n"


def test_sinfo_gres_is_read_per_partition_with_the_default():
    assert sinfo_gpu_partitions(SINFO_CPU_ONLY) == ({"debug": False, "long": False}, "debug")
    assert sinfo_gpu_partitions(SINFO_GPU) == ({"cpu": False, "gpu": True, "big": True}, "cpu")
    assert sinfo_gpu_partitions("") == ({}, None)


def test_gpu_requests_are_judged_against_the_partitions_they_go_to():
    jobs = {("train", None), ("evaluate", None)}
    message = slurm_gpu_problem(jobs, sinfo_output=SINFO_CPU_ONLY)
    assert "rules evaluate, train ask SLURM for a GPU, but no partition of this cluster has one" in message
    assert "set device: auto" in message
    message = slurm_gpu_problem(jobs | {("benchmark", "gpu")}, sinfo_output=SINFO_GPU)
    assert message.startswith("device: cuda makes evaluate (partition cpu, the default), train (partition cpu, "
                              "the default) ask SLURM for a GPU in a partition without one; partitions with GPUs: "
                              "big, gpu.")
    assert "resources: {evaluate: {slurm_partition: big}}" in message
    assert slurm_gpu_problem({("train", "gpu"), ("evaluate", "cpu,big")}, sinfo_output=SINFO_GPU) is None
    assert slurm_gpu_problem({("train", "elsewhere")}, sinfo_output=SINFO_GPU) is None  # not listed: sbatch decides
    assert slurm_gpu_problem(set(), sinfo_output=SINFO_CPU_ONLY) is None


def test_gpu_requests_are_recognised_as_the_plugin_does():
    assert asks_for_gpu({"gpu": 1}) and asks_for_gpu({"gres": "gpu:a100:2"})
    assert not asks_for_gpu({"gpu": 0, "gres": "tmpdisk:10", "mem_mb": 100})


def _fake_slurm(bin_dir, sinfo_output):
    """sinfo printing ``sinfo_output``, an sbatch that records any call and fails, an squeue (the plugin
    checks that it exists)."""
    bin_dir.mkdir()
    scripts = {"sinfo": f"#!/bin/sh\nprintf '{sinfo_output}'\n", "squeue": "#!/bin/sh\n",
               "sbatch": f"#!/bin/sh\necho \"$@\" >> {bin_dir}/sbatch-calls\nexit 1\n"}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)


def test_device_cuda_on_a_cluster_without_gpus_stops_before_submitting_and_says_what_to_change(tmp_path):
    _fake_slurm(tmp_path / "bin", SINFO_CPU_ONLY)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "--profile", "slurm", "--configfile",
                             "config/config.yaml", "tests/tiny-config.yaml", "--config", f"results={tmp_path}/r",
                             "device=cuda", "--nolock"], cwd=ROOT, capture_output=True, text=True, env=env)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "ask SLURM for a GPU, but no partition of this cluster has one" in out and "--config device=auto" in out
    assert not (tmp_path / "bin" / "sbatch-calls").exists()


@pytest.mark.parametrize("env, expected", [
    ({}, "cuda"),  # outside SLURM: whatever is visible
    ({"SLURM_JOB_ID": "7"}, "cpu"),  # a SLURM job given no GPU leaves the visible ones to their jobs
    ({"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "0"}, "cpu"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "2"}, "cuda"),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_GPUS": "0,1"}, "cuda"),
])
def test_auto_uses_a_visible_gpu_only_where_slurm_allocated_it(monkeypatch, env, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runtime.resolve_device("auto").type == expected
    assert runtime.resolve_device("cpu").type == "cpu"


def test_resources_and_runtime_accept_the_same_devices():
    assert resources.DEVICES is runtime.DEVICES


def test_auto_without_a_visible_gpu_is_the_cpu_and_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert runtime.resolve_device("auto").type == "cpu"
    with pytest.raises(SegbenchError, match="'cuda' was asked for but no CUDA GPU is visible"):
        runtime.resolve_device("cuda")


def _dry_run_jobs(*args) -> dict[str, list[tuple[set[str], str]]]:
    """rule name -> [(its resources, its shell command)] per job, from `snakemake --dry-run -p --forceall`."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--forceall", "--nolock", "-p", *args],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs: dict[str, list[tuple[set[str], str]]] = {}
    for rule, body, command in re.findall(r"^(?:local)?rule (\w+):\n(.*?)^Shell command: ([^\n]*)", result.stdout,
                                          flags=re.M | re.S):
        jobs.setdefault(rule, []).append((set(re.search(r"resources: (.*)", body).group(1).split(", ")), command))
    return jobs


def test_the_paper_jobs_under_the_slurm_profile_ask_for_what_they_use(tmp_path):
    (tmp_path / "limit.yaml").write_text("train: {time_limit: 240}\n")
    jobs = _dry_run_jobs("--profile", "slurm", "--cores", "16", "--configfile", "config/config.yaml",
                         "config/paper.yaml", tmp_path / "limit.yaml")
    for res, command in jobs["hha_nyud"]:  # 4 workers in 4 CPUs and the memory of the frames and 4 workers
        assert {"cpus_per_task=4", "mem_mb=6600", "runtime=60"} <= res and "--threads 4 " in command, (res, command)
    for res, command in jobs["benchmark"]:  # 8 CPUs, 8 threads: not every core --cores allows (16 here)
        assert {"cpus_per_task=8", "gpu=1"} <= res and "--threads 8 " in command, (res, command)
    for res, _ in jobs["preprocess_voc"]:
        assert "mem_mb=2000" in res
    assert len(jobs["train"]) > 20
    for res, _ in jobs["train"]:  # train.time_limit, and the profile's early SIGTERM to the job steps
        assert {"runtime=240", "slurm_extra=--signal=TERM@300"} <= res, res
    assert not [rule for rule, runs in jobs.items() if rule != "train"
                for res, _ in runs if any(r.startswith("slurm_extra=") for r in res)]


def test_the_slurm_profile_asks_for_sigterm_to_the_job_steps_before_the_time_limit():
    import yaml

    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    extra = profile["set-resources"]["train"]["slurm_extra"]
    assert extra == "'--signal=TERM@300'"  # quoted: Snakemake reads the value as a Python expression
    assert "B:" not in extra  # B: would signal the batch shell (Snakemake), not the training in its srun step
    doc = (ROOT / "docs" / "cluster.md").read_text()
    assert "--signal=TERM@300" in doc and not re.search(r"--signal=(?!TERM@300\b)", doc)  # docs name this one


def test_a_config_slurm_extra_that_the_profile_would_replace_stops_the_run(tmp_path):
    (tmp_path / "extra.yaml").write_text('resources:\n  train: {slurm_extra: "--qos=long"}\n')
    result = subprocess.run([sys.executable, "-m", "snakemake", "--dry-run", "--cores", "1", "--nolock", "--profile",
                             "slurm", "--configfile", "config/config.yaml", "tests/tiny-config.yaml",
                             tmp_path / "extra.yaml", "--config", f"results={tmp_path}/r"],
                            cwd=ROOT, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert ("the config's resources.train sets slurm_extra='--qos=long', but --set-resources sets train:slurm_extra"
            in out)


LOCAL_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    configs = ConfigSettings(configfiles=[Path(p) for p in sys.argv[1:]])
    workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=Path("Snakefile"),
                            workdir=Path.cwd(), config_settings=configs)._workflow
    # Snakemake 9 keeps the localrules in a private set: no public query answers outside a cluster executor
    print(json.dumps({"local": sorted(workflow._localrules), "rules": sorted(r.name for r in workflow.rules),
                      "fetch_weights": {**workflow.get_rule("fetch_weights").resources}
                      if workflow.is_rule("fetch_weights") else None}, default=str))
"""


@pytest.mark.parametrize("configs", [["config/config.yaml", "config/paper.yaml"], ["config/config.yaml"]],
                         ids=["paper", "default"])
def test_downloads_run_on_the_submitting_host(configs):
    result = subprocess.run([sys.executable, "-c", LOCAL_RULES, *configs], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(found["local"]) <= set(found["rules"])  # no "localrules ... not present" warning
    if configs[-1] == "config/paper.yaml":
        assert {"download", "fetch_weights", "released_model", "voc_test_images"} <= set(found["local"])
        assert not set(found["fetch_weights"]) & {"gpu", "gpu_model", "gres", "slurm_partition"}
    else:  # twins and stand-ins: nothing to fetch
        assert set(found["local"]) == {"report"}
