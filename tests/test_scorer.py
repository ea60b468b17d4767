"""The probe scorer on tiny-random-llama: log-probs equal a hand computation, padding changes nothing,
MCQ choices sit at chance for a random model, and greedy answers match HF generate (fp32 throughout: the default
precision, auto, would be bf16 on some CPUs)."""

from __future__ import annotations

import random

import pytest
import torch

from kdyn.bench.schema import Probe
from kdyn.probe.scorer import ScoreConfig, score_probes


def open_probe(i: int, prompt: str, target: str, chat: bool = False, ptype: str = "cloze") -> Probe:
    return Probe(f"p{i}", f"f{i}", "knowledge", "new", ptype, prompt, chat, target)


PROMPTS = [
    ("Ava Lindqvist was born in", "Lisbon"),
    ("The capital of France is", "Paris"),
    ("Zed", "Quillane Systems"),
    ("Marco Dornbex studied at the University of", "Edinburgh"),
    ("x", "y"),
    ("A considerably longer prompt about Tomas Varquil, who works for", "Telmar Biotech"),
]


def many_probes(n: int = 16) -> list[Probe]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        prompt, target = PROMPTS[i % len(PROMPTS)]
        out.append(open_probe(i, prompt + " " * 0 + rng.choice(["", " now", " then,"]) if i >= len(PROMPTS) else prompt,
                              target, chat=(i % 5 == 0)))  # fmt: skip
    return out


def hand_logprob(model, tokenizer, prompt: str, target: str) -> float:
    ctx = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    cont = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def test_logprob_equals_hand_computation(tiny_lm):
    probes = [open_probe(i, p, t) for i, (p, t) in enumerate(PROMPTS)]
    rows = score_probes(tiny_lm.model, tiny_lm.tokenizer, probes, ScoreConfig(precision="float32", batch_size=4))
    for p, r in zip(probes, rows):
        assert r["logprob"] == pytest.approx(hand_logprob(tiny_lm.model, tiny_lm.tokenizer, p.prompt, p.target), abs=1e-4)


