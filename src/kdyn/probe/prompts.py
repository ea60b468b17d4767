"""Probe → token ids: the rendered prompt and the target continuation, as the scorer sees them.

Question-style probes (`chat: true`) use the model's chat template when it has one, else a plain
"Question: …\nAnswer:" frame. Cloze and MCQ prompts are raw text continued by " target"; a prompt that
ends in whitespace gives it to the continuation, as lm-eval does ("…as " + "X" is scored as "…as" + " X"). The
continuation's tokens are those of prompt+continuation past the prompt's tokens (as lm-eval does),
so a tokenizer that merges across the boundary still scores the exact target text.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from kdyn.bench.schema import Probe


@dataclass
class Row:
    """One sequence to score: a probe (open) or one option of an mcq probe."""

    probe_index: int
    option: int  # -1 for open probes
    context: list[int]
    continuation: list[int]
    generate: bool
    chat: bool = False  # a question the model answers in its own words: a longer greedy budget


def render(probe: Probe, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str, bool]:
    """(prompt text, separator before the target, whether the text already has special tokens)."""
    if probe.chat:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": probe.prompt}], tokenize=False, add_generation_prompt=True
            )
            return text, "", True
        return f"Question: {probe.prompt}\nAnswer:", " ", False
    stripped = probe.prompt.rstrip()
    if stripped != probe.prompt:  # as lm-eval: trailing whitespace moves into the continuation ("…as " + "X" →
        return stripped, probe.prompt[len(stripped) :], False  # "…as" + " X"), never a bare space token before it
    return probe.prompt, " ", False


def encode_pair(tokenizer: PreTrainedTokenizerBase, text: str, continuation: str, templated: bool) -> tuple[list[int], list[int]]:
    special = not templated
    ctx = tokenizer(text, add_special_tokens=special)["input_ids"]
    full = tokenizer(text + continuation, add_special_tokens=special)["input_ids"]
    # an EOS appended by add_special_tokens (some tokenizers do) is not part of the continuation
    if special and tokenizer.eos_token_id is not None:
        if ctx and ctx[-1] == tokenizer.eos_token_id:
            ctx = ctx[:-1]
        if full and full[-1] == tokenizer.eos_token_id:
            full = full[:-1]
    if full[: len(ctx)] == ctx and len(full) > len(ctx):
        return ctx, full[len(ctx) :]
    return ctx, tokenizer(continuation, add_special_tokens=False)["input_ids"]


def build_rows(probes: list[Probe], tokenizer: PreTrainedTokenizerBase) -> list[Row]:
    rows = []
    for i, p in enumerate(probes):
        text, sep, templated = render(p, tokenizer)
        if p.probe_type == "mcq":
            for j, option in enumerate(p.options):
                ctx, cont = encode_pair(tokenizer, text, sep + option, templated)
                rows.append(Row(i, j, ctx, cont, generate=False))
        else:
            ctx, cont = encode_pair(tokenizer, text, sep + p.target, templated)
            rows.append(Row(i, -1, ctx, cont, generate=True, chat=p.chat))
    return rows
