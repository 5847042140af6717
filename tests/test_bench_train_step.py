"""benchmarks/bench_train_step.py: the step it times is the step a training job runs (width and dropout rate from
the configuration)."""

import sys
from pathlib import Path

import pytest
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train_step  # noqa: E402


def _rates(net: nn.Module) -> set[float]:
    return {m.p for m in net.modules() if isinstance(m, nn.Dropout)}


def test_the_default_configuration_sets_the_rate_the_workflow_trains_with():
    config = ROOT / "config" / "config.yaml"
    assert bench_train_step.default_dropout(config) == yaml.safe_load(config.read_text())["models"]["dropout"]
    assert bench_train_step.default_widths(config)["unet"] == 0.125


@pytest.mark.parametrize("dropout, expected", [(0.0, {0.0}), (0.3, {0.3}), (None, {0.5})])
def test_the_timed_net_has_the_configured_dropout_rate(dropout, expected):
    net = bench_train_step._net("unetpp", 1 / 16, 3, dropout)
    assert net.training
    assert _rates(net) == expected


def test_a_configuration_without_a_rate_keeps_the_architectures(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  width: {vgg16: 0.25}\n")
    assert bench_train_step.default_dropout(config) is None
    assert _rates(bench_train_step._net("fcn32s_vgg16", 1 / 16, 3, None)) == {0.5}