def test_first_token_rank_matches_sort(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    p = open_probe(0, "The capital of France is", "Paris")
    (row,) = score_probes(model, tok, [p], ScoreConfig(precision="float32"))
    ctx = tok(p.prompt)["input_ids"]
    first = tok(" Paris", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        logits = model(torch.tensor([ctx])).logits[0, -1]
    assert row["first_token_rank"] == int((logits > logits[first]).sum())


def test_padding_does_not_change_scores(tiny_lm):
    probes = many_probes(16)
    one = score_probes(tiny_lm.model, tiny_lm.tokenizer, probes, ScoreConfig(precision="float32", batch_size=1))
    sixteen = score_probes(tiny_lm.model, tiny_lm.tokenizer, probes, ScoreConfig(precision="float32", batch_size=16))
    for a, b in zip(one, sixteen):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
        assert a["first_token_rank"] == b["first_token_rank"]
        assert a["greedy"] == b["greedy"]
        assert a["correct"] == b["correct"]


def test_greedy_matches_hf_generate(tiny_lm):
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    p = open_probe(0, "Ava Lindqvist was born in", "Lisbon")
    (row,) = score_probes(model, tok, [p], ScoreConfig(precision="float32", max_new_tokens=10, extra_new_tokens=10))
    ids = tok(p.prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip
    expected = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert row["greedy"] == expected


def test_chat_probes_use_chat_template(tiny_lm):
    from kdyn.probe.prompts import render

    text, sep, templated = render(open_probe(0, "Where?", "Here", chat=True), tiny_lm.tokenizer)
    assert text.startswith("<|im_start|>user\nWhere?") and text.endswith("assistant\n") and sep == "" and templated


@pytest.mark.parametrize("k", [2, 4, 5])
def test_mcq_random_model_sits_at_chance(tiny_lm, k):
    """Equal-length options (one byte token each per char), answers at random positions: acc ≈ 1/k."""
    rng = random.Random(k)
    letters = "bcdfghjklmnpqrstvwxz"
    probes = []
    for i in range(300):
        options = ["".join(rng.choice(letters) for _ in range(4)) for _ in range(k)]
        if len(set(options)) < k:
            continue
        ans = rng.randrange(k)
        probes.append(Probe(f"m{i}", f"f{i}", "knowledge", "new", "mcq", f"Item {i} is", False, options[ans],
                            options=options, answer_index=ans, k=k))  # fmt: skip
    rows = score_probes(tiny_lm.model, tiny_lm.tokenizer, probes, ScoreConfig(precision="float32", batch_size=64))
    acc = sum(r["correct"] for r in rows) / len(rows)
    sd = (1 / k * (1 - 1 / k) / len(rows)) ** 0.5
    assert abs(acc - 1 / k) < 4 * sd, (acc, 1 / k)
    assert all(0 <= r["choice"] < k and r["greedy"] is None for r in rows)


def test_mcq_choice_independent_of_option_order(tiny_lm):
    opts = ["Lisbon", "Paris", "Oslo", "Rome"]
    a = Probe("a", "f", "knowledge", "new", "mcq", "X was born in", False, "Paris", options=opts, answer_index=1, k=4)
    rev = opts[::-1]
    b = Probe("b", "f", "knowledge", "new", "mcq", "X was born in", False, "Paris", options=rev, answer_index=2, k=4)
    ra, rb = score_probes(tiny_lm.model, tiny_lm.tokenizer, [a, b], ScoreConfig(precision="float32"))
    assert opts[ra["choice"]] == rev[rb["choice"]]
    assert ra["logprob"] == pytest.approx(rb["logprob"], abs=1e-5)


def test_mcq_option_logprobs_equal_hand_computation(tiny_lm):
    """Options reuse their prompt's cache; each option's score must still be log p(option | prompt)."""
    from kdyn.probe.prompts import build_rows
    from kdyn.probe.engine import score_options

    tok, model = tiny_lm.tokenizer, tiny_lm.model
    probes = [
        Probe("a", "f", "knowledge", "new", "mcq", "X was born in", False, "Paris",
              options=["Lisbon", "Paris", "Oslo", "Rio de Janeiro"], answer_index=1, k=4),
        Probe("b", "g", "knowledge", "new", "mcq", "A much longer prompt: Y works for", False, "Acme",
              options=["Acme", "Telmar Biotech Holdings"], answer_index=0, k=2),
    ]  # fmt: skip
    rows = build_rows(probes, tok)
    scored = score_options(model, rows, tok.pad_token_id, batch_size=1, group_size=8)  # prompts stacked for options
    for r, res in zip(rows, scored):
        p = probes[r.probe_index]
        assert res["logprob"] == pytest.approx(hand_logprob(model, tok, p.prompt, p.options[r.option]), abs=1e-4)
    full = score_probes(model, tok, probes, ScoreConfig(precision="float32", batch_size=3))  # options split across batches
    assert full[0]["logprob"] == pytest.approx(hand_logprob(model, tok, "X was born in", "Paris"), abs=1e-4)


def test_shared_chat_prefix_changes_nothing(tiny_lm):
    """Chat probes share the template's opening; it runs once per batch and must not change any score."""
    probes = [open_probe(i, f"Where was person {i} born{'?' * (i % 3 + 1)}", t, chat=True)
              for i, t in enumerate(["Lisbon", "Oslo", "Rio de Janeiro", "Lyon", "Kyoto", "Perth"])]  # fmt: skip
    shared = score_probes(tiny_lm.model, tiny_lm.tokenizer, probes, ScoreConfig(precision="float32", batch_size=6))
    alone = score_probes(tiny_lm.model, tiny_lm.tokenizer, probes, ScoreConfig(precision="float32", batch_size=1))
    for a, b in zip(shared, alone):
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-4)
        assert a["first_token_rank"] == b["first_token_rank"] and a["greedy"] == b["greedy"]


def test_chat_questions_get_a_sentence_budget(tiny_lm):
    """A chat answer may run a sentence before naming the target: its greedy budget is the target's length plus
    chat_extra_new_tokens (capped by max_new_tokens), a cloze continuation's plus extra_new_tokens."""
    tok, model = tiny_lm.tokenizer, tiny_lm.model
    cfg = ScoreConfig(precision="float32", max_new_tokens=40, extra_new_tokens=2, chat_extra_new_tokens=12)
    cloze, chat = score_probes(model, tok, [open_probe(0, "Born in", "Lisbon"), open_probe(1, "Where?", "Lisbon", chat=True)],
                               cfg)  # fmt: skip
    target_len = len(tok(" Lisbon", add_special_tokens=False)["input_ids"])
    n_cloze = len(tok(cloze["greedy"], add_special_tokens=False)["input_ids"])
    n_chat = len(tok(chat["greedy"], add_special_tokens=False)["input_ids"])
    assert n_cloze <= target_len + 2 < n_chat <= len(tok("Lisbon", add_special_tokens=False)["input_ids"]) + 12
