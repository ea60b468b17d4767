"""Probing inside the loop: every probe scored (sharded across ranks, gathered) and, from one forward pass
over the training documents in eval mode, the training-set loss (mean LM loss of every token of every
document: eval_loss.parquet) and the per-fact training loss (the mean NLL of each fact's object tokens in
its training documents: fact_loss.parquet) at the same steps. Each document is evaluated on its own row
(no neighbours packed beside it), so the numbers do not depend on how the pass was batched.

Used by the loop (kdyn.train.loop) and by the TrainerCallback (kdyn.train.callback), so both give
identical rows.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdyn.bench.schema import Probe
from kdyn.errors import unknown
from kdyn.probe.engine import own_forward, weights_in
from kdyn.probe.results import flag_known, to_table
from kdyn.probe.scorer import ScoreConfig, rival_values, score_probes
from kdyn.train.data import Batch, TokDoc, collate

FACT_LOSS_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("fact_id", pa.string()),
                              ("nll", pa.float64()), ("tokens", pa.int64())])  # fmt: skip
EVAL_LOSS_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("loss", pa.float64()),
                              ("tokens", pa.int64()), ("seconds", pa.float64())])  # fmt: skip
FACT_DOCS = ("all", "first_copy", "none")  # which documents' object tokens give the per-fact NLL


@dataclass
class EvalPass:
    """One probe point's pass over the training documents."""

    fact_nll: dict[str, tuple[float, int]]  # fact_id → (mean NLL of its object tokens, token count)
    loss: float  # mean next-token NLL over every predicted token of every document (NaN: no documents)
    tokens: int  # predicted tokens behind `loss`
    seconds: float  # this rank's time for the pass


def gather(objs: Any, world: int) -> list[Any]:
    """Every rank's object, in rank order (one rank: just this one)."""
    if world == 1:
        return [objs]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, objs)
    return out


