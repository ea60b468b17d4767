"""Probing inside the loop: every probe scored (sharded across ranks, gathered) and the per-fact training
loss — the mean NLL of each fact's object tokens in its training documents — at the same steps.

Used by the loop (kdyn.train.loop) and by the TrainerCallback (kdyn.train.callback), so both give
identical rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdyn.bench.schema import Probe
from kdyn.probe.results import flag_known, to_table
from kdyn.probe.scorer import ScoreConfig, score_probes
from kdyn.train.data import Batch

FACT_LOSS_SCHEMA = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("fact_id", pa.string()),
                              ("nll", pa.float64()), ("tokens", pa.int64())])  # fmt: skip


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
    rows = score_probes(model, tokenizer, [probes[i] for i in mine], cfg, progress=progress)
    merged: dict[int, dict[str, Any]] = {}
    for part in gather(list(zip(mine, rows)), world):
        merged.update(dict(part))
    return [merged[i] for i in range(len(probes))]


@torch.inference_mode()
def fact_loss(model: PreTrainedModel, batches: list[Batch], rank: int = 0, world: int = 1,
              autocast: torch.autocast | None = None) -> dict[str, tuple[float, int]]:  # fmt: skip
    """fact_id → (mean NLL of its object tokens, token count) over `batches` (sharded over ranks)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for b in batches[rank::world]:
        with autocast if autocast is not None else torch.autocast(device.type, enabled=False):
            logits = model(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device)).logits
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), b.input_ids[:, 1:].to(device), reduction="none")
        for i, spans in enumerate(b.spans):
            for fid, pos in spans:
                idx = torch.tensor(pos, device=device) - 1  # logits at p-1 predict token p
                sums[fid][0] += float(nll[i, idx].sum())
                sums[fid][1] += len(pos)
    model.train(was_training)
    total: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for part in gather(dict(sums), world):
        for fid, (s, n) in part.items():
            total[fid][0] += s
            total[fid][1] += n
    return {fid: (s / n, int(n)) for fid, (s, n) in sorted(total.items()) if n > 0}


def probe_tables(rows: list[dict[str, Any]], nll: dict[str, tuple[float, int]], step: int, epoch: float,
                 base_correct: dict[str, bool] | None) -> tuple[pa.Table, pa.Table]:  # fmt: skip
    """probes.parquet and fact_loss.parquet rows for one probe point."""
    flag_known(rows, base_correct)
    facts = [{"step": step, "epoch": epoch, "fact_id": f, "nll": v, "tokens": n} for f, (v, n) in nll.items()]
    return to_table(rows, step, epoch), pa.Table.from_pylist(facts, schema=FACT_LOSS_SCHEMA)
