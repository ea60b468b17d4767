"""The scorer's forward passes (what `kdyn.probe.scorer` runs), built so that no token is computed twice and
few are padding: a probe pass is FLOP-bound, so its time is the tokens it runs.

Open probes: one prefill per chunk of rows (rows sorted by length, cut where more padding would cost more
than another forward: `chunks`) runs prompt + target, each row right-aligned (left padding; position ids
count only real tokens, so padding changes nothing):

    [pad pad p p p p t t]     logits at the last prompt column and at every target column give the
    [p p p p p p t t t t]     target's log-prob, the first token's rank, and greedy tokens for free

The target is the draft of a speculative decoder: the greedy token at each of those columns is their argmax,
and while it equals the target token the next one is already computed too, so greedy tokens up to and
including the first mismatch cost no decode step (trained models reproduce memorised targets: later
checkpoints decode least). The target columns past the mismatch are masked out of the row's cache, so
decoding continues from exactly the greedy path. Prefill chunks are then merged into decode batches of up to
`decode_batch_size` rows (caches left-padded to the longest): a decode step reads the weights once for all
of them, and rows leave the batch as they finish.

MCQ probes: each prompt runs once; the options' tokens (all but the last, which predicts nothing) run on
copies of their prompt's cache, options of similar length together.

Logits are computed only at the columns a score reads (`_logits_at`): the vocab projection is a fifth of a
small model's weights.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel

from kdyn.probe.prompts import Row


@contextlib.contextmanager
def weights_in(model: PreTrainedModel, dtype: torch.dtype) -> Iterator[None]:
    """Run with the floating-point weights cast to `dtype`, restored bit for bit afterwards (the model may be
    mid-training). Faster than autocast, which casts every fp32 weight again at each linear call (each step)."""
    saved = []
    with torch.no_grad():
        for p in model.parameters():  # tied weights are one parameter: cast once
            if p.is_floating_point() and p.dtype != dtype:
                saved.append((p, p.data))
                p.data = p.data.to(dtype)
    try:
        yield
    finally:
        for p, data in saved:
            p.data = data


@contextlib.contextmanager
def own_forward(model: PreTrainedModel) -> Iterator[None]:
    """Run without Accelerate's mixed-precision wrapper, which `unwrap_model` leaves on a model being trained in
    bf16 (autocast inside `forward`): the pass runs in the probe's own precision. Restored afterwards."""
    wrapped, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


@contextlib.contextmanager
def _logits_at(model: PreTrainedModel, keep: torch.Tensor) -> Iterator[None]:
    """Inside, a forward's logits are [N, V]: the vocab projection runs only on the hidden states where `keep`
    ([B, T] bool) is true, in row-major order (a hook on the output embedding, so any causal LM works)."""
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0][keep],))
    try:
        yield
    finally:
        handle.remove()


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _shared_prefix(rows: list[Row]) -> int:
    """Length of the token prefix every context shares (a chat template's system turn), keeping ≥ 1 own token;
    0 when under 4 tokens (not worth its own forward)."""
    if len(rows) < 2:
        return 0
    first = rows[0].context
    n = min(len(r.context) for r in rows) - 1
    shared = next((j for j in range(n) if any(r.context[j] != first[j] for r in rows)), max(n, 0))
    return shared if shared >= 4 else 0


def _kv(cache: DynamicCache) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    return [(layer.keys, layer.values) if layer.is_initialized else (None, None) for layer in cache.layers]


