"""One reader of /proc/cpuinfo for provenance, the benchmark and ``precision: auto``."""

import torch

from segbench.evaluation import benchmark
from segbench.infra import cpuinfo, precision, provenance

XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse avx2 avx512f amx_bf16 avx512_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu\n")
EPYC_NO_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu avx avx2 fma\n"


def test_the_first_cpu_name_and_listed_flags_in_a_fixed_order(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(XEON)
    assert cpuinfo.parse(XEON) == ("Intel(R) Xeon(R) Platinum 8480+",
                                   {"fpu", "sse", "avx2", "avx512f", "amx_bf16", "avx512_bf16", "amx_tile"})
    assert cpuinfo.cpu_info(fake) == {"name": "Intel(R) Xeon(R) Platinum 8480+",
                                      "cpu_flags": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]}
    assert cpuinfo.parse("processor\t: 0\n") == ("", set())
    absent = cpuinfo.read(tmp_path / "absent")
    assert absent[1] == set() and absent[0]  # the platform's name stands in


def test_provenance_benchmark_and_precision_read_the_same_cpu(monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    assert provenance.hardware("cpu")["name"] == benchmark.device_name(cpu) == cpuinfo.read()[0]
    assert provenance.hardware("cpu")["cpu_flags"] == benchmark.instruction_sets(cpu) == cpuinfo.cpu_info()["cpu_flags"]
    for text, auto in ((XEON, "bf16"), (EPYC_NO_BF16, "fp32")):
        fake = tmp_path / "cpuinfo"
        fake.write_text(text)
        monkeypatch.setattr(precision, "cpu_flags", lambda: cpuinfo.cpu_flags(fake))
        assert precision.resolve("auto", cpu) == auto
        assert benchmark.instruction_sets(cpu, text) == cpuinfo.cpu_info(fake)["cpu_flags"]
