"""Probe scoring: every probe's target log-prob, first-token rank and greedy answer, and the result row
built from them (`result_row`). The forward passes live in `kdyn.probe.engine`: one prefill over prompt +
target gives the log-prob and, where greedy follows the target, greedy tokens without decode steps; greedy
decoding runs in large merged batches; MCQ prompts run once for all their options. The numbers are those of a
plain per-probe forward + HF greedy `generate` (tests/test_scorer_reference.py checks it).

Precision: "auto" scores in bf16 where the hardware makes it faster (CPUs with avx512_bf16 / AMX, GPUs), with
the weights cast to bf16 for the pass (restored afterwards); fp32 elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdyn.bench.schema import Probe
from kdyn.device import Precision, resolve_precision
from kdyn.probe import engine, metrics
from kdyn.probe.engine import weights_in
from kdyn.probe.prompts import build_rows


@dataclass
class ScoreConfig:
    batch_size: int = 32  # sequences per prefill forward
    decode_batch_size: int = 256  # rows decoded together (a decode step reads the weights once for all of them)
    max_new_tokens: int = 32  # cap on greedy tokens
    extra_new_tokens: int = 6  # greedy tokens beyond each probe's own target length
    chat_extra_new_tokens: int = 16  # the same for chat questions, answered in a sentence ("The capital of … is …")
    precision: Precision = "auto"  # bf16 where the hardware makes it faster, else fp32 (kdyn.device)

    def validate(self) -> None:
        for name in ("batch_size", "decode_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("extra_new_tokens", "chat_extra_new_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be auto, float32 or bfloat16, got '{self.precision}'")


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    return ids


def probe_precision(cfg: ScoreConfig, model: PreTrainedModel) -> str:
    """What `cfg.precision` means for this model's device: "bfloat16" or "float32"."""
    return resolve_precision(cfg.precision, next(model.parameters()).device)


def rival_values(probes: list[Probe]) -> dict[str, list[str]]:
    """probe_id → the other values of its fact's relation that the benchmark holds (targets, aliases and MCQ
    options of the relation's probes), for every open probe: for chat questions an answer that names one of them
    is wrong, and ROUGE-1 leaves out the words a target shares with them (the relation's template).

    The relation is the template id's first field ("<relation>:q:held_out:3"); probes without one have none."""
    values: dict[str, set[str]] = {}
    for p in probes:
        if p.template_id and p.family == "knowledge":
            values.setdefault(p.template_id.split(":")[0], set()).update([p.target, *p.target_aliases, *p.options])
    out = {}
    for p in probes:
        if p.template_id and p.family == "knowledge" and p.probe_type != "mcq":
            own = {v.casefold() for v in [p.target, *p.target_aliases]}
            out[p.probe_id] = sorted(v for v in values.get(p.template_id.split(":")[0], ()) if v.casefold() not in own)
    return out


def score_probes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    probes: list[Probe],
    cfg: ScoreConfig | None = None,
    progress: Any = None,
    rivals: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Score every probe; one dict per probe in input order (columns: see `result_row`).

    `rivals` (see `rival_values`) defaults to those of `probes`; a caller scoring a shard passes the whole set's."""
    cfg = cfg or ScoreConfig()
    rivals = rival_values(probes) if rivals is None else rivals
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = _stop_ids(model, tokenizer)
    rows = build_rows(probes, tokenizer)
    open_rows = [r for r in rows if r.generate]
    mcq_rows = [r for r in rows if not r.generate]
    budgets = [min(cfg.max_new_tokens, len(r.continuation) + (cfg.chat_extra_new_tokens if r.chat else cfg.extra_new_tokens))
               for r in open_rows]  # fmt: skip
    was_training = model.training
    model.eval()
    dtype = torch.bfloat16 if probe_precision(cfg, model) == "bfloat16" else torch.float32
    try:
        with engine.own_forward(model), weights_in(model, dtype):
            scored = engine.score_open(model, open_rows, pad_id, stop, budgets, cfg.batch_size, cfg.decode_batch_size, progress)
            scored += engine.score_options(model, mcq_rows, pad_id, cfg.batch_size, cfg.decode_batch_size, progress)
    finally:
        model.train(was_training)
    raw = {(r.probe_index, r.option): res for r, res in zip(open_rows + mcq_rows, scored)}
    return [result_row(p, i, raw, tokenizer, rivals.get(p.probe_id, [])) for i, p in enumerate(probes)]


def result_row(p: Probe, i: int, raw: dict[tuple[int, int], dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
               rivals: list[str] = ()) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {"probe_id": p.probe_id, "kind": p.kind, "probe_type": p.probe_type, "fact_id": p.fact_id, "k": p.k}
    targets = [p.target, *p.target_aliases]
    if p.probe_type == "mcq":
        opts = [raw[(i, j)] for j in range(p.k)]
        sums = [o["logprob"] for o in opts]
        norm = [o["logprob"] / max(1, len(opt)) for o, opt in zip(opts, p.options)]  # per character (lm-eval acc_norm)
        choice = max(range(p.k), key=lambda j: sums[j])
        row |= {
            "logprob": sums[p.answer_index],
            "first_token_rank": opts[p.answer_index]["first_token_rank"],
            "greedy": None, "em": None, "contains": None, "rouge1_recall": math.nan,
            "choice": choice,
            "choice_norm": max(range(p.k), key=lambda j: norm[j]),
            "option_logprobs": sums,
            "correct": choice == p.answer_index,
        }  # fmt: skip
        return row
    res = raw[(i, -1)]
    greedy = tokenizer.decode(res["greedy_ids"], skip_special_tokens=True)
    if p.probe_type == "arithmetic":
        correct = metrics.arithmetic_correct(greedy, p.target)
    elif p.chat:  # p.prompt is the user's question (the chat template wraps it when the prompt is rendered)
        correct = metrics.qa_correct(greedy, p.target, p.target_aliases, p.prompt, rivals=rivals)
    else:
        correct = metrics.starts_with(greedy, targets)
    row |= {
        "logprob": res["logprob"],
        "first_token_rank": res["first_token_rank"],
        "greedy": greedy,
        "em": metrics.exact_match(greedy, targets),
        "contains": metrics.contains(greedy, targets),
        "rouge1_recall": metrics.rouge1_recall(greedy, targets, rivals),
        "choice": None,
        "choice_norm": None,
        "option_logprobs": None,
        "correct": correct,
    }
    return row
