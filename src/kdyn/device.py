"""Which device and precision to use. bf16 autocast is ~1.7x faster than fp32 for training on CPUs with
avx512_bf16 / AMX, and several times *slower* on CPUs without them (measured on an AVX2-only EPYC:
16 vs 130 GFLOP/s), so "auto" decides from the hardware instead of assuming."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["auto", "bfloat16", "float32"]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: Precision, device: torch.device | str = "cpu") -> Literal["bfloat16", "float32"]:
    """'auto' → bfloat16 on GPUs that support it and on CPUs with native bf16, else float32."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def default_device() -> str:
    """Where `kdyn probe` and `kdyn circuits` load a model: the GPU when there is one (training has Accelerate)."""
    return "cuda" if torch.cuda.is_available() else "cpu"
