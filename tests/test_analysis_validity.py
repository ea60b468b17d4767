"""Validity of the analysis' numbers (issue "Validity", items 2 and 5), end to end: chance adjustment of a
selected known group over all its items, mixed groups, entity-clustered intervals chosen by config,
compositional probes kept out of NLL / exposure, and what summary.json says about each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kdyn.analysis import analyze
from kdyn.analysis.pipeline import analyze_results
from kdyn.analysis.results import Results
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.errors import KdynError
from kdyn.experiment import load_experiment


def metrics(summary: dict) -> dict:
    return {(m["name"], m["kind"], m["probe_type"], m["step"]): m for m in summary["metrics"]}


def known_mcq_results() -> Results:
    # 20 known MCQ items (k = 4): 15 right at the base, 3 of them wrong at 10; 1 of the 5 wrong ones right at 10
    correct = [[1, 1]] * 12 + [[1, 0]] * 3 + [[0, 1]] + [[0, 0]] * 4
    return Results.from_arrays(correct, steps=[0, 10], kind="known", probe_type="mcq", k=4,
                               entity_id=[f"e{i}" for i in range(20)])  # fmt: skip


def test_summary_reports_known_mcq_adjusted_over_all_items_beside_selected_f():
    m = metrics(analyze_results(known_mcq_results(), bootstrap=200).summary)
    assert m[("forgetting", "known", "mcq", 10)]["value"] == pytest.approx(0.2)
    assert m[("forgetting_adj", "known", "mcq", 10)]["value"] == pytest.approx(0.2)  # E = 0 when A(0) = 1
    every = m[("forgetting_adj_all_items", "known", "mcq", 10)]
    assert every["value"] == pytest.approx(0.15 - 0.25 * 0.35 / 3) and every["n"] == 20 and every["ci"] is not None
    assert m[("backward_transfer_adj_all_items", "known", "mcq", 10)]["value"] == pytest.approx(0.05 - 0.25 * 0.35 / 3)


def test_summary_says_why_a_mixed_group_is_not_chance_adjusted():
    res = Results.from_arrays([[0, 1], [1, 1], [0, 0], [1, 0]], steps=[0, 10], kind="new", probe_type="mcq",
                              k=[4, 4, 0, 4])  # fmt: skip
    m = metrics(analyze_results(res, bootstrap=50).summary)
    adj = m[("forgetting_adj", "new", "mcq", 10)]
    assert adj["value"] is None and "mixes 1 open (k = 0) and 3 multiple-choice" in adj["reason"]


def test_bootstrap_unit_comes_from_the_run_config_and_defaults_to_entity(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_items=90, n_checkpoints=3)
    summary = analyze(run, bootstrap=100).summary
    assert summary["bootstrap"]["unit"] == "entity" and "over entities" in summary["bootstrap"]["method"]
    entity = metrics(summary)
    (run / "config.yaml").write_text("model: synthetic\nanalysis: {bootstrap_unit: item}\n", encoding="utf-8")
    summary = analyze(run, bootstrap=100).summary
    assert summary["bootstrap"]["unit"] == "item"
    item = metrics(summary)
    assert all(entity[k]["value"] == item[k]["value"] for k in entity)  # the same numbers, other intervals
    assert any(entity[k]["ci"] != item[k]["ci"] for k in entity if k[0] in ("accuracy", "acc_lost_by_loss_stopping"))
    (run / "config.yaml").write_text("analysis: {bootstrap_unit: fact}\n", encoding="utf-8")
    with pytest.raises(KdynError, match="'analysis.bootstrap_unit' must be item or entity, got 'fact'"):
        analyze(run, bootstrap=10)


def test_experiment_config_has_an_analysis_section():
    cfg = load_experiment("tiny", ["analysis.bootstrap_unit=item", "analysis.bootstrap=200"])
    assert (cfg.analysis.bootstrap_unit, cfg.analysis.bootstrap) == ("item", 200)
    assert load_experiment("tiny").analysis.bootstrap_unit == "entity"
    with pytest.raises(KdynError, match="'analysis.bootstrap_unit' must be one of item, entity"):
        load_experiment("tiny", ["analysis.bootstrap_unit=fact"])


def test_compositional_probes_are_left_out_of_nll_auroc_and_exposure():
    correct = np.array([[0, 1], [0, 0], [0, 1], [1, 0]] * 2, dtype=bool)
    res = Results.from_arrays(correct, steps=[0, 10], kind="new", probe_type=["cloze"] * 4 + ["compositional"] * 4,
                              fact_id=["f1", "f2", "f3", "f4"] * 2, nll=np.tile([[2.0, 0.5], [2.0, 3.0]], (4, 1)))  # fmt: skip
    res.items["exposures"] = [1, 1, 3, 3] * 2  # the compositional rows carry their first hop's count
    analysis = analyze_results(res, bootstrap=50)
    curves = analysis.tables["curves"].set_index(["probe_type", "step"])
    assert np.isfinite(curves.loc[("cloze", 10), "auroc_nll"])
    comp = curves.loc[("compositional", 10)]
    assert np.isnan(comp["auroc_nll"]) and "first hop" in comp["auroc_reason"] and np.isnan(comp["fact_nll"])
    exposure = analysis.tables["exposure"]
    assert set(exposure["probe_type"]) == {"cloze"}
    assert any("leave out 4 compositional probe(s)" in n for n in analysis.summary["notes"])


def test_summary_json_carries_the_interval_reason(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_items=30, n_checkpoints=3)
    analyze(run, bootstrap=100)
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert all("ci_reason" in m for m in summary["metrics"])
    for m in summary["metrics"]:
        if m["ci_reason"]:
            assert m["value"] is not None and m["ci"] is None and "bootstrap replicates" in m["ci_reason"]


def test_cli_bootstrap_unit_option(tmp_path):
    import typer
    from typer.testing import CliRunner

    from kdyn.analysis.commands import register

    app = typer.Typer()
    register(app)
    run = write_synthetic_run(tmp_path / "run", n_items=30, n_checkpoints=2)
    result = CliRunner().invoke(app, ["analyze", str(run), "--bootstrap", "20", "--bootstrap-unit", "item"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "analysis" / "summary.json").read_text())["bootstrap"]["unit"] == "item"
    result = CliRunner().invoke(app, ["analyze", str(run), "--bootstrap-unit", "fact"])
    assert result.exit_code == 2 and "--bootstrap-unit must be 'item' or 'entity', got 'fact'" in result.stderr
