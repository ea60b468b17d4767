"""The benchmark builder: byte-identical rebuilds, schema, held-out templates never in documents,
probe shapes per kind, exposure modes, and the package data's own rules."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from kdyn.bench.build import build_bench
from kdyn.bench.schema import load_benchmark
from kdyn.bench.templates import catalog, compositions, pools, relations
from kdyn.errors import KdynError
from kdyn.experiment import load_bench_config

FILES = ["facts.jsonl", "documents.jsonl", "probes.jsonl", "manifest.json"]


def test_rebuild_is_byte_identical(tiny_bench, tmp_path):
    build_bench(load_bench_config("tiny"), tmp_path / "again")
    for name in FILES:
        assert (tiny_bench / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_other_seed_differs(tiny_bench, tmp_path):
    build_bench(load_bench_config("tiny", ["seed=1"]), tmp_path / "s1")
    assert (tiny_bench / "facts.jsonl").read_bytes() != (tmp_path / "s1" / "facts.jsonl").read_bytes()


def test_quickstart_is_byte_identical_and_sized(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    manifest = build_bench(load_bench_config("quickstart"), a)
    build_bench(load_bench_config("quickstart"), b)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = manifest["counts"]
    assert 25 <= c["entities_trained"] <= 35
    # ~4.7k training tokens per epoch (the 15-minute budget); SmolLM2 averages ~1.65 tokens per word on this text
    assert 2_000 <= c["document_words"] <= 4_000
    assert set(c["facts_by_kind"]) == {"new", "related", "updated", "known"}


def test_schema_loads_and_manifest_hashes(tiny_bench):
    from kdyn.io import sha256_file

    bench = load_benchmark(tiny_bench)
    for name, digest in bench.manifest["sha256"].items():
        assert sha256_file(tiny_bench / name) == digest
    kinds = Counter(f.kind for f in bench.facts)
    assert kinds == {"new": 4 * 5 + 2 * 4, "related": 3, "updated": 3, "known": 9}
    types = Counter(p.probe_type for p in bench.probes)
    assert types["arithmetic"] == 6 and types["compositional"] > 0
    assert types["cloze"] == types["qa"] == types["mcq"] == len(bench.facts)


def test_held_out_templates_never_in_documents(tiny_bench):
    bench = load_benchmark(tiny_bench)
    text = "\n".join(d.text for d in bench.documents)
    rels = relations()
    for f in bench.facts:
        rel = rels[f.relation]
        for t in rel.held_out:
            assert t.render(f.subject, f.object) not in text
            assert t.prefix(f.subject) + " " + f.object not in text
        for q in rel.questions_held_out:
            assert q.render(f.subject) not in text
    held = {t.template_id for r in rels.values() for t in (*r.held_out, *r.questions_held_out)}
    assert not held & {tid for d in bench.documents for tid in d.template_ids}


def test_every_format_keeps_held_out_out(tmp_path):
    out = tmp_path / "fmt"
    build_bench(load_bench_config("tiny", ["formats=[prose, lines, markdown, json, qa, table]"]), out)
    bench = load_benchmark(out)
    assert {d.format for d in bench.documents} == {"prose", "lines", "markdown", "json", "qa", "table"}
    text = "\n".join(d.text for d in bench.documents)
    for f in bench.facts:
        for q in relations()[f.relation].questions_held_out:
            assert q.render(f.subject) not in text
    json_docs = [json.loads(d.text) for d in bench.documents if d.format == "json"]
    assert all("name" in j for j in json_docs)


def test_probe_shapes(tiny_bench):
    bench = load_benchmark(tiny_bench)
    facts = bench.facts_by_id
    for p in bench.probes:
        if p.probe_type == "mcq":
            assert p.k == 4 == len(set(o.lower() for o in p.options)) and p.options[p.answer_index] == p.target
            f = facts[p.fact_id]
            if f.kind == "updated":
                assert f.previous_object in p.options  # the old value is always a distractor
        if p.probe_type == "cloze":
            assert not p.chat and facts[p.fact_id].object == p.target
            doc_text = " ".join(d.text for d in bench.documents if p.fact_id in d.fact_ids)
            if facts[p.fact_id].exposures:
                assert f"{p.prompt} {p.target}" in doc_text  # cloze = the train wording
        if p.probe_type == "qa":
            assert p.chat and p.prompt.endswith("Answer with the answer only.")
        if p.probe_type == "arithmetic":
            assert p.fact_id is None and p.kind == "skill" and p.target.lstrip("-").isdigit()


def test_known_facts_never_trained(tiny_bench):
    bench = load_benchmark(tiny_bench)
    known = {f.fact_id for f in bench.facts if f.kind == "known"}
    assert known and not known & {fid for d in bench.documents for fid in d.fact_ids}
    assert all(f.exposures == 0 and f.split == "eval" for f in bench.facts if f.kind == "known")


def test_exposure_modes(tmp_path):
    build_bench(load_bench_config("tiny", ["people=40", "exposure.mode=exponential", "exposure.mean=3"]), tmp_path / "e")
    bench = load_benchmark(tmp_path / "e")
    per_entity = {f.entity_id: f.exposures for f in bench.facts if f.kind == "new"}
    assert min(per_entity.values()) == 1 and max(per_entity.values()) > 5  # low, medium and high buckets
    copies = Counter(d.entity_id for d in bench.documents)
    assert all(copies[e] == n for e, n in per_entity.items())


def test_paraphrase_templates_per_fact(tmp_path):
    build_bench(load_bench_config("tiny", ["templates_per_fact=2", "exposure.copies=4"]), tmp_path / "p")
    bench = load_benchmark(tmp_path / "p")
    fid = next(f.fact_id for f in bench.facts if f.kind == "new")
    used = {tid for d in bench.documents if fid in d.fact_ids for tid in d.template_ids if tid.startswith(fid.split("-")[-1])}
    assert len(used) == 2


def test_out_dir_that_is_not_a_benchmark_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(KdynError, match="not a kdyn benchmark"):
        build_bench(load_bench_config("tiny"), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_package_data_rules():
    rels = relations()
    assert len(rels) >= 19
    for r in rels.values():
        assert len(r.train) + len(r.held_out) >= 20, r.name
        assert len(r.questions_held_out) >= 5 and len(r.questions_train) >= 3, r.name
    for c in compositions().values():
        assert c.first in rels and c.second in rels
    cat = catalog()
    assert sum(len(v) for v in cat.values()) >= 300 and len(cat) >= 8
    for rel, facts in cat.items():
        subjects = [f["subject"] for f in facts]
        assert len(subjects) == len(set(subjects)), rel
    assert len(pools()["city"]) >= 60


def test_catalog_answers_are_not_in_their_questions():
    """No alias equals its subject (Toyota's alias "Toyota" credited any answer that named the company), and a
    fact whose object occurs in its subject (the continent of South Africa) is never drawn as `known`."""
    from kdyn.bench.config import BenchConfig
    from kdyn.bench.facts import catalog_facts, object_in_subject

    cat = catalog()
    for rel, facts in cat.items():
        for f in facts:
            assert all(a.casefold() != f["subject"].casefold() for a in f["aliases"]), (rel, f["subject"])
    flagged = {(rel, f["subject"]) for rel, fs in cat.items() for f in fs if object_in_subject(f["subject"], f["object"])}
    assert ("continent", "South Africa") in flagged
    assert not object_in_subject("Mexico", "Mexico City") and not object_in_subject("the Philippines", "the Netherlands")
    total = sum(len(fs) for fs in cat.values())
    updated, known = catalog_facts(BenchConfig(known=total - len(flagged), updated=len(flagged)))
    assert len(known) == total - len(flagged) and not {(f.relation, f.subject) for f in known} & flagged
    assert {(f.relation, f.subject) for f in updated} == flagged  # what is left stays usable as an updated fact


def test_augmentation_keeps_probes_identical(tiny_bench, tmp_path):
    """Paraphrase and formatting augmentation change documents only: strategies compare on the same items."""
    build_bench(load_bench_config("tiny", ["templates_per_fact=3", "formats=[prose, json, qa]"]), tmp_path / "aug")
    assert (tmp_path / "aug" / "probes.jsonl").read_bytes() == (tiny_bench / "probes.jsonl").read_bytes()
    assert (tmp_path / "aug" / "documents.jsonl").read_bytes() != (tiny_bench / "documents.jsonl").read_bytes()


def _rewrite(path, fn):
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    fn(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "file, change, message",
    [
        ("probes.jsonl", lambda rows: rows[0].update(probe_type="essay"), "probe_type 'essay' is not one of"),
        ("probes.jsonl", lambda rows: rows[1].update(probe_id=rows[0]["probe_id"]), "duplicate probe_id"),
        ("probes.jsonl", lambda rows: rows[0].update(fact_id="nope"), "fact_id 'nope' is not in facts.jsonl"),
        ("probes.jsonl", lambda rows: next(r for r in rows if r["probe_type"] == "mcq").update(answer_index=9),
         "answer_index must index into options"),
        ("documents.jsonl", lambda rows: rows[0]["fact_ids"].append("ghost"), "unknown fact_id 'ghost'"),
        ("facts.jsonl", lambda rows: rows[0].update(colour="red"), "unknown field(s) colour"),
    ],
)  # fmt: skip
def test_schema_validation_names_file_and_line(tiny_bench, tmp_path, file, change, message):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    _rewrite(bad / file, change)
    with pytest.raises(KdynError, match=re.escape(message)) as info:
        load_benchmark(bad)
    assert file in str(info.value)


def test_wrong_schema_version(tiny_bench, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KdynError, match="schema_version 99"):
        load_benchmark(bad)
