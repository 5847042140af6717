"""The CPU this process runs on, as /proc/cpuinfo names it: its model name and its instruction-set flags.

One reader for the three places that need it: provenance records (``device``), the forward benchmark (its
device name and the instruction sets that decide its peak) and ``precision: auto`` (bf16 where the CPU has
bf16 dot products). Where there is no /proc/cpuinfo the name is the platform's and the flags are empty.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

PROC_CPUINFO = "/proc/cpuinfo"
# Instruction-set extensions that decide which kernels (and how fast) torch runs on an x86 CPU: AVX2/FMA,
# AVX-512, its VNNI and bf16 dot products, AMX tiles.
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")


def parse(text: str) -> tuple[str, set[str]]:
    """The first ``model name`` and the first ``flags`` set in the text of a /proc/cpuinfo ("" and {} if absent)."""
    name, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return name, flags or set()


def read(path: str | os.PathLike = PROC_CPUINFO) -> tuple[str, set[str]]:
    """``parse`` of the file at ``path``; the platform's processor name and no flags where it cannot be read."""
    try:
        name, flags = parse(Path(path).read_text())
    except OSError:
        name, flags = "", set()
    return name or platform.processor() or platform.machine(), flags


def cpu_flags(path: str | os.PathLike = PROC_CPUINFO) -> set[str]:
    """Every instruction-set flag of this machine's CPU (empty where /proc/cpuinfo is unavailable)."""
    return read(path)[1]


def cpu_info(path: str | os.PathLike = PROC_CPUINFO) -> dict:
    """``{"name", "cpu_flags"}``: the CPU model name and which of ``CPU_FLAGS`` it has, in that order."""
    name, flags = read(path)
    return {"name": name, "cpu_flags": [f for f in CPU_FLAGS if f in flags]}
