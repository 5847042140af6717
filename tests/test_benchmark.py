"""The forward-time benchmark's results, FLOP counting, peak probes and JSON output (tiny model; timings are
not asserted, only how the reported figures are derived from them)."""

import json
import statistics

import pytest
import torch

from segbench import models
from segbench.evaluation.benchmark import (
    CPU_FLAGS,
    PRECISION,
    argmax_agreement,
    count_flops,
    instruction_sets,
    measure_peak,
    run_benchmark,
    write_benchmark_json,
)


@pytest.fixture(scope="module")
def result():
    return run_benchmark("fcn32s_vgg16", num_classes=4, width=1 / 16, size=40, trials=3, warmup=1,
                         modes=("channels_last", "bf16"), device="cpu", probe_seconds=0.0, progress=False)


def test_result_structure(result):
    assert list(result["modes"]) == ["fp32", "channels_last", "bf16"]  # the fp32 baseline is always measured
    assert (result["size"], result["width"], result["trials"], result["device_type"]) == (40, 1 / 16, 3, "cpu")
    assert result["threads"] >= 1 and result["torch_version"] and result["device"]
    for mode, stats in result["modes"].items():
        assert len(stats["times_ms"]) == 3
        assert min(stats["times_ms"]) == stats["min_ms"] <= stats["median_ms"] == statistics.median(stats["times_ms"])
        assert stats["mean_ms"] == pytest.approx(sum(stats["times_ms"]) / 3)
        assert stats["speedup_vs_fp32"] == pytest.approx(result["modes"]["fp32"]["median_ms"] / stats["median_ms"])
    assert result["modes"]["channels_last"]["argmax_agreement"] > 0.99
    assert 0.9 < result["modes"]["bf16"]["argmax_agreement"] <= 1.0
    assert result["fastest_mode"] == min(result["modes"], key=lambda m: result["modes"][m]["median_ms"])


def test_gflop_is_the_timed_models_forward_count(result):
    torch.manual_seed(0)
    net = models.build("fcn32s_vgg16", 4, width=1 / 16).eval()
    assert result["gflop"] == pytest.approx(count_flops(net, torch.zeros(1, 3, 40, 40)) / 1e9, rel=1e-12)
    assert "2 FLOP per multiply-add" in result["flops_counted"]


def test_achieved_throughput_and_peak_fraction_follow_from_the_times(result):
    assert set(result["peak"]) == {"fp32", "bf16"}  # precisions of the measured modes only
    for mode, stats in result["modes"].items():
        assert stats["precision"] == PRECISION[mode] == ("bf16" if mode == "bf16" else "fp32")
        assert stats["gflops_per_s"] == pytest.approx(result["gflop"] / (stats["median_ms"] / 1000))
        assert stats["peak_fraction"] == pytest.approx(stats["gflops_per_s"] /
                                                       result["peak"][stats["precision"]]["gflops_per_s"])
    assert result["instruction_sets"] == instruction_sets(torch.device("cpu"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_peak_is_the_best_probe_with_known_flop_counts(precision):
    peak = measure_peak(torch.device("cpu"), precision, seconds=0.0)
    probes = peak["probes"]
    assert probes["matmul"]["gflop"] == 2 * 2048 ** 3 / 1e9
    assert probes["conv3x3"]["gflop"] == 2 * 512 * 512 * 9 * 64 * 64 / 1e9
    for probe in probes.values():
        assert probe["calls"] == 2  # a zero budget still times two calls
        assert probe["gflops_per_s"] == pytest.approx(probe["gflop"] / (probe["best_ms"] / 1000))
        assert ("bfloat16" if precision == "bf16" else "float32") in probe["description"]
    assert peak["gflops_per_s"] == max(p["gflops_per_s"] for p in probes.values())
    with pytest.raises(ValueError, match="precision must be one of .* got 'fp16'"):
        measure_peak(torch.device("cpu"), "fp16")


def test_without_warmup_the_first_call_is_the_first_trial():
    result = run_benchmark("fcn32s_vgg16", num_classes=4, width=1 / 16, size=40, trials=2, warmup=0,
                           modes=("fp32", "bf16"), device="cpu", probe_seconds=0.0, progress=False)
    for mode in ("fp32", "bf16"):
        stats = result["modes"][mode]
        assert len(stats["times_ms"]) == 2
        assert stats["times_ms"][0] == pytest.approx(1000 * stats["first_call_s"], rel=1e-12)
    assert result["warmup"] == 0


def test_flops_are_two_per_multiply_add_of_convolutions_including_transposed_and_grouped():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.zeros(1, 3, 10, 10)) == 2 * 8 * 3 * 9 * 10 * 10
    up = torch.nn.ConvTranspose2d(4, 4, 4, stride=2, groups=4, bias=False)
    assert count_flops(up, torch.zeros(1, 4, 5, 5)) == 2 * 4 * 1 * 16 * 5 * 5  # every input pixel x kernel
    assert count_flops(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.MaxPool2d(2)), torch.zeros(1, 3, 8, 8)) == 0


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_flops_counted_on_the_meta_device_equal_a_real_forward_pass(name):
    from torch.utils.flop_counter import FlopCounterMode
    channels = 6 if "rgbhha" in name else 3
    torch.manual_seed(0)
    net = models.build(name, 5, width=1 / 16, in_channels=channels).eval()
    spatial = (19, 45, 37) if models.MODELS[name].dims == 3 else (67, 93)  # volumes: N x C x D x H x W
    x = torch.randn(1, channels, *spatial)  # odd sizes: every crop and padding path
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    assert counter.get_total_flops() > 0
    assert count_flops(net, x) == counter.get_total_flops()
    assert next(net.parameters()).device.type == "cpu"  # the net itself is untouched


