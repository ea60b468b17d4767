"""Shared fixtures: the tiny random model, a tiny benchmark built once per session, the real data path."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdyn.bench.build import build_bench
from kdyn.experiment import load_bench_config
from kdyn.models import load_model

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    """The real default model (converted once into a session cache unless KDYN_CACHE is set)."""
    return load_model("smollm2-135m-instruct")
