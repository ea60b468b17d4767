"""`kdyn sweep circuits --smoke` end to end through the real CLI: one run on the tiny random model trains with a
checkpoint per epoch, computes the circuits of both relations (a new-fact and an updated one) at the base and every
checkpoint, and reports them; `kdyn.plan.plan_of_run` reads the run's circuit sizes back."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import yaml

from kdyn.plan import plan_of_run
from kdyn.sweep import load_suite

RELATIONS = ["birth_city", "capital"]


def test_circuits_suite_smoke_runs_both_relations_at_every_checkpoint(tmp_path):
    out = tmp_path / "circuits"
    done = subprocess.run([sys.executable, "-m", "kdyn", "sweep", "circuits", "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sweep 'circuits-smoke': 1 runs (1 complete)" in done.stdout
    run = out / "full-s0"
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["circuits"]["enabled"] and config["circuits"]["relations"] == RELATIONS
    steps = sorted(set(pq.read_table(run / "probes.parquet", columns=["step"]).column("step").to_pylist()))
    assert len(steps) == 3 and len(list((run / "checkpoints").iterdir())) == 2  # base + a checkpoint per epoch
    metrics = pq.read_table(run / "circuit_metrics.parquet").to_pandas()
    assert sorted(zip(metrics["relation"], metrics["step"])) == sorted((r, s) for r in RELATIONS for s in steps)
    assert (metrics["n_prompts"] >= 2).all() and (metrics["n_edges"] > 0).all()
    assert metrics.groupby("relation")["jaccard_edges_prev"].count().tolist() == [2, 2]  # defined after the base
    kinds = {r: {p["kind"] for p in json.loads((run / "circuits" / f"prompts.{r}.json").read_text())["pairs"]}
             for r in RELATIONS}  # fmt: skip
    assert kinds == {"birth_city": {"new"}, "capital": {"updated"}}
    assert 'id="circuits"' in (run / "report.html").read_text(encoding="utf-8")
    circuits = {c["relation"]: c for c in plan_of_run(run).circuits}
    assert set(circuits) == set(RELATIONS) and {c["checkpoints"] for c in circuits.values()} == {3}
    assert [c["prompts_used"] for c in circuits.values()] == [metrics[metrics["relation"] == r]["n_prompts"].min()
                                                              for r in circuits]  # fmt: skip
    # docs/findings_tables.py reads the finished suite: per relation, a row per circuit checkpoint and the claims' lines
    from .test_sweep_smoke import findings_tables

    module = findings_tables()
    assert module.main([str(tmp_path), "--out", str(tmp_path / "tables.md")]) == 0
    text = (tmp_path / "tables.md").read_text()
    assert "## circuits" in text and all(f"### {r}" in text for r in RELATIONS)
    assert all(f"| {s} | " in text for s in steps)
    assert all(f"- {claim}, {r}" in text for claim in ("M7", "D3", "D4") for r in RELATIONS)
    assert "full-s0 entropy: not tested" in text  # 3 circuit points: the change-point test needs 5


def test_circuits_suite_is_three_seeds_of_seven_circuit_points():
    suite = load_suite("circuits")
    assert [p.seed for p in suite.points] == [0, 1, 2]
    cfg = suite.points[0].config
    assert cfg["train"]["epochs"] == 6 and cfg["train"]["checkpoints"] == {"save": True, "keep_last": 0, "every_epochs": 1}
    assert cfg["circuits"]["n_prompts"] >= 64 and len(cfg["circuits"]["relations"]) >= 2
