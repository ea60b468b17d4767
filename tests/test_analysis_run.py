"""`kdyn analyze RUN` end to end on a hand-made run directory: files, columns, summary, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from kdyn.analysis import analyze, load_run
from kdyn.analysis.commands import register
from kdyn.errors import KdynError
from kdyn.io import write_json, write_jsonl, write_parquet

STEPS = [0, 10, 20]
# probe_id: (kind, probe_type, k, fact_id, correct at 0, 10, 20)
PROBES = {
    "new-cloze": ("new", "cloze", 0, "f1", [0, 1, 1]),
    "new-qa": ("new", "qa", 0, "f1", [0, 0, 1]),
    "new-mcq": ("new", "mcq", 4, "f1", [0, 1, 1]),
    "known-a": ("known", "cloze", 0, "f2", [1, 1, 0]),
    "known-b": ("known", "cloze", 0, "f3", [0, 0, 1]),
    "skill": ("skill", "arithmetic", 0, None, [1, 1, 0]),
}
FACTS = {"f1": ("e1", "new"), "f2": ("e2", "known"), "f3": ("e2", "known")}
DESIGN_TRANSITIONS = ["kind", "probe_type", "from_step", "to_step", "n", "n_1to0", "n_0to1", "acc_from", "acc_to",
                      "forgetting", "backward_transfer", "forgetting_adj", "backward_transfer_adj"]  # fmt: skip
DESIGN_TRAJECTORIES = ["probe_id", "first_acquired_step", "windows", "flips", "consolidated", "final_correct"]


def probes_frame() -> pd.DataFrame:
    rows = []
    for pid, (kind, ptype, k, fact, correct) in PROBES.items():
        for j, step in enumerate(STEPS):
            rows.append({"step": step, "epoch": float(j), "probe_id": pid, "kind": kind, "probe_type": ptype,
                         "fact_id": fact, "k": k, "logprob": -3.0 + correct[j], "first_token_rank": 0,
                         "greedy": "x", "em": bool(correct[j]), "contains": bool(correct[j]),
                         "rouge1_recall": float(correct[j]), "choice": 0, "correct": bool(correct[j])})  # fmt: skip
    return pd.DataFrame(rows)


def make_run(root: Path, probes: pd.DataFrame | None = None, bench: bool = True) -> Path:
    run = root / "run"
    write_parquet(run / "probes.parquet", pa.Table.from_pandas(probes if probes is not None else probes_frame(),
                                                               preserve_index=False))  # fmt: skip
    if bench:
        write_jsonl(run / "bench" / "probes.jsonl", [
            {"probe_id": pid, "fact_id": fact, "family": "skill" if kind == "skill" else "knowledge", "kind": kind,
             "probe_type": ptype, "k": k, "prompt": "?", "target": "x"}
            for pid, (kind, ptype, k, fact, _) in PROBES.items()])  # fmt: skip
        write_jsonl(run / "bench" / "facts.jsonl", [
            {"fact_id": f, "entity_id": e, "kind": kind, "relation": "r", "exposures": 2}
            for f, (e, kind) in FACTS.items()])  # fmt: skip
    write_parquet(run / "train_log.parquet", pa.table({"step": [5, 10, 15, 20], "epoch": [0.5, 1, 1.5, 2],
                                                       "loss": [3.0, 2.0, 1.5, 1.0], "lr": [1e-4] * 4,
                                                       "grad_norm": [1.0] * 4, "tokens": [1, 2, 3, 4],
                                                       "seconds": [1.0, 2, 3, 4]}))  # fmt: skip
    write_parquet(run / "fact_loss.parquet", pa.table({"step": [0, 10, 20] * 3,
                                                       "fact_id": ["f1"] * 3 + ["f2"] * 3 + ["f3"] * 3,
                                                       "nll": [5.0, 2.0, 1.0, 1.0, 1.5, 3.0, 4.0, 3.0, 1.0]}))  # fmt: skip
    (run / "config.yaml").write_text("model: smollm2-135m-instruct\nstrategy: {lora: {r: 8}, replay: null}\nseed: 3\n")
    write_json(run / "manifest.json", {"model": "smollm2-135m-instruct", "status": "complete"})
    return run


def test_analyze_writes_every_table_with_the_design_columns(tmp_path):
    run = make_run(tmp_path)
    result = analyze(run, bootstrap=200)
    out = run / "analysis"
    for name in ("transitions", "fuar", "trajectories", "consolidation", "epoch_counts", "curves",
                 "loss_knowledge", "stepwise", "retainability"):  # fmt: skip
        assert (out / f"{name}.parquet").is_file(), name
    transitions = pq.read_table(out / "transitions.parquet").to_pandas()
    assert list(transitions.columns[:4]) == DESIGN_TRANSITIONS[:4]
    assert set(DESIGN_TRANSITIONS) <= set(transitions.columns)
    assert set(DESIGN_TRAJECTORIES) <= set(pq.read_schema(out / "trajectories.parquet").names)
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert result.out_dir == out


def test_analyze_numbers_and_summary(tmp_path):
    run = make_run(tmp_path)
    analyze(run, bootstrap=200)
    summary = json.loads((run / "analysis" / "summary.json").read_text())  # strict JSON: no NaN
    assert summary["checkpoints"] == STEPS and summary["final_step"] == 20
    assert summary["meta"] == {"run": "run", "model": "smollm2-135m-instruct", "strategy": "lora", "seed": 3}
    m = {(x["name"], x["kind"], x["probe_type"], x["step"]): x for x in summary["metrics"]}
    known = m[("forgetting", "known", "cloze", 20)]
    assert known["value"] == 1.0 and known["n"] == 1  # only the base-correct known probe counts
    assert m[("backward_transfer", "known_wrong_at_base", "cloze", 20)]["value"] == 1.0
    assert m[("skill_accuracy_drop", "skill", "arithmetic", 20)]["value"] == 1.0
    rel = m[("relative_forgetting", "new", "cloze", 20)]
    assert rel["value"] is None and "accuracy at the base is 0" in rel["reason"]
    acc = m[("accuracy", "new", "mcq", 20)]
    assert acc["value"] == 1.0 and acc["ci"][1] == 1.0 and acc["ci"][0] < 0.5  # 1 of 1: Wilson, not [1, 1]
    assert m[("accuracy_adj", "new", "mcq", 20)]["value"] == 1.0
    traj = pq.read_table(run / "analysis" / "trajectories.parquet").to_pandas().set_index("probe_id")
    assert traj.loc["new-qa", "first_acquired_step"] == 20 and traj.loc["known-a", "flips"] == 1
    assert traj.loc["known-b", "kind"] == "known_wrong_at_base"
    epochs = pq.read_table(run / "analysis" / "epoch_counts.parquet").to_pandas()
    entity = epochs[(epochs["level"] == "entity") & (epochs["kind"] == "known") & (epochs["probe_type"] == "cloze")]
    assert list(entity["n_learned"]) == [0, 0, 0]  # e2: rouge means .5, .5, .5 < 0.6
    lk = pq.read_table(run / "analysis" / "loss_knowledge.parquet").to_pandas().set_index(["kind", "probe_type"])
    assert lk.loc[("new", "cloze"), "loss_optimal_step"] == 20


def test_analyze_is_deterministic(tmp_path):
    run = make_run(tmp_path)
    analyze(run, bootstrap=100)
    first = (run / "analysis" / "summary.json").read_bytes()
    analyze(run, bootstrap=100)
    assert (run / "analysis" / "summary.json").read_bytes() == first


def test_metadata_falls_back_to_probes_parquet_columns(tmp_path):
    res = load_run(make_run(tmp_path, bench=False))
    assert dict(zip(res.items["item_id"], res.items["kind"]))["skill"] == "skill"
    assert dict(zip(res.items["item_id"], res.items["k"]))["new-mcq"] == 4


def expect_error(tmp_path, probes: pd.DataFrame, *phrases: str) -> None:
    run = make_run(tmp_path, probes)
    with pytest.raises(KdynError) as info:
        analyze(run)
    message = str(info.value)
    assert str(run / "probes.parquet") in message
    for phrase in phrases:
        assert phrase in message
    assert "\n" not in message


def test_missing_column_names_it_and_the_file(tmp_path):
    expect_error(tmp_path, probes_frame().drop(columns=["correct"]), "missing column(s) correct")


def test_duplicate_rows_are_refused(tmp_path):
    probes = probes_frame()
    expect_error(tmp_path, pd.concat([probes, probes.iloc[[4]]]), "1 duplicate row(s)", "'new-qa' at step 10")


def test_checkpoints_covering_different_items_are_refused(tmp_path):
    probes = probes_frame()
    probes = probes[~((probes["probe_id"] == "skill") & (probes["step"] == 20))]
    expect_error(tmp_path, probes, "checkpoints cover different items", "step 20 lacks 1 of 6 items", "'skill'")


def test_missing_base_and_bad_correct_values_are_refused(tmp_path):
    probes = probes_frame()
    expect_error(tmp_path, probes[probes["step"] > 0], "no step 0")
    bad = probes_frame()
    bad["correct"] = bad["correct"].map({True: "true", False: "false"})  # strings are read too...
    bad.loc[3, "correct"] = "maybe"  # ...but only true / false / 0 / 1
    expect_error(tmp_path, bad, "'correct' must be true/false or 0/1", "'maybe'")


def test_probe_missing_from_the_bench_copy_is_refused(tmp_path):
    probes = probes_frame()
    probes.loc[probes["probe_id"] == "skill", "probe_id"] = "skill-2"
    run = make_run(tmp_path, probes)
    with pytest.raises(KdynError, match=r"scores probe 'skill-2' that is not in .*bench/probes.jsonl"):
        analyze(run)


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_analyze_prints_tables_and_writes_files(tmp_path):
    run = make_run(tmp_path)
    result = CliRunner().invoke(cli(), ["analyze", str(run), "--bootstrap", "100"])
    assert result.exit_code == 0, result.output
    assert "Knowledge dynamics" in result.output and "FUAR" in result.output
    assert (run / "analysis" / "summary.json").is_file()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(cli(), ["analyze", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: run directory not found: {tmp_path / 'nope'}"
    result = CliRunner().invoke(cli(), ["analyze", str(tmp_path), "--metric", "acc"])
    assert result.exit_code == 2 and "go with --from" in result.stderr
