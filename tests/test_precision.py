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


# ---- probing precision ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx2 fma", torch.float32),
    ("avx2 avx512f avx512_bf16 avx512_vnni", torch.bfloat16),
    ("avx2 avx512f amx_bf16 amx_tile amx_int8", torch.bfloat16),
])  # fmt: skip
def test_probing_auto_precision_follows_the_cpu_flags(cpu_flags, tiny_lm, flags, expected):
    """`probe.precision: auto` (the default) scores with bf16 weights on CPUs with native bf16, fp32 elsewhere;
    the fp32 weights come back bit for bit (probing mid-training must not round the master weights)."""
    from kdyn.bench.schema import Probe
    from kdyn.probe.scorer import ScoreConfig, probe_precision, score_probes

    cpu_flags(flags)
    model = tiny_lm.model
    assert ScoreConfig().precision == "auto" and probe_precision(ScoreConfig(), model) == str(expected).removeprefix("torch.")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _, args, out: seen.append(out.dtype))
    try:
        score_probes(model, tiny_lm.tokenizer, [Probe("p", "f", "knowledge", "new", "cloze", "Ava was born in", False, "Lisbon")])
    finally:
        hook.remove()
    assert seen and set(seen) == {expected}
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[name]), name


def test_manifest_records_the_probe_precision(cpu_flags, tmp_path):
    """Training precision and probing precision are recorded apart: fp32 training, bf16 probing (auto)."""
    cpu_flags("avx2 avx512f avx512_bf16")
    overrides = SMALL + ["train.precision=float32", "probe.precision=auto"]
    assert train(load_experiment("tiny", overrides), tmp_path / "run", show_progress=False)["status"] == "complete"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["precision"], manifest["probe_precision"]) == ("float32", "bfloat16")


def test_compare_warns_when_runs_were_probed_in_different_precisions(tmp_path):
    from kdyn.analysis.comparison import compare
    from kdyn.analysis.synthetic import write_synthetic_run

    for name, precision in (("a", "float32"), ("b", "bfloat16"), ("c", "float32")):
        run = write_synthetic_run(tmp_path / name, n_items=60, n_checkpoints=2, checkpoints_per_epoch=1, seed=0)
        (run / "manifest.json").write_text(json.dumps({"probe_precision": precision}))
    (warning,) = compare([tmp_path / "a", tmp_path / "b"], bootstrap=20).warnings
    assert "different precisions (a: float32, b: bfloat16)" in warning
    assert compare([tmp_path / "a", tmp_path / "c"], bootstrap=20).warnings == []


def test_probe_cli_takes_a_precision(tiny_bench, tmp_path):
    from typer.testing import CliRunner

    from kdyn.cli import app

    args = ["probe", "--model", "tiny-random-llama", "--bench", str(tiny_bench), "--out", str(tmp_path / "r.parquet")]
    bad = CliRunner().invoke(app, [*args, "--precision", "fp16"])
    assert bad.exit_code == 2 and "precision must be auto, float32 or bfloat16, got 'fp16'" in bad.output
    assert not (tmp_path / "r.parquet").exists()
    assert CliRunner().invoke(app, [*args, "--precision", "float32"]).exit_code == 0
    assert pq.read_table(tmp_path / "r.parquet").num_rows > 0


def test_probing_mid_bf16_training_runs_in_the_probe_precision(tiny_lm):
    """Accelerate's bf16 wrapper (autocast inside `forward`, kept by `unwrap_model`) is off while probing, so
    probe.precision=float32 during bf16 training is fp32 (it was bf16 autocast, whatever the manifest said);
    the wrapper is back afterwards for training."""
    import copy

    from kdyn.bench.schema import Probe
    from kdyn.probe.scorer import ScoreConfig, score_probes
    from kdyn.train.config import TrainConfig
    from kdyn.train.session import make_accelerator

    acc = make_accelerator(TrainConfig(precision="bfloat16"), "", [])
    model = acc.unwrap_model(acc.prepare(copy.deepcopy(tiny_lm.model)))
    wrapped = model.forward
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda _, args, out: seen.append(out.dtype))  # logits' dtype
    probe = Probe("p", "f", "knowledge", "new", "cloze", "Ava was born in", False, "Lisbon")
    score_probes(model, tiny_lm.tokenizer, [probe], ScoreConfig(precision="float32"))
    assert seen and set(seen) == {torch.float32}
    assert model.forward == wrapped
    seen.clear()
    model(input_ids=torch.tensor([[5, 6, 7]]))
    assert seen == [torch.bfloat16]  # training's forward: still autocast
