"""benchmarks/gpu_check.py: the GPU check's dry run on the CPU, and its section guard and time budget.

The GPU run needs a GPU (docs/gpu.md); the dry run goes through every section at tiny shapes, so the script keeps
working between GPU sessions. Every precision in it is explicit, so it behaves the same on AVX2-only CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SECTIONS = ["env", "peak", "correctness.probes", "correctness.eap_ig", "correctness.train", "e2e", "cuda.deterministic",
            "train_throughput", "eap_ig", "probing"]  # fmt: skip
CORRECTNESS = ["correctness.probes", "correctness.eap_ig", "correctness.train"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    env = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # a generous budget: on a busy shared CPU no section may be skipped for time (the budget has its own test)
    p = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--cpu-dry-run", "--out", str(out), "--budget", "1200"],
                       env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "gpu_check.txt").read_text().startswith("kdyn gpu_check (cpu-dry-run")
    return json.loads((out / "gpu_check.json").read_text())


def test_dry_run_runs_every_section(dry_run: dict) -> None:
    assert dry_run["mode"] == "cpu-dry-run" and dry_run["passed"] is True
    assert list(dry_run["sections"]) == SECTIONS
    statuses = {name: s["status"] for name, s in dry_run["sections"].items()}
    assert statuses == {**{n: "ok" for n in SECTIONS}, **{n: "passed" for n in CORRECTNESS + ["e2e"]},
                        "cuda.deterministic": "skipped"}, statuses  # fmt: skip
    assert set(dry_run["goals"]) == {"train_mfu_pct", "train_vs_trainer", "eap_ig_seconds"}
    assert all(g["met"] is None and g["value"] is not None for g in dry_run["goals"].values())  # goals apply on a GPU


def test_dry_run_correctness_comparisons_pass(dry_run: dict) -> None:
    for name in CORRECTNESS:
        s = dry_run["sections"][name]
        for comparison in ("fp32_vs_cpu", "bf16_vs_fp32"):
            assert s[comparison]["passed"] is True and s[comparison]["limits"], (name, comparison, s[comparison])
    probes = dry_run["sections"]["correctness.probes"]
    assert probes["fp32_vs_cpu"]["n"] == probes["probes"] > 0 and probes["bf16_vs_fp32"]["logprob_max_abs_diff"] > 0
    train = dry_run["sections"]["correctness.train"]
    assert train["fp32_vs_cpu"]["precision"] == "float32" and train["bf16_vs_fp32"]["precision"] == "bfloat16"
    assert train["fp32_vs_cpu"]["steps"] > 0 and all(r["returncode"] == 0 for r in train["runs"].values())
    e2e = dry_run["sections"]["e2e"]
    assert e2e["status_in_manifest"] == "complete" and e2e["report_html_bytes"] > 0


def test_dry_run_speed_figures(dry_run: dict) -> None:
    t = dry_run["sections"]["train_throughput"]
    assert t["precision"] == "float32" and t["batch"] == [2, 128]
    for trainer in ("kdyn", "trainer"):
        assert t[trainer]["tokens_per_s"] > 0 and t[trainer]["mfu_pct"] > 0 and t[trainer]["peak_memory_gb"] > 0
        assert len(t[trainer]["step_seconds"]) == t["timed_steps"] + t["warmup_steps"]
    assert t["ratio_vs_trainer"] > 0 and t["flops_per_token"] > 0
    assert dry_run["sections"]["probing"]["probes_per_s"] > 0 and dry_run["sections"]["probing"]["float32"]["probes"] == 40
    eap = dry_run["sections"]["eap_ig"]
    assert eap["prompts"] == 4 and eap["seconds"]["attribution"] > 0 and eap["edges"] > 0


def test_a_failing_or_late_section_is_recorded_and_the_rest_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    def boom(ctx: gpu_check.Ctx) -> dict:
        raise ValueError("no such thing")

    monkeypatch.setattr(gpu_check, "SECTIONS", {"boom": boom, "fine": lambda ctx: {"x": 1}, "late": lambda ctx: {}})
    ctx = gpu_check.Ctx(dev=gpu_check.torch.device("cpu"), dry=True, shape=gpu_check.DRY, work=tmp_path, tokenizer=None)
    check = gpu_check.Check(ctx, tmp_path / "out", budget=60.0, only=set())
    check.run("boom", 1)
    check.run("fine", 1)
    check.run("late", 3600)
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    boom_s, fine, late = (report["sections"][n] for n in ("boom", "fine", "late"))
    assert boom_s["status"] == "error" and boom_s["error"] == "ValueError: no such thing"
    assert "raise ValueError" in boom_s["traceback"]
    assert fine["status"] == "ok" and fine["x"] == 1
    assert late["status"] == "skipped" and late["reason"].startswith("time budget:")
    assert report["passed"] is False
    assert "boom                 error    ValueError: no such thing" in (tmp_path / "out" / "gpu_check.txt").read_text()
