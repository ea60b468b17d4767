"""Batched probe scoring: one forward pass per batch gives the target log-prob and first-token rank,
and the same pass's KV cache (cropped to the prompt) seeds greedy generation.

Layout of a batch (prompts left-padded so they all end at column P, targets right-padded):

    [pad pad p p p p | t t pad]      position_ids count only real tokens, so padding changes nothing
    [p p p p p p p p | t t t  ]
                     ^ P

logits at columns P-1 .. P+C-2 predict the target tokens; the cache cropped to P continues the
prompt for generation. MCQ probes become one row per option (no generation).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from kdyn.bench.schema import Probe
from kdyn.device import Precision, resolve_precision
from kdyn.probe import metrics
from kdyn.probe.prompts import Row, build_rows


@dataclass
class ScoreConfig:
    batch_size: int = 32
    max_new_tokens: int = 32  # cap on greedy tokens
    extra_new_tokens: int = 6  # greedy tokens beyond each probe's own target length
    chat_extra_new_tokens: int = 16  # the same for chat questions, answered in a sentence ("The capital of … is …")
    precision: Precision = "float32"  # "auto": bf16 autocast where the hardware makes it faster

    def validate(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")


def _stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    ids = set()
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    return ids


def _pad_batch(rows: list[Row], pad_id: int, skip: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Contexts (minus their first `skip` tokens, held in the cache) left-padded to P, targets right-padded to C."""
    P = max(len(r.context) - skip for r in rows)
    C = max(len(r.continuation) for r in rows)
    ids = torch.full((len(rows), P + C), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), P + C), dtype=torch.long)
    for i, r in enumerate(rows):
        ctx = r.context[skip:]
        ids[i, P - len(ctx) : P] = torch.tensor(ctx)
        mask[i, P - len(ctx) : P] = 1
        ids[i, P : P + len(r.continuation)] = torch.tensor(r.continuation)
        mask[i, P : P + len(r.continuation)] = 1
    return ids.to(device), mask.to(device), P, C


def _shared_prefix(rows: list[Row]) -> int:
    """Length of the token prefix every context shares (a chat template's system turn), keeping ≥ 1 own token."""
    first = rows[0].context
    n = min(len(r.context) for r in rows) - 1
    for j in range(n):
        if any(r.context[j] != first[j] for r in rows):
            return j
    return max(n, 0)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def _score_batch(
    model: PreTrainedModel, rows: list[Row], pad_id: int, stop: set[int], cfg: ScoreConfig
) -> list[dict[str, Any]]:
    device = next(model.parameters()).device
    # a prefix shared by the whole batch (e.g. the chat template's system turn) runs once and its cache is
    # copied to every row: [shared | pad … own prompt | target pad]; position ids skip the padding
    L = _shared_prefix(rows) if len(rows) > 1 else 0
    L = L if L >= 4 else 0
    cache = DynamicCache()
    if L:
        model(input_ids=torch.tensor([rows[0].context[:L]], device=device), past_key_values=cache, use_cache=True,
              logits_to_keep=1)  # fmt: skip
        cache.batch_repeat_interleave(len(rows))
    ids, own_mask, P, C = _pad_batch(rows, pad_id, L, device)
    mask = torch.cat([torch.ones((len(rows), L), dtype=torch.long, device=device), own_mask], dim=-1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)[:, L:], past_key_values=cache,
                use_cache=True, logits_to_keep=C + 1)  # fmt: skip
    logits = out.logits[:, :C].float()  # [B, C, V]: columns P-1 .. P+C-2
    logprobs = torch.log_softmax(logits, dim=-1)
    cont = ids[:, P : P + C]  # [B, C]
    valid = own_mask[:, P : P + C].bool()
    token_lp = logprobs.gather(-1, cont.unsqueeze(-1)).squeeze(-1).masked_fill(~valid, 0.0)
    first_logit = logits[:, 0].gather(-1, cont[:, :1])  # [B, 1]
    ranks = (logits[:, 0] > first_logit).sum(-1)
    results = [
        {"logprob": float(token_lp[i].sum()), "first_token_rank": int(ranks[i])}
        for i, r in enumerate(rows)
    ]
    # greedy continuation of the prompt, reusing the prompt's cache
    cache.crop(-C)  # drop the target columns: the cache now ends at the prompt
    budgets = [min(cfg.max_new_tokens, len(r.continuation) + (cfg.chat_extra_new_tokens if r.chat else cfg.extra_new_tokens))
               for r in rows]  # fmt: skip
    for res, toks in zip(results, _greedy(model, cache, mask[:, : L + P], logits[:, 0].argmax(-1), budgets, stop)):
        res["greedy_ids"] = toks
    return results


def _greedy(model: PreTrainedModel, cache: DynamicCache, mask: torch.Tensor, first: torch.Tensor, budgets: list[int],
            stop: set[int]) -> list[list[int]]:  # fmt: skip
    """Greedy tokens per row after `first` ([B]), until a stop token or the row's own budget.

    A row that is done leaves the batch (its cache rows are dropped), so short answers cost nothing while
    long ones finish; each row's tokens depend only on its own prompt, never on the batch it sat in.
    """
    out: list[list[int]] = [[t] for t in first.tolist()]
    alive = [i for i in range(len(out)) if out[i][0] not in stop and budgets[i] > 1]
    if not alive:
        return [[] if toks[0] in stop else toks for toks in out]
    if len(alive) < len(out):
        cache.batch_select_indices(torch.tensor(alive, dtype=torch.long, device=mask.device))
    mask, tok = mask[alive], first[alive]
    pos = _positions(mask)[:, -1]
    while alive:
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)  # [A, T+1]
        pos = pos + 1
        step = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], past_key_values=cache,
                     use_cache=True)  # fmt: skip
        tok = step.logits[:, -1].argmax(-1)  # [A]
        keep = []
        for j, (i, t) in enumerate(zip(alive, tok.tolist())):
            out[i].append(t)
            if t not in stop and len(out[i]) < budgets[i]:
                keep.append(j)
        if len(keep) < len(alive):
            alive = [alive[j] for j in keep]
            if not alive:
                break
            idx = torch.tensor(keep, dtype=torch.long, device=mask.device)
            cache.batch_select_indices(idx)
            mask, tok, pos = mask[idx], tok[idx], pos[idx]
    return [toks[: next((j for j, t in enumerate(toks) if t in stop), len(toks))] for toks in out]