def test_instruction_sets_are_read_from_the_cpu_flags():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 avx512bw\n"
    assert instruction_sets(torch.device("cpu"), cpuinfo) == ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile",
                                                              "amx_bf16"]
    assert instruction_sets(torch.device("cpu"), "processor\t: 0\n") == []
    assert set(CPU_FLAGS) >= {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_argmax_agreement_counts_matching_pixels():
    reference = torch.tensor([[[0, 1], [2, 3]]])
    assert argmax_agreement(reference, reference) == 1.0
    assert argmax_agreement(torch.tensor([[[0, 1], [2, 0]]]), reference) == 0.75
    with pytest.raises(ValueError, match=r"differ in shape: \(1, 1, 2\) vs \(1, 2, 2\)"):
        argmax_agreement(reference[:, :1], reference)


def test_write_json_roundtrip(result, tmp_path):
    path = write_benchmark_json(result, tmp_path / "sub" / "bench.json")
    assert json.loads(path.read_text()) == result
    assert sorted(p.name for p in path.parent.iterdir()) == ["bench.json"]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="compile"):
        run_benchmark("fcn32s_vgg16", modes=("fp16",), size=8, width=1 / 16, trials=1)


def test_model_options_time_the_net_evaluation_scores(tmp_path, caplog):
    """UNet++'s evaluate option ``prune: 1`` times the depth-1 subnetwork, as ``segbench evaluate`` scores it; a
    build option reaches ``models.build``; an option the model does not declare is refused by the CLI."""
    from segbench import cli

    common = dict(num_classes=3, width=1 / 16, size=32, trials=1, warmup=0, modes=("fp32",), device="cpu",
                  probe_seconds=0.0, progress=False)
    full = run_benchmark("unetpp", **common)
    pruned = run_benchmark("unetpp", model_options={"prune": 1}, **common)
    torch.manual_seed(0)
    net = models.build("unetpp", 3, width=1 / 16).eval()
    sub = models.for_evaluation(net, {"name": "unetpp", "num_classes": 3, "width": 1 / 16}, {"prune": 1})
    x = torch.zeros(1, 3, 32, 32)
    assert pruned["gflop"] == pytest.approx(count_flops(sub, x) / 1e9)
    assert pruned["gflop"] < full["gflop"] == pytest.approx(count_flops(net, x) / 1e9)
    assert pruned["model_options"] == {"prune": 1} and "model_options" not in full
    os8 = run_benchmark("deeplabv3plus_resnet50", model_options={"output_stride": 8}, **common)
    os16 = run_benchmark("deeplabv3plus_resnet50", model_options={"output_stride": 16}, **common)
    assert os8["gflop"] > os16["gflop"]

    out = tmp_path / "bench.json"
    args = ["benchmark", "unetpp", "--out", str(out), "--size", "32", "--width", "0.0625", "--trials", "1",
            "--warmup", "0", "--modes", "fp32", "--device", "cpu"]
    assert cli.main([*args, "--model-options", '{"prune": 2}']) == 0
    assert json.loads(out.read_text())["model_options"] == {"prune": 2}
    assert cli.main([*args, "--model-options", '{"depth": 2}']) == 1
    assert "model unetpp has no option 'depth'; its options: prune (evaluate" in caplog.text