def score_sharded(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, probes: list[Probe], cfg: ScoreConfig,
                  rank: int = 0, world: int = 1, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Rows for every probe in input order; rank r scores probes r, r+world, ..."""
    mine = list(range(rank, len(probes), world))
    rows = score_probes(model, tokenizer, [probes[i] for i in mine], cfg, progress=progress, rivals=rival_values(probes))
    merged: dict[int, dict[str, Any]] = {}
    for part in gather(list(zip(mine, rows)), world):
        merged.update(dict(part))
    return [merged[i] for i in range(len(probes))]


def eval_batches(docs: list[TokDoc], fact_docs: str, seq_len: int, batch_size: int, pad_id: int) -> list[Batch]:
    """Every document on its own row (longer ones split at seq_len), sorted by length so rows of a batch are
    near equal (little padding), at most batch_size x seq_len tokens a batch. Object-token spans are kept
    only in the documents `fact_docs` names ("all", "first_copy", "none"). Identical rows (copies of a document
    in one wording: 28% of the relevance suite's tokens) run once, weighted by their count (`Batch.weights`)."""
    if fact_docs not in FACT_DOCS:
        raise unknown("choice of fact-loss documents", fact_docs, FACT_DOCS)
    same: dict[tuple[int, ...], list[tuple[TokDoc, int, int]]] = {}
    for d in docs:
        spans = fact_docs == "all" or (fact_docs == "first_copy" and d.copy_index == 0)
        d = d if spans else dataclasses.replace(d, fact_tokens=[])
        for s in range(0, len(d.ids), seq_len):
            e = min(s + seq_len, len(d.ids))
            same.setdefault(tuple(d.ids[s:e]), []).append((d, s, e))
    pieces = sorted(((_one_row(group), len(group)) for group in same.values()), key=lambda row: row[0][2] - row[0][1])
    budget, out, current = batch_size * seq_len, [], []

    def flush() -> None:
        batch = collate([[piece] for piece, _ in current], seq_len, pad_id)
        batch.weights = [n for _, n in current]
        out.append(batch)
        current.clear()

    for piece, n in pieces:  # ascending lengths: this row is the widest so far
        if current and (len(current) + 1) * (piece[2] - piece[1]) > budget:
            flush()
        current.append((piece, n))
    if current:
        flush()
    return out


def _one_row(group: list[tuple[TokDoc, int, int]]) -> tuple[TokDoc, int, int]:
    """Identical pieces as the first of them, carrying every piece's object-token spans (moved to its offsets):
    a span counts once per document that has it, as if each ran on its own row."""
    d0, s0, e0 = group[0]
    if len(group) == 1:
        return group[0]
    spans = [(fid, [p - s + s0 for p in pos if s <= p < e]) for d, s, e in group for fid, pos in d.fact_tokens]
    return dataclasses.replace(d0, fact_tokens=[(fid, pos) for fid, pos in spans if pos]), s0, e0


@torch.inference_mode()
def eval_pass(model: PreTrainedModel, batches: list[Batch], rank: int = 0, world: int = 1,
              precision: str = "float32") -> EvalPass:  # fmt: skip
    """The training-set loss and per-fact NLL over `batches` (sharded over ranks, summed over all of them), with
    the weights in `precision` — the probes' (manifest.json: probe_precision), as cheap as them on bf16 hardware:
    a bf16 copy of the weights, not autocast, which casts every fp32 weight at each call. NLL in fp32 either way."""
    t0 = time.time()
    was_training = model.training
    model.eval()  # no dropout
    device = next(model.parameters()).device
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    loss_sum, loss_n = 0.0, 0
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    with own_forward(model), weights_in(model, dtype), torch.autocast(device.type, enabled=False):
        for b in batches[rank::world]:
            logits = model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device)).logits
            labels = b.labels[:, 1:].to(device)
            nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
            predicted = labels != -100
            # a row standing for n identical documents counts n times in the loss (its spans carry every copy's)
            w = torch.tensor(b.weights, device=device)[:, None] if b.weights is not None else None
            loss_sum += float((nll if w is None else nll * w)[predicted].sum())
            loss_n += int(predicted.sum() if w is None else (predicted * w).sum())
            for i, spans in enumerate(b.spans):
                for fid, pos in spans:
                    idx = torch.tensor(pos, device=device) - 1  # logits at p-1 predict token p
                    sums[fid][0] += float(nll[i, idx].sum())
                    sums[fid][1] += len(pos)
    model.train(was_training)
    total: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    loss_sum_all, loss_n_all = 0.0, 0
    for part, (ls, ln) in gather((dict(sums), (loss_sum, loss_n)), world):
        loss_sum_all, loss_n_all = loss_sum_all + ls, loss_n_all + ln
        for fid, (s, n) in part.items():
            total[fid][0] += s
            total[fid][1] += n
    nll_by_fact = {fid: (s / n, int(n)) for fid, (s, n) in sorted(total.items()) if n > 0}
    loss = loss_sum_all / loss_n_all if loss_n_all else math.nan
    return EvalPass(nll_by_fact, loss, loss_n_all, time.time() - t0)


def probe_tables(rows: list[dict[str, Any]], ev: EvalPass, step: int, epoch: float,
                 base_correct: dict[str, bool] | None) -> tuple[pa.Table, pa.Table, pa.Table]:  # fmt: skip
    """probes.parquet, fact_loss.parquet and eval_loss.parquet rows for one probe point (no documents: no
    eval_loss row)."""
    flag_known(rows, base_correct)
    facts = [{"step": step, "epoch": epoch, "fact_id": f, "nll": v, "tokens": n} for f, (v, n) in ev.fact_nll.items()]
    row = {"step": step, "epoch": epoch, "loss": ev.loss, "tokens": ev.tokens, "seconds": round(ev.seconds, 4)}
    loss = [row] if ev.tokens else []
    return (to_table(rows, step, epoch), pa.Table.from_pylist(facts, schema=FACT_LOSS_SCHEMA),
            pa.Table.from_pylist(loss, schema=EVAL_LOSS_SCHEMA))
