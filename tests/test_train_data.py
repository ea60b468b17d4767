"""Training data and schedule pieces: fact spans, packing, sharding, epoch order, learning-rate factors."""

from __future__ import annotations

import pytest

from kdyn.bench.schema import load_benchmark
from kdyn.train.config import ScheduleConfig
from kdyn.train.data import epoch_order, make_batches, object_spans, pack, shard, tokenize_documents
from kdyn.train.session import lr_factor


def test_object_spans_in_order_with_repeats():
    text = "A lives in Paris. A works in Paris. B is from Rome."
    spans = object_spans(text, ["Paris", "Paris", "Rome", "Oslo"])
    assert spans[0] == (11, 16) and spans[1] == (29, 34) and text[slice(*spans[2])] == "Rome" and spans[3] is None


def test_fact_tokens_decode_to_the_object(tiny_lm, tiny_bench):
    bench = load_benchmark(tiny_bench)
    docs = tokenize_documents(bench.documents, bench.facts_by_id, tiny_lm.tokenizer)
    facts = bench.facts_by_id
    n = 0
    for d in docs:
        for fid, pos in d.fact_tokens:
            text = tiny_lm.tokenizer.decode([d.ids[p] for p in pos])
            assert facts[fid].object.strip() in text
            n += 1
    assert n >= sum(len(d.fact_ids) for d in bench.documents) * 0.95


def test_packing_keeps_documents_whole_and_labels_padding(tiny_lm, tiny_bench):
    bench = load_benchmark(tiny_bench)
    docs = tokenize_documents(bench.documents, bench.facts_by_id, tiny_lm.tokenizer)
    assert max(len(d.ids) for d in docs) <= 1024
    rows = pack(docs, 1024)
    assert sum(len(r) for r in rows) == len(docs)  # no document split (all shorter than a row)
    assert all(sum(e - s for _, s, e in r) <= 1024 for r in rows)
    assert sum(len(r) for r in pack(docs, 64)) > len(docs)  # longer documents are split across rows
    batches = make_batches(docs, 256, 4, tiny_lm.tokenizer.pad_token_id)
    assert sum(b.tokens for b in batches) == sum(len(d.ids) for d in docs)
    b = batches[0]
    assert bool(((b.labels == -100) == (b.attention_mask == 0)).all())
    for row, spans in enumerate(b.spans):
        for _, pos in spans:
            assert all(b.attention_mask[row, p] == 1 for p in pos)


def test_epoch_order_is_seeded_and_shards_are_equal():
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1) != epoch_order(10, 0, 2)
    parts = [shard(list(range(7)), r, 2) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 4 and set(parts[0] + parts[1]) == set(range(7))


@pytest.mark.parametrize("kind,expected_mid,expected_end", [("constant", 1.0, 1.0), ("linear", 0.5, 0.0), ("cosine", 0.5, 0.0)])
def test_schedules_warm_up_then_decay(kind, expected_mid, expected_end):
    cfg = ScheduleConfig(kind=kind, warmup_steps=10)
    assert lr_factor(0, 110, cfg) == pytest.approx(1 / 11)
    assert lr_factor(60, 110, cfg) == pytest.approx(expected_mid)
    assert lr_factor(110, 110, cfg) == pytest.approx(expected_end)
    assert lr_factor(110, 110, ScheduleConfig(kind=kind, min_lr_ratio=0.1)) == pytest.approx(max(expected_end, 0.1) if kind != "constant" else 1.0)
