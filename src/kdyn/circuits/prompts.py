"""Clean / corrupted prompt pairs from a benchmark's cloze probes of one relation (DESIGN.md "Knowledge circuits").

Clean prompt: a cloze probe, tokenised exactly as the probe scorer does (kdyn.probe.prompts), ending right
before the object. Corrupted prompt: the same text with the subject swapped for another subject of the
same relation whose prompt has the same number of tokens, so positions align. Metric tokens: the first
token of the object and of the swapped-in subject's object, both as continuations of the clean prompt; a
partner whose object starts with the same token as ours is no partner (the metric would be zero). A
separator the tokenizer keeps as a token of its own (a byte-level space) is moved into the prompt.
The partner is drawn with a seed per probe, so the same bench, tokenizer and seed give the same pairs.
Probes that cannot be paired are returned with the reason, never dropped silently; `usage` says in one
sentence how many pairs are used of the configured number and why the rest are missing.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from kdyn.bench.schema import Probe
from kdyn.circuits.attribution import Batch
from kdyn.errors import KdynError, unknown
from kdyn.io import read_jsonl
from kdyn.probe.prompts import encode_pair, render


@dataclass
class Pair:
    probe_id: str
    fact_id: str
    kind: str
    subject: str
    object: str
    corrupt_fact_id: str
    corrupt_subject: str
    corrupt_object: str
    clean_ids: list[int]
    corrupt_ids: list[int]
    target: int  # first token of the object
    foil: int  # first token of the corrupted subject's object


@dataclass
class PromptSet:
    relation: str
    pairs: list[Pair]
    unpaired: list[dict[str, str]] = field(default_factory=list)  # {probe_id, reason}
    n_paired: int = -1  # probes that could be paired, before sampling n_prompts of them (-1: len(pairs))

    def __post_init__(self) -> None:
        if self.n_paired < 0:
            self.n_paired = len(self.pairs)

    def reasons(self) -> dict[str, int]:
        """Why probes could not be paired: reason → number of probes, most frequent first."""
        return dict(Counter(u["reason"] for u in self.unpaired).most_common())

    def to_json(self) -> dict[str, Any]:
        return {"relation": self.relation, "n_pairs": len(self.pairs), "n_paired": self.n_paired,
                "n_unpaired": len(self.unpaired), "pairs": [asdict(p) for p in self.pairs],
                "unpaired": self.unpaired}  # fmt: skip


def usage(relation: str, n_used: int, n_configured: int, n_paired: int, reasons: dict[str, int]) -> str:
    """'birth_city: 11 of the configured 32 prompt pairs used: the relation has 14 cloze probes, 3 of which
    could not be paired (3× no other subject …)' — how many pairs a circuit rests on, and why not more."""
    n_unpaired = sum(reasons.values())
    why = "; ".join(f"{n}× {reason}" for reason, n in reasons.items())
    text = f"{relation}: {n_used} of the configured {n_configured} prompt pairs used"
    if n_paired > n_used:
        text += f", drawn at random from {n_paired} probes that could be paired"
        return text + (f"; {n_unpaired} more could not be paired ({why})" if n_unpaired else "")
    text += f": the relation has {n_paired + n_unpaired} cloze probe{'s' * (n_paired + n_unpaired != 1)}"
    return text + (f", {n_unpaired} of which could not be paired ({why})" if n_unpaired else "")


