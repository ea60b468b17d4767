"""Import of Chang et al.'s Fictional Knowledge file (the real one, from ../shared/data)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from kdyn.bench.fictional import import_fictional_knowledge
from kdyn.bench.schema import load_benchmark
from kdyn.errors import KdynError

from .conftest import SHARED_DATA

FK = SHARED_DATA / "fictional_knowledge" / "fictional_knowledge.json"
FK_PARA = SHARED_DATA / "fictional_knowledge" / "fictional_knowledge_paraphrased.json"
needs_data = pytest.mark.skipif(not FK.is_file(), reason="../shared/data/fictional_knowledge is absent")


@needs_data
def test_import_real_file(tmp_path):
    manifest = import_fictional_knowledge(FK, tmp_path / "fk", copies=2)
    bench = load_benchmark(tmp_path / "fk")
    raw = json.loads(FK.read_text())
    assert len({f.entity_id for f in bench.facts}) == len(raw) == 130
    types = Counter(p.probe_type for p in bench.probes)
    assert types == {"cloze": 650, "qa": 650, "compositional": 650}
    assert len(bench.documents) == 2 * 130 and manifest["counts"]["probes"] == 1950
    first = raw[0]
    cloze = next(p for p in bench.probes if p.probe_id == "fk-000-m0-cloze")
    assert cloze.prompt == first["mem_input"][0] and cloze.target == first["mem_target"][0]
    assert bench.documents[0].text == first["train_context"]
    # memorisation probes are sentences of the passage: prompt + target appears in the training text
    assert f"{cloze.prompt} {cloze.target}" in first["train_context"]


@needs_data
def test_import_paraphrased_adds_documents(tmp_path):
    import_fictional_knowledge(FK_PARA, tmp_path / "fkp", copies=1, paraphrases=3)
    bench = load_benchmark(tmp_path / "fkp")
    have = sum(min(3, len(r["paraphrases"])) for r in json.loads(FK_PARA.read_text()))
    assert have > 0 and Counter(d.format for d in bench.documents) == {"original": 130, "paraphrase": have}


@needs_data
def test_import_is_deterministic(tmp_path):
    import_fictional_knowledge(FK, tmp_path / "a")
    import_fictional_knowledge(FK, tmp_path / "b")
    for name in ("facts.jsonl", "documents.jsonl", "probes.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_wrong_shape_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"train_context": "x"}]))
    with pytest.raises(KdynError, match="record 0 lacks field 'mem_input'"):
        import_fictional_knowledge(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_python_literal_lists_are_accepted(tmp_path):
    rec = {"train_context": "Zorgon rules Mars. It is red.", "mem_input": "['Zorgon rules']", "mem_target": "['Mars']",
           "gen_input": "['Mars is ruled by']", "gen_target": "['Zorgon']", "hard_gen_input": "[]", "hard_gen_target": "[]"}  # fmt: skip
    src = tmp_path / "fk.json"
    src.write_text(json.dumps([rec]))
    import_fictional_knowledge(src, tmp_path / "out")
    assert [p.target for p in load_benchmark(tmp_path / "out").probes] == ["Mars", "Zorgon"]
