"""The optimised scorer (kdyn.probe.engine: the target as a draft, merged decode batches, MCQ prompts cached for
their options) gives what a plain reference gives in fp32: one forward per probe (per MCQ option) for the
log-prob and first-token rank, HF `generate` for the greedy answer. The probes include ones where greedy follows
the target for a few tokens, or all of them (a copy of the tiny model trained on them), so the draft's tokens
are accepted without decode steps."""

from __future__ import annotations

import copy

import pytest
import torch

from kdyn.bench.schema import Probe
from kdyn.probe.prompts import build_rows
from kdyn.probe.scorer import ScoreConfig, _stop_ids, score_probes

OPEN = [
    ("Ava Lindqvist was born in", "Lisbon", False),
    ("Marco Dornbex studied at the University of", "Edinburgh", False),
    ("Zed works for", "Quillane Systems", False),
    ("A considerably longer prompt about Tomas Varquil, who works for", "Telmar Biotech", False),
    ("x", "y", False),
    ("Where was Ava Lindqvist born?", "Lisbon", True),
    ("Which company does Zed work for?", "Quillane Systems", True),
    ("Where did Marco Dornbex study?", "University of Edinburgh", True),
    ("What is 3 + 4?", "7", True),
]
MCQ = [
    ("Ava Lindqvist was born in", ["Lisbon", "Oslo", "Rio de Janeiro", "Lyon"], 0),
    ("Zed works for", ["Acme", "Quillane Systems", "Telmar Biotech Holdings"], 1),
    ("Records confirm that Tomas Varquil was born in", ["Kyoto", "Perth", "Lisbon", "Saint Petersburg"], 3),
]
FP32 = dict(precision="float32", max_new_tokens=12, extra_new_tokens=3, chat_extra_new_tokens=6)


def probes() -> list[Probe]:
    out = [Probe(f"o{i}", f"f{i}", "knowledge", "new", "qa" if chat else "cloze", p, chat, t)
           for i, (p, t, chat) in enumerate(OPEN)]  # fmt: skip
    out += [Probe(f"m{i}", f"g{i}", "knowledge", "new", "mcq", p, False, opts[a], options=opts, answer_index=a, k=len(opts))
            for i, (p, opts, a) in enumerate(MCQ)]  # fmt: skip
    return out


@torch.no_grad()
def reference(model, tok, probes: list[Probe], cfg: ScoreConfig) -> dict[tuple[int, int], dict]:
    """Per row: log p(target | prompt) and first-token rank from one forward, greedy ids from HF generate."""
    stop = sorted(_stop_ids(model, tok))
    out = {}
    for r in build_rows(probes, tok):
        logits = model(torch.tensor([r.context + r.continuation])).logits[0].float()
        at = len(r.context) - 1
        lp = torch.log_softmax(logits, -1)
        res = {"logprob": sum(float(lp[at + j, t]) for j, t in enumerate(r.continuation)),
               "first_token_rank": int((logits[at] > logits[at, r.continuation[0]]).sum())}  # fmt: skip
        if r.generate:
            extra = cfg.chat_extra_new_tokens if r.chat else cfg.extra_new_tokens
            budget = min(cfg.max_new_tokens, len(r.continuation) + extra)
            ctx = torch.tensor([r.context])
            gen = model.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=budget, do_sample=False,
                                 eos_token_id=stop, pad_token_id=tok.pad_token_id)[0, len(r.context) :].tolist()  # fmt: skip
            res["greedy_ids"] = gen[: next((j for j, t in enumerate(gen) if t in stop), len(gen))]
            res["accepted"] = next((j for j, t in enumerate(r.continuation) if j >= len(gen) or gen[j] != t), len(r.continuation))
        out[(r.probe_index, r.option)] = res
    return out


@pytest.fixture(scope="module")
def memorised(tiny_lm):
    """A copy of the tiny model trained on the open probes' prompt + target until greedy follows most targets."""
    model = copy.deepcopy(tiny_lm.model).train()
    rows = [r for r in build_rows(probes(), tiny_lm.tokenizer) if r.generate]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        for r in rows:
            ids = torch.tensor([r.context + r.continuation])
            labels = torch.full_like(ids, -100)
            labels[0, len(r.context) :] = ids[0, len(r.context) :]
            model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def check(model, tok, cfg: ScoreConfig) -> dict:
    ps = probes()
    ref = reference(model, tok, ps, cfg)
    rows = score_probes(model, tok, ps, cfg)
    for i, (p, row) in enumerate(zip(ps, rows)):
        if p.probe_type == "mcq":
            for j, lp in enumerate(row["option_logprobs"]):
                assert lp == pytest.approx(ref[(i, j)]["logprob"], abs=1e-4), (p.probe_id, j)
            assert row["first_token_rank"] == ref[(i, p.answer_index)]["first_token_rank"]
        else:
            r = ref[(i, -1)]
            assert row["logprob"] == pytest.approx(r["logprob"], abs=1e-4), p.probe_id
            assert row["first_token_rank"] == r["first_token_rank"], p.probe_id
            assert row["greedy"] == tok.decode(r["greedy_ids"], skip_special_tokens=True), p.probe_id
    return ref


@pytest.mark.parametrize("batch_size, decode_batch_size", [(1, 1), (3, 7), (16, 256)])
def test_random_model_matches_reference(tiny_lm, batch_size, decode_batch_size):
    check(tiny_lm.model, tiny_lm.tokenizer, ScoreConfig(batch_size=batch_size, decode_batch_size=decode_batch_size, **FP32))


@pytest.mark.parametrize("batch_size, decode_batch_size", [(1, 1), (2, 5), (16, 256)])
def test_memorised_targets_match_reference(memorised, tiny_lm, batch_size, decode_batch_size):
    """Greedy follows the target for some tokens (accepted from the prefill), then decoding takes over."""
    ref = check(memorised, tiny_lm.tokenizer, ScoreConfig(batch_size=batch_size, decode_batch_size=decode_batch_size, **FP32))
    lengths = {k: len(r.continuation) for r in build_rows(probes(), tiny_lm.tokenizer) for k in [(r.probe_index, r.option)]}
    accepted = [(r["accepted"], lengths[k]) for k, r in ref.items() if "accepted" in r]
    assert sum(a == n for a, n in accepted) >= 3, accepted  # the whole target accepted
    assert any(2 <= a < n for a, n in accepted), accepted  # part of it, then a mismatch


def test_memorised_target_needs_no_decode_step(memorised, tiny_lm):
    """A probe whose greedy answer is its target plus one token is answered by its prefill alone."""
    tok = tiny_lm.tokenizer
    cfg = ScoreConfig(**(FP32 | {"extra_new_tokens": 1, "chat_extra_new_tokens": 1}))
    ref = reference(memorised, tok, probes(), cfg)
    full = [p for i, p in enumerate(probes())
            if p.probe_type != "mcq" and ref[(i, -1)]["accepted"] == len(build_rows([p], tok)[0].continuation)]  # fmt: skip
    assert full
    calls = []
    hook = memorised.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        rows = score_probes(memorised, tok, full, cfg)
    finally:
        hook.remove()
    assert all(shape[1] > 1 for shape in calls), calls  # prefills (and a shared chat prefix) only
    assert [r["greedy"].lstrip().startswith(p.target) for r, p in zip(rows, full)] == [True] * len(full)
