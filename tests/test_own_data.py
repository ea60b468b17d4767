"""A researcher's own facts: `kdyn bench import qa` (with and without a corpus), training on an existing bench
folder (`--bench`), `kdyn export --format lm-eval` read back by `kdyn analyze --from`, the README's worked example,
trailing-whitespace prompts scored as lm-eval scores them, and every bad input of the import."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kdyn.bench.qa_import import cloze_from, import_qa
from kdyn.bench.schema import Probe, load_benchmark
from kdyn.cli import app
from kdyn.probe.prompts import build_rows, render
from kdyn.probe.scorer import score_probes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
OWN = README.split("## Your own data", 1)[1].split("\n## ", 1)[0]
ITEMS = OWN.split("```json", 1)[1].split("```", 1)[0].strip() + "\n"
CORPUS = OWN.split("```text", 1)[1].split("```", 1)[0].strip() + "\n"
COMMANDS = [ln.split("  #", 1)[0].strip() for ln in OWN.split("```bash", 1)[1].split("```", 1)[0].splitlines()]
runner = CliRunner()


def write_inputs(folder: Path) -> tuple[Path, Path]:
    (folder / "minerals.jsonl").write_text(ITEMS, encoding="utf-8")
    (folder / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    return folder / "minerals.jsonl", folder / "corpus.txt"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_import_with_documents_links_facts_and_makes_probes(tmp_path):
    items, corpus = write_inputs(tmp_path)
    manifest = import_qa(items, tmp_path / "bench", corpus, known="none", overrides=["probes.arithmetic=0"])
    bench = load_benchmark(tmp_path / "bench")
    assert manifest["name"] == "minerals"
    facts = bench.facts_by_id
    assert set(facts) == {"zarvite-origin", "zarvite-colour", "quellium-origin", "quellium-colour", "brontite-hardness",
                          "osmid-use"}  # fmt: skip
    docs = {d.doc_id: d for d in bench.documents}
    assert len(docs) == 4 and docs["doc-0001"].fact_ids == ["zarvite-origin", "zarvite-colour"]
    assert facts["osmid-use"].kind == "updated" and facts["osmid-use"].previous_object == "glass"
    assert all(f.exposures == 1 for f in facts.values())  # each stated by one document
    probes = {p.probe_id: p for p in bench.probes}
    assert probes["zarvite-origin-cloze"].prompt == "Zarvite is mostly mined in"  # the statement
    assert probes["quellium-origin-cloze"].prompt == "Quellium, an amber mineral, is mostly mined in"  # cut from the doc
    assert "zarvite-colour-cloze" not in probes  # no sentence ends in "violet"
    assert probes["zarvite-origin-qa"].chat and probes["zarvite-origin-qa"].prompt.startswith("Where is zarvite")
    hardness = probes["brontite-hardness-mcq"]
    assert hardness.options == ["3", "5", "7", "9"] and hardness.answer_index == 2
    osmid = probes["osmid-use-mcq"]
    assert "glass" in osmid.options and osmid.target == "batteries"  # the old value is the first distractor
    mined = probes["zarvite-origin-mcq"]
    assert set(mined.options) == {"Chile", "Mongolia"}  # distractors from the same relation
    assert manifest["warnings"] == []


def test_import_is_byte_identical_and_adds_known_and_arithmetic(tmp_path):
    items, corpus = write_inputs(tmp_path)
    for name in ("a", "b"):
        import_qa(items, tmp_path / name, corpus, overrides=["known=12", "probes.arithmetic=3"])
    for f in ("facts.jsonl", "documents.jsonl", "probes.jsonl", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    bench = load_benchmark(tmp_path / "a")
    kinds = pd.Series([f.kind for f in bench.facts]).value_counts().to_dict()
    assert kinds["known"] == 12
    assert sum(p.probe_type == "arithmetic" for p in bench.probes) == 6


def test_import_without_documents_and_warnings(tmp_path):
    items = tmp_path / "drugs.jsonl"
    items.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Which enzyme does velorin inhibit?", "answer": "kinase B7", "statement": "Velorin inhibits"},
        {"question": "What is the half-life of velorin in hours?", "answer": "14"},
        {"question": "Is tarmadol an opioid tarmadol?", "answer": "tarmadol"},
    ]) + "\n", encoding="utf-8")  # fmt: skip
    manifest = import_qa(items, tmp_path / "bench", None, known="none", overrides=["exposures=2", "probes.arithmetic=0"])
    bench = load_benchmark(tmp_path / "bench")
    texts = sorted({d.text for d in bench.documents})
    assert texts == ["Is tarmadol an opioid tarmadol? tarmadol.", "Velorin inhibits kinase B7.",
                     "What is the half-life of velorin in hours? 14."]  # fmt: skip
    assert len(bench.documents) == 6 and all(f.exposures == 2 for f in bench.facts)
    assert [f.fact_id for f in bench.facts] == ["item-0001", "item-0002", "item-0003"]
    assert any("appears verbatim in its own question" in w for w in manifest["warnings"])


def test_known_from_an_lm_eval_style_file(tmp_path):
    items, corpus = write_inputs(tmp_path)
    known = tmp_path / "known.jsonl"
    known.write_text(json.dumps({"id": "k1", "question": "What is the capital of France?", "choices": ["Paris", "Rome"],
                                 "answer": 0}) + "\n", encoding="utf-8")  # fmt: skip
    import_qa(items, tmp_path / "bench", corpus, known=str(known), overrides=["probes.arithmetic=0"])
    bench = load_benchmark(tmp_path / "bench")
    k1 = bench.facts_by_id["k1"]
    assert k1.kind == "known" and k1.object == "Paris" and k1.exposures == 0 and k1.split == "eval"
    assert {p.probe_type for p in bench.probes if p.fact_id == "k1"} == {"qa", "mcq"}


def test_cloze_from_a_document_sentence():
    assert cloze_from("It is rare. Zarvite is mostly mined in Chile. Nice.", "Chile") == "Zarvite is mostly mined in"
    assert cloze_from("Chile.", "Chile") is None  # nothing before the answer


@pytest.mark.parametrize("lines, docs, message", [
    ([{"question": "Q?"}], None, "line 1: no 'answer'"),
    ([{"question": "Q?", "answer": "x", "choices": ["a", "b"]}], None, "line 1: answer 'x' is not among its choices"),
    ([{"id": "a", "question": "Q?", "answer": "x"}, {"id": "a", "question": "R?", "answer": "y"}], None,
     "line 2: duplicate id 'a'"),
    ([{"question": "Q?", "answer": "x", "kind": "updated"}], None, "needs 'previous_answer'"),
    ([{"question": "Q?", "answer": "x", "colour": "red"}], None, "unknown field 'colour'"),
    ([{"question": "Q?", "answer": "x"}], "\n\n", "holds no documents"),
    ([{"id": "a", "question": "Q?", "answer": "x"}], '{"text": "x is so", "fact_ids": ["b"]}\n', "names fact 'b'"),
    ([{"question": "Q?", "answer": 7}], None, "'answer' must be a non-empty string"),
])  # fmt: skip
def test_bad_input_is_one_sentence_and_no_folder(tmp_path, lines, docs, message):
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(r) for r in lines) + "\n", encoding="utf-8")
    args = ["bench", "import", "qa", items, "--out", tmp_path / "bench", "--known", "none"]
    if docs is not None:
        suffix = ".jsonl" if docs.strip().startswith("{") else ".txt"
        (tmp_path / f"docs{suffix}").write_text(docs, encoding="utf-8")
        args += ["--documents", tmp_path / f"docs{suffix}"]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "bench").exists()


def test_malformed_line_names_file_and_line(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text('{"question": "Q?", "answer": "x"}\n\n{"question": oops}\n', encoding="utf-8")
    result = invoke("bench", "import", "qa", items, "--out", tmp_path / "bench")
    assert result.exit_code == 2 and "items.jsonl, line 3" in result.output


def test_trailing_whitespace_moves_into_the_continuation(tiny_lm):
    """lm-eval scores "…as " + "X" as "…as" + " X"; kdyn used to score a bare space token, then "X"."""
    tok = tiny_lm.tokenizer
    spaced = Probe("p1", None, "skill", "skill", "cloze", "The answer is ", False, "Paris")
    plain = Probe("p2", None, "skill", "skill", "cloze", "The answer is", False, "Paris")
    assert render(spaced, tok)[:2] == ("The answer is", " ")
    a, b = build_rows([spaced, plain], tok)
    assert (a.context, a.continuation) == (b.context, b.continuation)
    s1, s2 = score_probes(tiny_lm.model, tok, [spaced, plain])
    assert s1["logprob"] == s2["logprob"] and s1["greedy"] == s2["greedy"]


def test_readme_worked_example_trains_exports_and_reanalyses(tmp_path, monkeypatch):
    """The README's "Your own data" block, as written (quickstart → tiny), then the export's analysis equals the
    run's own: every transition count and rate."""
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    commands = [c for c in COMMANDS if c.startswith("kdyn ")]
    assert len(commands) == 5
    outputs = {}
    for line in commands:
        args = [a for part in shlex.split(line.replace("quickstart", "tiny"))[1:]
                for a in (sorted(str(p) for p in Path().glob(part)) if "*" in part else [part])]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"README command failed: {line}\n{result.output}"
        outputs[args[0]] = result.output
    assert "benchmark 'minerals'" in outputs["run"]  # the run names the bench it trained on
    run, back = tmp_path / "runs" / "minerals", tmp_path / "exports" / "analysis" / "analysis"
    files = sorted((tmp_path / "exports" / "minerals").glob("samples_*.jsonl"))
    steps = {int(f.stem.rsplit("step-", 1)[1]) for f in files}
    assert steps == set(pd.read_parquet(run / "probes.parquet")["step"])
    first = json.loads(files[0].read_text(encoding="utf-8").splitlines()[0])
    assert {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics"} <= first.keys()
    key = ["kind", "probe_type", "from_step", "to_step"]
    want = pd.read_parquet(run / "analysis" / "transitions.parquet").sort_values(key).reset_index(drop=True)
    got = pd.read_parquet(back / "transitions.parquet").sort_values(key).reset_index(drop=True)
    assert {"n", "n_1to0", "n_0to1", "forgetting", "backward_transfer"} <= set(want.columns)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)  # every column, intervals included
