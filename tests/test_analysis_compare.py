"""`kdyn compare` and `kdyn query` across several run directories (globs included)."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from kdyn.analysis import analyze
from kdyn.analysis.commands import register
from kdyn.analysis.comparison import compare
from kdyn.analysis.sql import query
from kdyn.analysis.stats import mcnemar
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.errors import KdynError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, seed in (("full-s0", 0), ("full-s1", 1), ("lora-s0", 2)):
        run = write_synthetic_run(root / name, n_items=300, n_checkpoints=4, checkpoints_per_epoch=2, seed=seed)
        strategy = name.split("-")[0]
        (run / "config.yaml").write_text(f"model: synthetic\nstrategy: {strategy}\nseed: {seed}\n")
    analyze(root / "full-s0", bootstrap=100)
    return root


def test_compare_table_seeds_and_paired_tests(runs):
    comp = compare([str(runs / "*")], bootstrap=100)
    assert sorted(comp.runs["run"].unique()) == ["full-s0", "full-s1", "lora-s0"]
    assert set(comp.runs["strategy"]) == {"full", "lora"}
    full = comp.seeds[(comp.seeds["strategy"] == "full") & (comp.seeds["kind"] == "new")
                      & (comp.seeds["probe_type"] == "cloze")].iloc[0]  # fmt: skip
    assert full["n_seeds"] == 2 and full["runs"] == "full-s0, full-s1"
    runs_ = comp.runs
    both = runs_[(runs_["strategy"] == "full") & (runs_["kind"] == "new") & (runs_["probe_type"] == "cloze")]
    assert full["acc_final_mean"] == pytest.approx(both["acc_final"].mean())
    assert full["acc_final_lo"] < full["acc_final_mean"] < full["acc_final_hi"]
    lora = comp.seeds[comp.seeds["strategy"] == "lora"].iloc[0]
    assert lora["n_seeds"] == 1 and np.isnan(lora["acc_final_lo"]) and "one seed" in lora["reason"]
    pairs = set(zip(comp.tests["run_a"], comp.tests["run_b"]))
    assert pairs == {("full-s0", "full-s1"), ("full-s0", "lora-s0"), ("full-s1", "lora-s0")}
    assert ((comp.tests["p_value"] >= 0) & (comp.tests["p_value"] <= 1)).all()


def test_paired_test_matches_mcnemar_on_the_shared_items(runs):
    comp = compare([runs / "full-s0", runs / "lora-s0"], bootstrap=50)
    t = comp.tests[(comp.tests["kind"] == "skill")].iloc[0]
    from kdyn.analysis import load_run

    a, b = load_run(runs / "full-s0"), load_run(runs / "lora-s0")
    mask = (a.items["kind"] == "skill").to_numpy()
    expected = mcnemar(a.correct[mask, -1], b.correct[mask, -1])
    assert (t["only_a"], t["only_b"], t["p_value"]) == (expected.b, expected.c, pytest.approx(expected.p_value))
    assert t["diff"] == pytest.approx(b.correct[mask, -1].mean() - a.correct[mask, -1].mean())


def test_compare_at_a_step_every_run_has(runs):
    comp = compare([runs / "full-s0", runs / "full-s1"], at=20, bootstrap=50)
    assert set(comp.runs["step"]) == {20}
    with pytest.raises(KdynError, match="has no checkpoint at step 25"):
        compare([runs / "full-s0"], at=25)


def test_bad_run_lists_are_refused(runs, tmp_path):
    with pytest.raises(KdynError, match="no run directory .* matches"):
        compare([str(tmp_path / "nothing-*")])
    with pytest.raises(KdynError, match="run directory not found"):
        compare([str(tmp_path / "missing")])


def test_query_views_over_runs_and_analysis(runs):
    frame = query("SELECT run, count(*) AS n FROM probes WHERE step = 0 GROUP BY run ORDER BY run", [runs / "*"])
    assert frame.to_dict("list") == {"run": ["full-s0", "full-s1", "lora-s0"], "n": [300, 300, 300]}
    joined = query("SELECT p.kind, avg(t.flips) AS flips FROM trajectories t JOIN bench_probes p "
                   "ON p.probe_id = t.probe_id AND p.run = t.run GROUP BY ALL", [runs / "*"])  # fmt: skip
    assert len(joined) > 0  # only full-s0 has analysis tables; the view still works
    meta = query("SELECT run, strategy, seed FROM runs ORDER BY run", [runs / "*"])
    assert meta["strategy"].tolist() == ["full", "full", "lora"] and meta["seed"].tolist() == ["0", "1", "2"]
    facts = query("SELECT count(DISTINCT entity_id) AS e FROM facts WHERE run = 'full-s0'", [runs / "full-s0"])
    assert facts["e"][0] > 0


def test_query_errors_are_one_sentence(runs):
    with pytest.raises(KdynError, match=r"query failed: .*nope.*\(views: probes, train_log"):
        query("SELECT * FROM nope", [runs / "full-s0"])


def test_cli_compare_and_query(runs, tmp_path):
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["compare", str(runs / "*"), "--bootstrap", "50", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Paired tests" in result.output and (tmp_path / "compare_tests.parquet").is_file()
    result = CliRunner().invoke(app, ["query", "SELECT count(*) AS n FROM train_log", str(runs / "full-s0"), "--csv"])
    assert result.exit_code == 0 and result.output.splitlines() == ["n", "40"]
    result = CliRunner().invoke(app, ["compare", str(runs / "full-s0"), "--at", "last"])
    assert result.exit_code == 2 and "--at must be 'final' or a step number" in result.stderr
