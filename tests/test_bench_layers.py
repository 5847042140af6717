"""benchmarks/bench_layers.py: every convolution of a pass is named after its layer, eager and compiled alike."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_layers  # noqa: E402

from segbench import models  # noqa: E402
from segbench.evaluation import inference  # noqa: E402


@pytest.fixture(scope="module")
def net_and_input():
    torch.manual_seed(0)
    return models.build("fcn8s_vgg16", 5, width=1 / 16).eval(), torch.randn(1, 3, 40, 40)


def test_layer_table_lists_the_convolutions_in_order_with_their_flops(net_and_input):
    net, x = net_and_input
    rows = bench_layers.layer_table(net, x)
    names = [r["layer"] for r in rows]
    assert names[:3] == ["conv1_1", "conv1_2", "conv2_1"] and "fc6" in names and "score_fr" in names
    conv1_1 = rows[0]
    assert conv1_1["input"] == (3, 40, 40)
    out = 40 + 2 * 100 - 2  # padding 100, 3x3
    c = net.conv1_1.out_channels
    assert conv1_1["gflop"] == pytest.approx(2 * out * out * 9 * 3 * c / 1e9)


@pytest.mark.parametrize("mode", ["fp32", "compile_fp32"])
def test_profile_attributes_every_convolution_to_a_layer(net_and_input, mode):
    net, x = net_and_input
    rows = bench_layers.layer_table(net, x)
    run = inference.prepare(net, mode, x)
    with torch.no_grad():
        measured = bench_layers.profile_layers(run, x, rows, passes=2)
    convs = [r["layer"] for r in rows if r["layer"].startswith(("conv", "fc"))]
    assert all(measured["layers_ms"][name] > 0 for name in convs)
    # Only the final upsampler's window (two matrix products, no 4-D input) is left unnamed.
    assert set(measured["unmatched_ops"]) <= {"aten::mm", "aten::bmm", "aten::addmm"}
    total = sum(measured["layers_ms"].values()) + measured["unmatched_ms"] + measured["rest_ms"]
    assert total == pytest.approx(measured["wall_ms"])
