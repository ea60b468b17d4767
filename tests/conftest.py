"""Shared fixtures: the tiny random model, a tiny benchmark built once per session, the real data path."""

from __future__ import annotations

from pathlib import Path

import os

import pytest
import torch

from kdyn.bench.build import build_bench
from kdyn.experiment import load_bench_config
from kdyn.models import load_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    # tiny models: one thread. With two, OpenMP threads spin-wait and tiny matmuls run ~100x slower
    # whenever another process is busy on a 2-core machine. Real-model fixtures raise it again.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lm():
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    build_bench(load_bench_config("tiny"), out)
    return out


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (converted once into ~/.cache/kdyn unless KDYN_CACHE is set)."""
    torch.set_num_threads(os.cpu_count() or 1)
    return load_model("smollm2-135m-instruct")
