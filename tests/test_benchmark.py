"""The forward-time benchmark's result structure and JSON output (tiny model; timings are not asserted)."""

import json

import pytest

from segbench.benchmark import run_benchmark, write_benchmark_json


@pytest.fixture(scope="module")
def result():
    return run_benchmark("fcn32s_vgg16", num_classes=4, width=1 / 16, size=40, trials=3, warmup=1,
                         modes=("channels_last", "bf16"), device="cpu", progress=False)


def test_result_structure(result):
    assert list(result["modes"]) == ["fp32", "channels_last", "bf16"]  # the fp32 baseline is always measured
    assert (result["size"], result["width"], result["trials"], result["device_type"]) == (40, 1 / 16, 3, "cpu")
    assert result["threads"] >= 1 and result["torch_version"] and result["device"]
    assert result["gflop"] > 0
    for mode, stats in result["modes"].items():
        assert len(stats["times_ms"]) == 3
        assert min(stats["times_ms"]) == stats["min_ms"] <= stats["median_ms"]
        assert stats["mean_ms"] == pytest.approx(sum(stats["times_ms"]) / 3)
        assert stats["speedup_vs_fp32"] == pytest.approx(result["modes"]["fp32"]["median_ms"] / stats["median_ms"])
    assert result["modes"]["fp32"]["argmax_agreement"] == 1.0
    assert result["modes"]["channels_last"]["argmax_agreement"] > 0.99
    assert 0.9 < result["modes"]["bf16"]["argmax_agreement"] <= 1.0
    assert result["fastest_mode"] in result["modes"]


def test_write_json_roundtrip(result, tmp_path):
    path = write_benchmark_json(result, tmp_path / "sub" / "bench.json")
    assert json.loads(path.read_text()) == result
    assert sorted(p.name for p in path.parent.iterdir()) == ["bench.json"]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="compile"):
        run_benchmark("fcn32s_vgg16", modes=("fp16",), size=8, width=1 / 16, trials=1)