@torch.inference_mode()
def _score_options(model: PreTrainedModel, rows: list[Row], pad_id: int) -> list[dict[str, Any]]:
    """MCQ rows: each distinct prompt is run once, its cache copied to its options (k× fewer prompt tokens)."""
    device = next(model.parameters()).device
    contexts: dict[int, int] = {}  # probe index -> row in the prompt batch
    for r in rows:
        contexts.setdefault(r.probe_index, len(contexts))
    firsts = {r.probe_index: r for r in rows}
    prompts = [dataclasses.replace(firsts[i], continuation=[]) for i in sorted(contexts, key=contexts.get)]
    ids, mask, _, _ = _pad_batch(prompts, pad_id, 0, device)  # [U, P], left-padded
    cache = DynamicCache()
    prefill = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), past_key_values=cache,
                    use_cache=True, logits_to_keep=1)  # fmt: skip
    last = torch.log_softmax(prefill.logits[:, -1].float(), -1)  # [U, V]
    last_logits = prefill.logits[:, -1].float()
    select = torch.tensor([contexts[r.probe_index] for r in rows], device=device)
    cache.batch_select_indices(select)  # [R, P] (repeated indices copy a prompt to each of its options)
    C = max(len(r.continuation) for r in rows)
    opt = torch.full((len(rows), C), pad_id, dtype=torch.long)
    opt_mask = torch.zeros_like(opt)
    for j, r in enumerate(rows):
        opt[j, : len(r.continuation)], opt_mask[j, : len(r.continuation)] = torch.tensor(r.continuation), 1
    opt, opt_mask = opt.to(device), opt_mask.to(device)
    full_mask = torch.cat([mask[select], opt_mask], dim=-1)
    start = mask[select].sum(-1, keepdim=True)  # first option position = prompt length
    out = model(input_ids=opt, attention_mask=full_mask, position_ids=start + torch.arange(C, device=device),
                past_key_values=cache, use_cache=True)  # fmt: skip
    lp = torch.log_softmax(out.logits[:, :-1].float(), -1)  # predicts option tokens 1..C-1
    results = []
    for j, r in enumerate(rows):
        u, toks = contexts[r.probe_index], r.continuation
        total = float(last[u, toks[0]]) + sum(float(lp[j, t - 1, tok]) for t, tok in enumerate(toks) if t > 0)
        rank = int((last_logits[u] > last_logits[u, toks[0]]).sum())
        results.append({"logprob": total, "first_token_rank": rank})
    return results


def _batches(rows: list[Row], batch_size: int) -> list[list[Row]]:
    """Group rows of similar length (less padding); generation and mcq rows never share a batch."""
    # mcq rows stay in probe order so a probe's options share a batch (and its prompt's cache)
    order = sorted(rows, key=lambda r: (r.generate, len(r.context), r.probe_index, r.option))
    out: list[list[Row]] = []
    for r in order:
        if out and len(out[-1]) < batch_size and out[-1][0].generate == r.generate:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def score_probes(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    probes: list[Probe],
    cfg: ScoreConfig | None = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Score every probe; one dict per probe in input order (columns: see `result_row`)."""
    cfg = cfg or ScoreConfig()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = _stop_ids(model, tokenizer)
    rows = build_rows(probes, tokenizer)
    raw: dict[tuple[int, int], dict[str, Any]] = {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    use_bf16 = resolve_precision(cfg.precision, device) == "bfloat16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    with autocast:
        for batch in _batches(rows, cfg.batch_size):
            scored = _score_batch(model, batch, pad_id, stop, cfg) if batch[0].generate else _score_options(model, batch, pad_id)
            for r, res in zip(batch, scored):
                raw[(r.probe_index, r.option)] = res
            if progress is not None:
                progress(len(batch))
    model.train(was_training)
    return [result_row(p, i, raw, tokenizer) for i, p in enumerate(probes)]


def result_row(p: Probe, i: int, raw: dict[tuple[int, int], dict[str, Any]], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
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
            "correct": choice == p.answer_index,
        }  # fmt: skip
        return row
    res = raw[(i, -1)]
    greedy = tokenizer.decode(res["greedy_ids"], skip_special_tokens=True)
    if p.probe_type == "arithmetic":
        correct = metrics.arithmetic_correct(greedy, p.target)
    elif p.chat:
        correct = metrics.first_sentence_names(greedy, targets)
    else:
        correct = metrics.starts_with(greedy, targets)
    row |= {
        "logprob": res["logprob"],
        "first_token_rank": res["first_token_rank"],
        "greedy": greedy,
        "em": metrics.exact_match(greedy, targets),
        "contains": metrics.contains(greedy, targets),
        "rouge1_recall": metrics.rouge1_recall(greedy, targets),
        "choice": None,
        "choice_norm": None,
        "correct": correct,
    }
    return row