@pytest.fixture(scope="module")
def auto_result():
    """``auto`` on a CPU reported as AVX2 only (no bf16, no VNNI), with the same net as a reference."""
    def twin(num_classes):
        return models.build("fcn32s_vgg16", num_classes, width=1 / 16)
    return run_benchmark("fcn32s_vgg16", num_classes=4, width=1 / 16, size=40, trials=3, warmup=1, modes=("auto",),
                         device="cpu", probe_seconds=0.0, progress=False, flags={"avx2", "fma"},
                         reference=("the same net", twin))


def test_auto_times_the_allowed_candidates_and_names_its_choice(auto_result):
    assert list(auto_result["modes"]) == ["fp32", "channels_last", "compile_fp32"]
    why = auto_result["why"]
    assert why["flags"] == ["avx2", "fma"] == auto_result["instruction_sets"]
    assert set(why["excluded"]) == {"bf16", "compile", "int8"} and "emulated" in why["excluded"]["bf16"]
    assert "avx512_vnni" in why["excluded"]["int8"]
    assert why["candidates"] == {m: s["median_ms"] for m, s in auto_result["modes"].items()}
    assert auto_result["chosen_mode"] == min(why["candidates"], key=why["candidates"].get)
    for stats in auto_result["modes"].values():
        assert stats["usable"] == (stats["argmax_agreement"] >= 0.99) and stats["prepare_s"] >= 0
    assert auto_result["modes"]["compile_fp32"]["argmax_agreement"] > 0.99
    assert auto_result["modes"]["compile_fp32"]["precision"] == "fp32" and set(auto_result["peak"]) == {"fp32"}


def test_reference_is_timed_alongside_with_the_same_weights(auto_result):
    ref = auto_result["reference"]
    assert ref["name"] == "the same net" and len(ref["times_ms"]) == 3
    assert ref["argmax_agreement"] == 1.0  # the benchmarked net's weights were loaded into it
    for stats in auto_result["modes"].values():
        assert stats["ratio_vs_reference"] == pytest.approx(ref["median_ms"] / stats["median_ms"])
    assert json.loads(json.dumps(auto_result)) == auto_result  # JSON-clean


def test_an_int8_net_refused_is_reported_not_chosen(monkeypatch):
    from segbench.evaluation import inference

    def refuse(net, example, calibration, *, dynamic=False):
        raise inference.UnusableMode("int8 net changed shapes on input (1, 3, 40, 40): ...")
    monkeypatch.setattr(inference, "quantize_int8", refuse)
    monkeypatch.setattr(inference, "torchao_missing", lambda: None)
    result = run_benchmark("fcn32s_vgg16", num_classes=4, width=1 / 16, size=40, trials=2, warmup=1,
                           modes=("int8",), device="cpu", probe_seconds=0.0, progress=False, flags={"avx512_vnni"})
    assert result["modes"]["int8"] == {"description": inference.DESCRIPTIONS["int8"], "precision": "int8",
                                       "usable": False, "error": "int8 net changed shapes on input (1, 3, 40, 40): ..."}
    assert result["chosen_mode"] == result["fastest_mode"] == "fp32"
    assert result["why"]["excluded"]["int8"].startswith("int8 net changed shapes")
    assert set(result["peak"]) == {"fp32"}  # no int8 peak without an int8 time
