"""Precision: `auto` decided from the CPU's flags (mocked here, so the outcome never depends on the host), and
training twice in one process with two precisions (a notebook, this test suite, `kdyn run` then `kdyn train`).

bf16 autocast runs on every CPU (only slower on AVX2-only ones), so both paths are exercised everywhere."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from kdyn import device
from kdyn.experiment import load_experiment
from kdyn.train import train

SMALL = ["train.epochs=1", "train.batch_size=4", "train.seq_len=128"]


@pytest.fixture
def cpu_flags(monkeypatch, tmp_path):
    """Point `cpu_has_fast_bf16` at a fake /proc/cpuinfo with the given flags."""

    def set_flags(flags: str) -> None:
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(device, "Path", lambda _: fake)
        device.cpu_has_fast_bf16.cache_clear()

    yield set_flags
    device.cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 fma", "float32"),                       # AVX2-only EPYC: bf16 ~150x slower than fp32
    ("avx2 avx512f avx512_bf16 avx512_vnni", "bfloat16"),  # Zen 4 / Cooper Lake
    ("avx2 avx512f amx_bf16 amx_tile amx_int8", "bfloat16"),  # Sapphire Rapids (AMX)
])  # fmt: skip
def test_auto_precision_follows_the_cpu_flags(cpu_flags, flags, expected):
    cpu_flags(flags)
    assert device.resolve_precision("auto", "cpu") == expected
    assert device.resolve_precision("float32", "cpu") == "float32"  # explicit always wins
    assert device.resolve_precision("bfloat16", "cpu") == "bfloat16"


def test_auto_precision_reaches_the_run(cpu_flags, tmp_path):
    """The run records what `auto` became (float32 on a CPU without fast bf16, whatever this host is)."""
    cpu_flags("fpu sse avx2")
    result = train(load_experiment("tiny", SMALL + ["train.precision=auto"]), tmp_path / "auto", show_progress=False)
    assert result["status"] == "complete"
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["precision"] == "float32"


def test_two_precisions_in_one_process(tmp_path):
    """fp32 then bf16 then fp32 again, in one process without a launcher: each session gets the precision
    it asked for (Accelerate's process-wide state used to refuse the second one)."""
    seen = []
    for i, precision in enumerate(["float32", "bfloat16", "float32"]):
        out = tmp_path / f"run{i}"
        result = train(load_experiment("tiny", SMALL + [f"train.precision={precision}"]), out, show_progress=False)
        assert result["status"] == "complete"
        seen.append(json.loads((out / "manifest.json").read_text())["precision"])
    assert seen == ["float32", "bfloat16", "float32"]
    # the two fp32 runs are the same run: the bf16 session in between left nothing behind
    losses = [pq.read_table(tmp_path / f"run{i}" / "train_log.parquet").column("loss").to_pylist() for i in (0, 2)]
    assert losses[0] == losses[1]
    assert torch.get_autocast_dtype("cpu") is not None  # autocast state is not left switched on
    assert not torch.is_autocast_enabled("cpu")
