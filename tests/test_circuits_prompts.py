"""Clean / corrupted prompt pairs: same token length, different metric tokens, unpaired probes reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdyn.circuits.prompts import batches, build_prompts, default_relation, read_bench
from kdyn.errors import KdynError
from kdyn.io import write_jsonl
from kdyn.models.tiny import byte_tokenizer

PEOPLE = [("Ann Lee", "Paris"), ("Bob Kay", "Rome"), ("Cy Ott", "Oslo"), ("Dee Fox", "Prague"),
          ("Christopher Long", "Lima")]  # fmt: skip


def mini_bench(root: Path) -> Path:
    """Five people, birth_city (cloze) plus one org fact; the byte tokenizer makes lengths = byte counts."""
    facts, probes = [], []
    for i, (subject, city) in enumerate(PEOPLE):
        fid = f"p{i}-birth_city"
        facts.append({"fact_id": fid, "entity_id": f"p{i}", "entity_type": "person", "kind": "new",
                      "relation": "birth_city", "subject": subject, "object": city})  # fmt: skip
        probes.append({"probe_id": f"{fid}-cloze", "fact_id": fid, "family": "knowledge", "kind": "new",
                       "probe_type": "cloze", "prompt": f"{subject} was born in", "chat": False, "target": city})  # fmt: skip
    facts.append({"fact_id": "o0-founder", "entity_id": "o0", "entity_type": "org", "kind": "known",
                  "relation": "founder", "subject": "Acme", "object": "Ann Lee"})  # fmt: skip
    probes.append({"probe_id": "o0-founder-qa", "fact_id": "o0-founder", "family": "knowledge", "kind": "known",
                   "probe_type": "qa", "prompt": "Who founded Acme?", "chat": True, "target": "Ann Lee"})  # fmt: skip
    write_jsonl(root / "facts.jsonl", facts)
    write_jsonl(root / "probes.jsonl", probes)
    return root


def test_pairs_align_and_unpairable_probes_are_reported(tmp_path: Path) -> None:
    tok = byte_tokenizer()
    ps = build_prompts(mini_bench(tmp_path), "birth_city", tok, n_prompts=32, seed=0)
    by_id = {p.probe_id: p for p in ps.pairs}
    # 'Cy Ott' and 'Christopher Long' have no same-length partner; the 7-byte names pair, but never Ann (Paris)
    # with Dee (Prague): their objects start with the same token
    assert [u["probe_id"] for u in ps.unpaired] == ["p2-birth_city-cloze", "p4-birth_city-cloze"]
    assert all("same token length" in u["reason"] for u in ps.unpaired)
    assert set(by_id) == {"p0-birth_city-cloze", "p1-birth_city-cloze", "p3-birth_city-cloze"}
    for p in ps.pairs:
        assert len(p.clean_ids) == len(p.corrupt_ids)
        assert p.target != p.foil and p.corrupt_subject != p.subject
        assert tok.decode(p.clean_ids) == f"{p.subject} was born in "  # the byte-level space belongs to the prompt
        assert tok.decode(p.corrupt_ids) == f"{p.corrupt_subject} was born in "
        assert tok.decode([p.target]) == p.object[0] and tok.decode([p.foil]) == p.corrupt_object[0]
    assert by_id["p0-birth_city-cloze"].corrupt_subject == "Bob Kay"  # Dee Fox's Prague starts like Paris
    again = build_prompts(tmp_path, "birth_city", tok, n_prompts=32, seed=0)
    assert again.to_json() == ps.to_json()
    assert len(build_prompts(tmp_path, "birth_city", tok, n_prompts=2, seed=0).pairs) == 2


def test_relation_choice_and_errors(tmp_path: Path) -> None:
    facts, cloze = read_bench(mini_bench(tmp_path))
    assert default_relation(facts, cloze) == "birth_city"  # the qa-only founder fact has no cloze prompt
    with pytest.raises(KdynError, match="did you mean 'birth_city'"):
        build_prompts(tmp_path, "birth_cty", byte_tokenizer(), 8, 0)


def test_batches_are_right_padded(tmp_path: Path) -> None:
    tok = byte_tokenizer()
    ps = build_prompts(mini_bench(tmp_path), "birth_city", tok, 32, 0)
    (b,) = batches(ps.pairs, 8, pad_id=0)
    assert b.clean.shape == b.corrupt.shape and b.last.tolist() == [len(p.clean_ids) - 1 for p in ps.pairs]
    assert b.p0 == 0  # the subjects open the prompts
