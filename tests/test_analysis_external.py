"""`kdyn analyze --from FILE... --out DIR`: generic tables and lm-evaluation-harness --log_samples files.

The lm-eval files below follow the harness's own writer (EvaluationTracker.save_results_samples): one JSON
object per document with doc_id, doc, target, arguments as {gen_args_i: {arg_j: ...}}, resps and
filtered_resps with every leaf turned into a string, filter, metrics, the three hashes and one key per
metric; the file sits under OUTPUT/<sanitized model path>/samples_<task>_<date>.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from kdyn.analysis import analyze, analyze_external, load_external
from kdyn.analysis.commands import register
from kdyn.errors import KdynError
from kdyn.io import write_parquet

DATE = "2024-06-01T10-00-00.123456"
ARC = {0: [0, 1, 1], 1: [1, 0, 0], 2: [1, 1, 1]}  # doc → acc at checkpoints 0, 100, 200


def arc_line(doc_id: int, correct: int) -> dict:
    choices = [" dry palms", " wet palms", " palms covered with oil", " palms covered with lotion"]
    target = 0
    ll = [-3.0, -5.5, -6.25, -7.0] if correct else [-9.0, -2.5, -6.25, -7.0]
    return {
        "doc_id": doc_id,
        "doc": {"id": f"Mercury_{doc_id}", "question": "Which surface causes the most heat?",
                "choices": {"text": [c.strip() for c in choices], "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
        "target": target,
        "arguments": {f"gen_args_{i}": {"arg_0": "Question: Which surface causes the most heat?\nAnswer:", "arg_1": c}
                      for i, c in enumerate(choices)},
        "resps": [[[str(v), "False"]] for v in ll],
        "filtered_resps": [[str(v), "False"] for v in ll],
        "filter": "none",
        "metrics": ["acc", "acc_norm"],
        "doc_hash": "9f2c", "prompt_hash": "1b7e", "target_hash": "5feceb",
        "acc": float(correct), "acc_norm": float(correct),
    }  # fmt: skip


def gsm_lines(doc_id: int, strict: int, flexible: int) -> list[dict]:
    base = {"doc_id": doc_id, "doc": {"question": "Janet's ducks lay 16 eggs...", "answer": "... #### 18"},
            "target": "... #### 18",
            "arguments": {"gen_args_0": {"arg_0": "Question: Janet's ducks lay 16 eggs...\nAnswer:",
                                         "arg_1": {"until": ["Question:", "</s>"], "do_sample": False}}},
            "resps": [["She makes 9 * 2 = $18 every day. #### 18"]], "metrics": ["exact_match"],
            "doc_hash": "aa", "prompt_hash": "bb", "target_hash": "cc"}  # fmt: skip
    return [base | {"filtered_resps": ["18"], "filter": "strict-match", "exact_match": float(strict)},
            base | {"filtered_resps": ["18"], "filter": "flexible-extract", "exact_match": float(flexible)}]


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def lm_eval_outputs(root: Path) -> list[Path]:
    """evals/step-<N>/<sanitized model path>/samples_arc_easy_<date>.jsonl for N = 0, 100, 200."""
    files = []
    for j, step in enumerate((0, 100, 200)):
        model_dir = root / f"step-{step}" / f"runs__quick__checkpoints__step-{step:06d}"
        files.append(write_lines(model_dir / f"samples_arc_easy_{DATE}.jsonl",
                                 [arc_line(d, c[j]) for d, c in ARC.items()]))  # fmt: skip
    return files


def test_lm_eval_log_samples_give_the_expected_transitions(tmp_path):
    files = lm_eval_outputs(tmp_path / "evals")
    result = analyze_external([str(f) for f in files], tmp_path / "out", bootstrap=100)
    res = result.results
    assert list(res.steps) == [0, 100, 200]
    assert list(res.items["item_id"]) == ["arc_easy/0", "arc_easy/1", "arc_easy/2"]
    assert set(res.items["k"]) == {4} and set(res.items["probe_type"]) == {"arc_easy"}
    assert res.score[0].tolist() == [-9.0, -3.0, -3.0]  # log-likelihood of the target option
    table = pq.read_table(tmp_path / "out" / "analysis" / "transitions.parquet").to_pandas()
    final = table[(table["from_step"] == 0) & (table["to_step"] == 200)].iloc[0]
    assert (final["n"], final["n_1to0"], final["n_0to1"]) == (3, 1, 1)
    assert final["forgetting"] == pytest.approx(1 / 3) and final["backward_transfer"] == pytest.approx(1 / 3)
    assert final["acc_from"] == pytest.approx(2 / 3) and final["acc_to"] == pytest.approx(2 / 3)
    chance = (1 / 3) * (1 / 3) / 3  # k = 4 from the four log-likelihood requests
    assert final["forgetting_adj"] == pytest.approx(1 / 3 - chance)
    traj = pq.read_table(tmp_path / "out" / "analysis" / "trajectories.parquet").to_pandas().set_index("probe_id")
    assert traj.loc["arc_easy/0", "first_acquired_step"] == 100
    assert not traj.loc["arc_easy/1", "consolidated"]
    # the import folder works like a run directory afterwards
    again = analyze(tmp_path / "out", bootstrap=100)
    assert list(again.results.steps) == [0, 100, 200]


def test_lm_eval_checkpoint_can_be_given_and_filters_must_be_chosen(tmp_path):
    a = write_lines(tmp_path / "a" / f"samples_gsm8k_{DATE}.jsonl", gsm_lines(0, 0, 1) + gsm_lines(1, 1, 1))
    b = write_lines(tmp_path / "b" / f"samples_gsm8k_{DATE}.jsonl", gsm_lines(0, 1, 1) + gsm_lines(1, 0, 1))
    with pytest.raises(KdynError, match="several filters .*strict-match, flexible-extract.*--filter"):
        load_external([f"0={a}", f"50={b}"])
    res = load_external([f"0={a}", f"step-50={b}"], filter_name="strict-match")
    assert list(res.steps) == [0, 50]
    assert res.correct.tolist() == [[False, True], [True, False]]
    assert set(res.items["k"]) == {0}  # generation task: open question
    with pytest.raises(KdynError, match="no filter 'strict'.*did you mean 'strict-match'"):
        load_external([f"0={a}", f"50={b}"], filter_name="strict")


def test_lm_eval_errors_name_the_file(tmp_path):
    lines = [arc_line(0, 1) | {"f1": 0.5}]
    f = write_lines(tmp_path / "nowhere" / f"samples_arc_easy_{DATE}.jsonl", lines)
    with pytest.raises(KdynError, match=r"cannot tell which checkpoint .* CKPT=FILE"):
        load_external([str(f)])
    with pytest.raises(KdynError, match=r"line 1: metric 'f1' is 0.5, not 0/1"):
        load_external([f"0={f}", f"1={f}"], metric="f1")
    with pytest.raises(KdynError, match=r"no metric 'ac'.*did you mean 'acc'"):
        load_external([f"0={f}"], metric="ac")


def long_table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "checkpoint", "correct", "k", "kind", "probe_type", "score"])


ROWS = [(item, ckpt, c, 0, "new", "qa", -1.0 * (1 - c))
        for item, cs in {"a": [0, 1, 1], "b": [1, 1, 0], "c": [0, 0, 0]}.items()
        for ckpt, c in zip(["step-5", "step-10", "step-100"], cs)]  # fmt: skip


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_generic_tables_in_each_format(tmp_path, suffix):
    frame = long_table(ROWS)
    path = tmp_path / f"results.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        write_parquet(path, pa.Table.from_pandas(frame, preserve_index=False))
    result = analyze_external([str(path)], tmp_path / "out", bootstrap=50)
    assert list(result.results.steps) == [5, 10, 100]  # numeric order, not text order
    t = result.tables["transitions"]
    final = t[(t["from_step"] == 5) & (t["to_step"] == 100)].iloc[0]
    assert (final["n_1to0"], final["n_0to1"]) == (1, 1)
    assert json.loads((tmp_path / "out" / "import.json").read_text())["sources"] == [str(path)]


def test_generic_table_errors_name_the_problem_and_the_file(tmp_path):
    frame = long_table(ROWS)
    path = tmp_path / "r.csv"
    frame.drop(columns=["correct"]).to_csv(path, index=False)
    with pytest.raises(KdynError, match=rf"{path} is missing column\(s\) correct"):
        load_external([str(path)])
    pd.concat([frame, frame.iloc[[0]]]).to_csv(path, index=False)
    with pytest.raises(KdynError, match=rf"{path} has 1 duplicate row\(s\) for the same item_id and checkpoint"):
        load_external([str(path)])
    frame.iloc[:-1].to_csv(path, index=False)
    with pytest.raises(KdynError, match=rf"{path}: checkpoints cover different items \(checkpoint 100 lacks 1 of 3"):
        load_external([str(path)])
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    frame[frame["checkpoint"] == "step-5"].drop(columns=["checkpoint"]).to_csv(one, index=False)
    later = frame[(frame["checkpoint"] == "step-10") & (frame["item_id"] != "c")]
    later.drop(columns=["checkpoint"]).to_csv(two, index=False)
    with pytest.raises(KdynError, match=r"the files given to --from .*one.csv.*two.csv.*cover different items"):
        load_external([f"5={one}", f"10={two}"])
    with pytest.raises(KdynError, match="unsupported file type '.txt'"):
        (tmp_path / "x.txt").write_text("hi")
        load_external([str(tmp_path / "x.txt")])


def test_import_refuses_to_overwrite_a_run(tmp_path):
    run = tmp_path / "run"
    write_parquet(run / "probes.parquet", pa.table({"step": [0]}))
    path = tmp_path / "r.csv"
    long_table(ROWS).to_csv(path, index=False)
    with pytest.raises(KdynError, match="already holds a run"):
        analyze_external([str(path)], run)


def test_cli_from_files(tmp_path):
    files = lm_eval_outputs(tmp_path / "evals")
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["analyze", "--from", *map(str, files), "--out", str(tmp_path / "o"),
                                      "--bootstrap", "50"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "analysis" / "summary.json").is_file()
    result = CliRunner().invoke(app, ["analyze", "--from", str(files[0])])
    assert result.exit_code == 2 and "--out DIR" in result.stderr