def _cache_from(model: PreTrainedModel, kv: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> DynamicCache:
    """A new cache holding these [B, heads, T, head_dim] keys and values (layer types from the model's config)."""
    return DynamicCache(ddp_cache_data=kv, config=model.config)


def _stack(model: PreTrainedModel, parts: list[tuple[DynamicCache, torch.Tensor]]) -> tuple[DynamicCache, torch.Tensor] | None:
    """One batch from several (cache, [B, T] mask) pairs: each left-padded to the longest T with masked columns.
    None when a layer does not hold every column (a sliding-window layer past its window)."""
    if not all(k is None or k.shape[-2] == mask.shape[1] for cache, mask in parts for k, _ in _kv(cache)):
        return None
    T = max(mask.shape[1] for _, mask in parts)

    def cat(tensors: list[torch.Tensor | None], dim: int) -> torch.Tensor | None:
        if tensors[0] is None:
            return None
        pads = [[0, 0] * (t.dim() - 1 - dim) + [T - t.shape[dim], 0] for t in tensors]
        return torch.cat([F.pad(t, pad) for t, pad in zip(tensors, pads)], dim=0)

    layers = zip(*(_kv(cache) for cache, _ in parts))
    kv = [(cat([k for k, _ in layer], 2), cat([v for _, v in layer], 2)) for layer in layers]
    return _cache_from(model, kv), cat([mask for _, mask in parts], 1)


def forward_cost(device: torch.device) -> int:
    """A forward's fixed cost, in tokens' worth of compute: it reads every weight however few tokens it runs. On
    a CPU a 1-token forward of SmolLM2-135M takes as long as ~16 tokens in a large batch; a GPU runs small forwards
    at launch speed, so there the fewest forwards win."""
    return 16 if device.type == "cpu" else 1 << 20


def chunks(items: list[int], width: Callable[[int], int], cap: int, overhead: int) -> list[list[int]]:
    """`items` sorted by `width` and cut into consecutive batches of at most `cap`, each padded to its widest
    item: the cut with the fewest tokens when each forward costs `overhead` tokens more (exact, by dynamic
    programming over the cut points)."""
    items = sorted(items, key=width)
    w = [width(i) for i in items]
    best = [0] + [float("inf")] * len(items)  # best[j]: the cheapest cost of items[:j]
    cut = [0] * (len(items) + 1)
    for j in range(1, len(items) + 1):
        for i in range(max(0, j - cap), j):
            cost = best[i] + overhead + (j - i) * w[j - 1]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    out, j = [], len(items)
    while j:
        out.append(items[cut[j] : j])
        j = cut[j]
    return out[::-1]


@dataclass
class Decoding:
    """Rows mid-generation."""

    rows: list[int]  # each row's index in the caller's lists
    cache: DynamicCache  # [B, heads, T, head_dim] per layer
    mask: torch.Tensor  # [B, T]: 1 = a column the row attends to (its prompt and its greedy tokens so far)
    tok: torch.Tensor  # [B]: the row's last greedy token, not yet in the cache


def merge(model: PreTrainedModel, parts: list[Decoding]) -> list[Decoding]:
    """One decode batch from several (unchanged when their caches cannot be stacked)."""
    stacked = _stack(model, [(p.cache, p.mask) for p in parts]) if len(parts) > 1 else None
    if stacked is None:
        return parts
    cache, mask = stacked
    return [Decoding([r for p in parts for r in p.rows], cache, mask, torch.cat([p.tok for p in parts]))]


@torch.inference_mode()
def prefill_open(model: PreTrainedModel, rows: list[Row], pad_id: int, budgets: list[int], stop: set[int],
                 prefixes: dict[tuple[int, ...], DynamicCache] | None = None,
                 ) -> tuple[list[dict[str, Any]], Decoding | None]:  # fmt: skip
    """Target log-prob, first-token rank and the greedy tokens the target gives for free (`greedy_ids`, up to
    the row's budget); the rows still generating come back as a Decoding (None when all are done)."""
    device = next(model.parameters()).device
    B = len(rows)
    # a prefix every row shares (the chat template's system turn) runs once (`prefixes` keeps it for the next
    # chunk); its cache is copied to each row
    L = _shared_prefix(rows)
    cache = DynamicCache(config=model.config)
    if L:
        prefixes = {} if prefixes is None else prefixes
        key = tuple(rows[0].context[:L])
        if key not in prefixes:
            model(input_ids=torch.tensor([key], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1)
            prefixes[key] = cache
        cache = copy.deepcopy(prefixes[key])  # one row: small
        cache.batch_repeat_interleave(B)
    seqs = [r.context[L:] + r.continuation for r in rows]
    W = max(map(len, seqs))
    ids = torch.full((B, W), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L + W), dtype=torch.long)
    keep = torch.zeros((B, W), dtype=torch.bool)
    for i, (r, s) in enumerate(zip(rows, seqs)):
        ids[i, W - len(s) :] = torch.tensor(s)
        mask[i, : L] = 1
        mask[i, L + W - len(s) :] = 1
        keep[i, W - len(r.continuation) - 1 :] = True  # the last prompt column and every target column
    ids, mask, keep = ids.to(device), mask.to(device), keep.to(device)
    with _logits_at(model, keep):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)[:, L:], past_key_values=cache,
                       use_cache=True).logits.float()  # [N, V], N = Σ (target length + 1)  # fmt: skip
    # each row's columns predict its target tokens and then one more (no target: index 0, unread)
    targets = torch.tensor([t for r in rows for t in [*r.continuation, 0]], device=device)
    token_lp = torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1).tolist()
    starts = torch.tensor([0, *[len(r.continuation) + 1 for r in rows]]).cumsum(0)[:-1].tolist()
    firsts = torch.tensor(starts, device=device)
    ranks = (logits[firsts] > logits[firsts, targets[firsts]][:, None]).sum(-1).tolist()
    argmax = logits.argmax(-1).tolist()
    results, alive, last, cut = [], [], [], []
    for i, (r, s0) in enumerate(zip(rows, starts)):
        c = len(r.continuation)
        greedy = argmax[s0 : s0 + c + 1]
        accepted = next((j for j in range(c) if greedy[j] != r.continuation[j]), c)
        known = greedy[: accepted + 1][: budgets[i]]
        results.append({"logprob": sum(token_lp[s0 : s0 + c]), "first_token_rank": ranks[i], "greedy_ids": known})
        cut.append(L + W - c + accepted)
        if len(known) < budgets[i] and not stop.intersection(known):
            alive.append(i)
            last.append(known[-1])
    if not alive:
        return results, None
    # the target columns past the accepted ones are off the greedy path: out of the row's attention from here on
    mask = mask * (torch.arange(L + W, device=device) < torch.tensor(cut, device=device)[:, None])
    if len(alive) < B:
        cache.batch_select_indices(torch.tensor(alive, device=device))
    return results, Decoding(alive, cache, mask[alive], torch.tensor(last, device=device))


