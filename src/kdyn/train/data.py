"""Training data: documents → token ids with the positions of each fact's object, packed into rows.

Each document is tokenized once with character offsets, so the object tokens of every fact it states
are known (`fact_tokens`); they give the per-fact training loss. An epoch's order is a permutation
seeded by (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one does.
Packing is greedy and never splits a document shorter than a row: rows hold whole documents
separated by EOS, padded at the end (labels -100 there).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from kdyn.bench.schema import Document, Fact


@dataclass
class TokDoc:
    doc_id: str
    entity_id: str
    ids: list[int]
    fact_tokens: list[tuple[str, list[int]]] = field(default_factory=list)  # (fact_id, token positions)
    copy_index: int = 0


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], -100 on padding
    attention_mask: torch.Tensor  # [B, L]
    spans: list[list[tuple[str, list[int]]]]  # per row: (fact_id, positions in the row)
    weights: list[int] | None = None  # per row: the identical documents it stands for (eval batches; None: 1 each)

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


def object_spans(text: str, objects: list[str]) -> list[tuple[int, int] | None]:
    """Character span of each object in `text`, searched in order (documents state facts in fact_ids
    order), falling back to the first occurrence anywhere."""
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for obj in objects:
        at = text.find(obj, cursor)
        if at < 0:
            at = text.find(obj)
        if at < 0 or not obj:
            spans.append(None)
            continue
        spans.append((at, at + len(obj)))
        cursor = at + len(obj)
    return spans


def tokenize_documents(docs: list[Document], facts: dict[str, Fact], tokenizer: PreTrainedTokenizerBase) -> list[TokDoc]:
    out = []
    eos = tokenizer.eos_token_id
    for d in docs:
        enc = tokenizer(d.text, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
            offsets.append((0, 0))
        spans = object_spans(d.text, [facts[f].object for f in d.fact_ids])
        fact_tokens = []
        for fid, span in zip(d.fact_ids, spans):
            if span is None:
                continue
            pos = [i for i, (a, b) in enumerate(offsets) if b > a and a < span[1] and b > span[0] and i > 0]
            if pos:
                fact_tokens.append((fid, pos))
        out.append(TokDoc(d.doc_id, d.entity_id, ids, fact_tokens, d.copy_index))
    return out


def text_docs(texts: list[str], tokenizer: PreTrainedTokenizerBase, prefix: str) -> list[TokDoc]:
    """Plain text (replay) as documents without facts."""
    eos = tokenizer.eos_token_id
    out = []
    for i, t in enumerate(texts):
        ids = list(tokenizer(t)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(TokDoc(f"{prefix}-{i:05d}", "", ids))
    return out


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"kdyn:{seed}:epoch:{epoch}").shuffle(order)
    return order


def pack(docs: list[TokDoc], seq_len: int) -> list[list[tuple[TokDoc, int, int]]]:
    """Rows of (doc, start, end) pieces; whole documents unless one is longer than a row."""
    rows: list[list[tuple[TokDoc, int, int]]] = []
    row: list[tuple[TokDoc, int, int]] = []
    used = 0
    for d in docs:
        start = 0
        while start < len(d.ids):
            n = min(len(d.ids) - start, seq_len)
            if used + n > seq_len:
                rows.append(row)
                row, used = [], 0
            row.append((d, start, start + n))
            used += n
            start += n
    if row:
        rows.append(row)
    return rows


def collate(rows: list[list[tuple[TokDoc, int, int]]], seq_len: int, pad_id: int) -> Batch:
    width = max(sum(e - s for _, s, e in r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    spans: list[list[tuple[str, list[int]]]] = []
    for i, row in enumerate(rows):
        col, row_spans = 0, []
        for d, s, e in row:
            ids[i, col : col + e - s] = torch.tensor(d.ids[s:e])
            for fid, pos in d.fact_tokens:
                inside = [col + p - s for p in pos if s <= p < e and p > s]
                if inside:
                    row_spans.append((fid, inside))
            col += e - s
        labels[i, :col] = ids[i, :col]
        mask[i, :col] = 1
        spans.append(row_spans)
    return Batch(ids, labels, mask, spans)


def make_batches(docs: list[TokDoc], seq_len: int, batch_size: int, pad_id: int) -> list[Batch]:
    rows = pack(docs, seq_len)
    return [collate(rows[i : i + batch_size], seq_len, pad_id) for i in range(0, len(rows), batch_size)]


def shard(items: list, rank: int, world: int) -> list:
    """This rank's share, every rank the same length (the tail is filled from the start)."""
    if world == 1:
        return items
    per = -(-len(items) // world)
    padded = items + items[: per * world - len(items)]
    return padded[rank::world]
