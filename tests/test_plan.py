"""`kdyn plan`: its formulas against independent computations (scipy's Wilson interval, seeded simulations of
McNemar's and the two-sample test), and its verdicts on the tiny config and a built-in suite."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest
from typer.testing import CliRunner

from kdyn import plan
from kdyn.analysis import power
from kdyn.cli import app


@pytest.mark.parametrize("n", [10, 24, 80, 200])
def test_wilson_halfwidth_matches_scipy(n):
    lo, hi = binomtest(n // 2, n).proportion_ci(method="wilson")
    assert power.wilson_halfwidth(n, (n // 2) / n) == pytest.approx((hi - lo) / 2, abs=1e-12)
    assert math.isnan(power.wilson_halfwidth(0))


def simulated_power(n: int, p10: float, p01: float, reps: int = 40_000, seed: int = 0) -> float:
    """Share of simulated experiments in which McNemar's test (z = (b − c)/√(b + c), no correction) rejects at 5%."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=reps)
    b, c = counts[:, 0], counts[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(b + c > 0, (b - c) / np.sqrt(b + c), 0.0)
    return float(np.mean(np.abs(z) > 1.959964))


@pytest.mark.parametrize("n", [100, 300])
def test_mcnemar_mdd_has_80_percent_power_in_simulation(n):
    psi = 0.5
    delta = power.mdd_paired(n, psi)
    assert 0 < delta < psi
    assert simulated_power(n, (psi + delta) / 2, (psi - delta) / 2) == pytest.approx(0.80, abs=0.025)
    assert power.n_for_paired(delta, psi) in (n, n + 1)  # the inverse formula gives the n back


def test_two_sample_mdd_has_80_percent_power_in_simulation():
    n1, n2 = 150, 90
    d = power.mdd_groups(n1, n2)
    rng = np.random.default_rng(1)
    a = rng.binomial(n1, 0.5 + d / 2, size=40_000) / n1
    b = rng.binomial(n2, 0.5 - d / 2, size=40_000) / n2
    z = (a - b) / np.sqrt(0.25 * (1 / n1 + 1 / n2))
    assert float(np.mean(np.abs(z) > 1.959964)) == pytest.approx(0.80, abs=0.025)


def test_too_few_items_detect_nothing():
    assert math.isnan(power.mdd_paired(6))  # even δ = ψ needs more than 6 pairs
    assert math.isnan(power.mdd_paired(13)) and power.mdd_paired(14) < 0.5  # docs/metrics.md: null for n ≤ 13
    assert power.n_for_halfwidth(0.10) == 93 and power.wilson_halfwidth(93) <= 0.10 < power.wilson_halfwidth(92)


def test_plan_of_the_tiny_config_counts_its_groups():
    p = plan.make_plan("tiny").as_json()
    groups = {(g["kind"], g["probe_type"]): g for g in p["groups"]}
    assert groups[("known", "qa")]["n"] == 9 and groups[("known", "qa")]["n_is"].startswith("all known probes")
    assert groups[("new", "cloze")]["mdd_paired"] is None or groups[("new", "cloze")]["mdd_paired"] > 0.3
    verdicts = {c["claim"]: c["verdict"] for c in p["claims"]}
    assert verdicts["H1"] == "cannot decide" and "M4" in verdicts
    json.dumps(p, allow_nan=False)  # plain JSON: no NaN


def test_plan_cli_json_and_suite_claims():
    result = CliRunner().invoke(app, ["plan", "strategies", "--json"])
    assert result.exit_code == 0, result.output
    p = json.loads(result.output)
    assert {"groups", "circuits", "claims"} <= p.keys()
    claims = {c["claim"] for c in p["claims"]}
    assert {"H3", "Z1", "Z2", "Z3", "Z4"} <= claims  # the suite's strategy axis addresses them
    bad = CliRunner().invoke(app, ["plan", "tiny", "--effect", "2"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output


def test_plan_of_run_takes_kinds_from_the_bench_and_refuses_a_folder_without_results(tmp_path):
    """A run whose probes.parquet holds only ids and correctness (e.g. a synthetic run) is sized from bench/probes.jsonl;
    a folder without results is one clear error, not a traceback."""
    from kdyn.analysis.synthetic import write_synthetic_run
    from kdyn.errors import KdynError
    from kdyn.io import read_jsonl

    run = write_synthetic_run(tmp_path / "syn", n_items=300, n_checkpoints=2)
    groups = {(g.kind, g.probe_type): g for g in plan.plan_of_run(run).groups}
    bench = read_jsonl(run / "bench" / "probes.jsonl")
    assert sum(g.n_all or g.n for g in groups.values()) == len(bench) == 300
    assert groups[("new", "cloze")].n == sum(p["kind"] == "new" and p["probe_type"] == "cloze" for p in bench)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdynError, match="no probes.parquet"):
        plan.plan_of_run(tmp_path / "empty")


def test_verdicts_say_why_nothing_is_detectable_instead_of_printing_nan():
    groups = [plan.Group("new", t, 6) for t in ("cloze", "qa")] + [plan.Group("related", t, 0) for t in ("cloze", "qa")]
    groups += [plan.Group("updated", t, 40) for t in ("cloze", "qa")]
    p = plan.Plan("test", groups, {"cloze": {"low": 30, "medium": 10}, "qa": {"low": 30, "medium": 10}}, [])
    out = {c["claim"]: c for c in plan.claims(p, ["M4", "D1", "D2"], None, 0.2, 0.1)}
    assert all("nan" not in c["why"] for c in out.values()), out
    assert "too small to detect even the largest paired difference" in out["M4"]["why"]
    assert "too small to detect any difference (or a kind has no probes)" in out["D1"]["why"]
    # exponential exposure with no fact at ≥ 6 copies: the high bucket is empty, not "fixed exposure"
    assert "high (6+ copies) bucket is empty" in out["D2"]["why"] and "fixed" not in out["D2"]["why"]


def test_a_difference_beyond_1_is_nothing_detectable():
    """Two rates differ by at most 1: tiny groups detect nothing (the strategies suite's D2 read "≥ 1.43")."""
    assert math.isnan(power.mdd_groups(2, 3)) and power.mdd_groups(40, 40) < 1
    p = plan.Plan("test", [plan.Group("new", "cloze", 20)], {"cloze": {"low": 2, "high": 3}}, [])
    (d2,) = plan.claims(p, ["D2"], None, 0.2, 0.1)
    assert "2 low and 3 high-exposure probes are too few to detect any difference" in d2["why"] and "nan" not in d2["why"]