@torch.inference_mode()
def decode(model: PreTrainedModel, d: Decoding, out: list[list[int]], budgets: list[int], stop: set[int]) -> None:
    """Greedy steps, appending to out[row], until each row emits a stop token or fills its budget. A row that is
    done leaves the batch (its cache rows are dropped); a row's tokens depend only on its own prompt."""
    rows, cache, mask, tok = d.rows, d.cache, d.mask, d.tok
    pos = mask.sum(-1)  # the next token's position: the row's real tokens so far
    while rows:
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        step = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], past_key_values=cache,
                     use_cache=True)  # fmt: skip
        tok, pos = step.logits[:, -1].argmax(-1), pos + 1
        keep = []
        for j, (row, t) in enumerate(zip(rows, tok.tolist())):
            out[row].append(t)
            if t not in stop and len(out[row]) < budgets[row]:
                keep.append(j)
        if len(keep) < len(rows):
            rows = [rows[j] for j in keep]
            if rows:
                idx = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(idx)
                mask, tok, pos = mask[idx], tok[idx], pos[idx]


def score_open(model: PreTrainedModel, rows: list[Row], pad_id: int, stop: set[int], budgets: list[int],
               batch_size: int, decode_batch_size: int,
               progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Open rows: prefill chunks of at most `batch_size` rows of similar length (chat rows apart, so a chunk shares
    the chat template's opening), greedy decoding in merged batches of up to `decode_batch_size` rows."""
    overhead = forward_cost(next(model.parameters()).device)
    batches: list[list[int]] = []
    for chat in (False, True):
        same = [i for i, r in enumerate(rows) if r.chat == chat]
        batches += chunks(same, lambda i: len(rows[i].context) + len(rows[i].continuation), batch_size, overhead)
    prefixes: dict[tuple[int, ...], DynamicCache] = {}
    results: list[dict[str, Any]] = [{} for _ in rows]
    greedy: list[list[int]] = [[] for _ in rows]  # each row's greedy_ids list, appended to while decoding
    waiting: list[Decoding] = []

    def flush() -> None:
        n = sum(len(d.rows) for d in waiting)
        for d in merge(model, waiting):
            decode(model, d, greedy, budgets, stop)
        waiting.clear()
        if progress is not None and n:
            progress(n)

    for chunk in batches:
        scored, d = prefill_open(model, [rows[i] for i in chunk], pad_id, [budgets[i] for i in chunk], stop, prefixes)
        for i, res in zip(chunk, scored):
            results[i], greedy[i] = res, res["greedy_ids"]
        if d is not None:
            d.rows = [chunk[j] for j in d.rows]
            # chat rows decode apart from the rest: their budgets are longer, so a mixed batch would run on
            # with the chat rows alone
            full = sum(len(w.rows) for w in waiting) + len(d.rows) > decode_batch_size
            if full or (waiting and rows[waiting[0].rows[0]].chat != rows[chunk[0]].chat):
                flush()
            waiting.append(d)
        if progress is not None:
            progress(len(chunk) - (len(d.rows) if d is not None else 0))
    flush()
    for res in results:  # the greedy text ends before the first stop token
        ids = res["greedy_ids"]
        res["greedy_ids"] = ids[: next((j for j, t in enumerate(ids) if t in stop), len(ids))]
    return results


@torch.inference_mode()
def score_options(model: PreTrainedModel, rows: list[Row], pad_id: int, batch_size: int, group_size: int,
                  progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """MCQ rows: log p(option | prompt) and the option's first-token rank. Up to `group_size` prompts at a time
    run once each (in forwards of at most `batch_size`, `chunks`); their options' tokens then run on copies of
    the prompts' caches, options of similar length together."""
    device = next(model.parameters()).device
    by_probe: dict[int, list[int]] = {}
    for j, r in enumerate(rows):
        by_probe.setdefault(r.probe_index, []).append(j)
    probes = sorted(by_probe, key=lambda p: len(rows[by_probe[p][0]].context))
    results: list[dict[str, Any]] = [{} for _ in rows]
    overhead = forward_cost(device)
    for s in range(0, len(probes), group_size):
        group = probes[s : s + group_size]
        batches = chunks(list(range(len(group))), lambda u: len(rows[by_probe[group[u]][0]].context), batch_size, overhead)
        parts = [_prompt_cache(model, [rows[by_probe[group[u]][0]].context for u in b], pad_id, device) for b in batches]
        stacked = _stack(model, [(c, m) for c, m, _ in parts]) if len(parts) > 1 else None
        units = [(*stacked, torch.cat([lg for _, _, lg in parts]), [group[u] for b in batches for u in b])] if stacked \
            else [(*part, [group[u] for u in b]) for part, b in zip(parts, batches)]  # fmt: skip
        for cache, mask, last, members in units:  # last: [U, V], each prompt's next-token logits
            last_lp = torch.log_softmax(last, -1)
            options = [(u, j) for u, p in enumerate(members) for j in by_probe[p]]
            for u, j in options:
                first = rows[j].continuation[0]
                results[j] = {"logprob": float(last_lp[u, first]), "first_token_rank": int((last[u] > last[u, first]).sum())}
            longer = [k for k, (_, j) in enumerate(options) if len(rows[j].continuation) > 1]
            for b in chunks(longer, lambda k: len(rows[options[k][1]].continuation) - 1, group_size, overhead):
                _score_option_tokens(model, rows, [options[k] for k in b], _kv(cache), mask, pad_id, results)
            if progress is not None:
                progress(len(options))
    return results


def _prompt_cache(model: PreTrainedModel, contexts: list[list[int]], pad_id: int,
                  device: torch.device) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Left-padded prompts through the model: their cache, [U, P] mask and last-column logits [U, V]."""
    P = max(map(len, contexts))
    ids = torch.full((len(contexts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), P), dtype=torch.long)
    for u, ctx in enumerate(contexts):
        ids[u, P - len(ctx) :], mask[u, P - len(ctx) :] = torch.tensor(ctx), 1
    ids, mask = ids.to(device), mask.to(device)
    cache = DynamicCache(config=model.config)
    last = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), past_key_values=cache,
                 use_cache=True, logits_to_keep=1).logits[:, -1].float()  # fmt: skip
    return cache, mask, last


def _score_option_tokens(model: PreTrainedModel, rows: list[Row], same: list[tuple[int, int]], kv: list, mask: torch.Tensor,
                         pad_id: int, results: list[dict[str, Any]]) -> None:  # fmt: skip
    """Adds to each option's log-prob the terms of its tokens 1.. (predicted by the prompt + its tokens before)."""
    device = mask.device
    C = max(len(rows[j].continuation) for _, j in same)
    opt = torch.full((len(same), C), pad_id, dtype=torch.long)
    opt_mask = torch.zeros((len(same), C - 1), dtype=torch.long)
    for n, (_, j) in enumerate(same):
        cont = rows[j].continuation
        opt[n, : len(cont)], opt_mask[n, : len(cont) - 1] = torch.tensor(cont), 1
    opt, opt_mask = opt.to(device), opt_mask.to(device)
    sel = torch.tensor([u for u, _ in same], device=device)
    sub = _cache_from(model, [(None, None) if k is None else (k[sel], v[sel]) for k, v in kv])
    start = mask[sel].sum(-1, keepdim=True)  # an option's first position = its prompt's length
    out = model(input_ids=opt[:, :-1], attention_mask=torch.cat([mask[sel], opt_mask], -1),
                position_ids=start + torch.arange(C - 1, device=device), past_key_values=sub,
                use_cache=True).logits.float()  # [R, C-1, V]: predicts option tokens 1..C-1  # fmt: skip
    lp = torch.log_softmax(out, -1).gather(-1, opt[:, 1:, None]).squeeze(-1).masked_fill(opt_mask == 0, 0.0)
    for (_, j), x in zip(same, lp.sum(-1).tolist()):
        results[j]["logprob"] += x