def read_bench(bench: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(facts by id, cloze probes) of a benchmark directory."""
    facts = {f["fact_id"]: f for f in read_jsonl(bench / "facts.jsonl")}
    cloze = [p for p in read_jsonl(bench / "probes.jsonl") if p.get("probe_type") == "cloze" and p.get("fact_id") in facts]
    return facts, sorted(cloze, key=lambda p: p["probe_id"])


def default_relation(facts: dict[str, dict[str, Any]], cloze: list[dict[str, Any]]) -> str:
    """The relation with the most `new` facts that have a cloze probe (ties: alphabetical)."""
    rels = Counter(facts[p["fact_id"]]["relation"] for p in cloze)
    if not rels:
        raise KdynError("the benchmark has no cloze probes, so there are no prompts for knowledge circuits")
    new = Counter(facts[p["fact_id"]]["relation"] for p in cloze if facts[p["fact_id"]]["kind"] == "new")
    return sorted(rels, key=lambda r: (-new[r], -rels[r], r))[0]


def build_prompts(bench: Path, relation: str, tokenizer: PreTrainedTokenizerBase, n_prompts: int, seed: int) -> PromptSet:
    facts, cloze = read_bench(bench)
    relations = {facts[p["fact_id"]]["relation"] for p in cloze}
    if relation not in relations:
        raise unknown(f"relation (no cloze probes of it in {bench})", relation, relations)
    mine = [p for p in cloze if facts[p["fact_id"]]["relation"] == relation]
    others = sorted({f["fact_id"]: f for f in facts.values() if f["relation"] == relation}.values(), key=lambda f: f["fact_id"])
    pairs, unpaired = [], []
    probe_fields = {f.name for f in dataclasses.fields(Probe)}
    for p in mine:
        pair, reason = _pair(Probe(**{k: v for k, v in p.items() if k in probe_fields}), facts[p["fact_id"]], others, tokenizer, seed)
        if pair is None:
            unpaired.append({"probe_id": p["probe_id"], "reason": reason})
        else:
            pairs.append(pair)
    n_paired = len(pairs)
    if len(pairs) > n_prompts:
        rng = np.random.default_rng([seed, zlib.crc32(relation.encode("utf-8"))])
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=n_prompts, replace=False))]
    pairs.sort(key=lambda p: (len(p.clean_ids), p.probe_id))  # batches of similar length waste less on padding
    if not pairs:
        raise KdynError(f"none of the {len(mine)} cloze probes of relation '{relation}' could be paired with a "
                        f"same-length subject swap ({unpaired[0]['reason'] if unpaired else 'no probes'}); "
                        f"choose another relation with --relation")  # fmt: skip
    return PromptSet(relation, pairs, unpaired, n_paired)


def _pair(probe: Probe, fact: dict[str, Any], others: list[dict[str, Any]], tok: PreTrainedTokenizerBase,
          seed: int) -> tuple[Pair | None, str]:  # fmt: skip
    text, sep, templated = render(probe, tok)
    subject = fact["subject"]
    if subject not in text:
        return None, f"the subject '{subject}' does not occur in the prompt"
    clean_ids, cont = encode_pair(tok, text, sep + fact["object"], templated)
    lead = _separator(tok, cont)
    clean_ids, target = clean_ids + lead, cont[len(lead)]
    candidates = []
    for other in others:
        if other["subject"] == subject or other["object"] == fact["object"]:
            continue
        corrupt_ids, _ = encode_pair(tok, text.replace(subject, other["subject"]), sep + other["object"], templated)
        corrupt_ids = corrupt_ids + lead
        if len(corrupt_ids) != len(clean_ids):
            continue
        other_cont = encode_pair(tok, text, sep + other["object"], templated)[1]
        if other_cont[: len(lead)] != lead or len(other_cont) <= len(lead):
            continue
        foil = other_cont[len(lead)]
        if foil != target:
            candidates.append((other, corrupt_ids, foil))
    if not candidates:
        return None, "no other subject of this relation gives a prompt of the same token length with an object that starts differently"
    rng = np.random.default_rng([seed, zlib.crc32(probe.probe_id.encode("utf-8"))])
    other, corrupt_ids, foil = candidates[int(rng.integers(len(candidates)))]
    return Pair(probe_id=probe.probe_id, fact_id=fact["fact_id"], kind=fact["kind"], subject=subject,
                object=fact["object"], corrupt_fact_id=other["fact_id"], corrupt_subject=other["subject"],
                corrupt_object=other["object"], clean_ids=clean_ids, corrupt_ids=corrupt_ids, target=target,
                foil=foil), ""  # fmt: skip


def _separator(tok: PreTrainedTokenizerBase, cont: list[int]) -> list[int]:
    """Leading continuation tokens that are only whitespace (a byte-level tokenizer's separating space): they
    belong to the prompt, which ends right before the object's first real token."""
    n = 0
    while n < len(cont) - 1 and not tok.decode([cont[n]]).strip():
        n += 1
    return cont[:n]


def batches(pairs: list[Pair], batch_size: int, pad_id: int) -> list[Batch]:
    """Right-padded batches in prompt order (causal attention keeps the pads out of every real position)."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(p.clean_ids) for p in chunk)
        clean = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        corrupt = clean.clone()
        for i, p in enumerate(chunk):
            clean[i, : len(p.clean_ids)] = torch.tensor(p.clean_ids)
            corrupt[i, : len(p.corrupt_ids)] = torch.tensor(p.corrupt_ids)
        out.append(Batch(clean=clean, corrupt=corrupt, last=torch.tensor([len(p.clean_ids) - 1 for p in chunk]),
                         target=torch.tensor([p.target for p in chunk]), foil=torch.tensor([p.foil for p in chunk])))  # fmt: skip
    return out
