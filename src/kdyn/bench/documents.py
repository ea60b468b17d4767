"""Training documents: each entity's facts stated in train templates, sentence order shuffled per
copy, rendered in one or more surface formats (formatting augmentation, Zhu et al. 2025).

Held-out templates never reach a document; `tests/test_bench.py` checks that on every build.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from kdyn.bench.schema import Document, Fact
from kdyn.bench.templates import Template, relations

Statement = tuple[Fact, Template]


def _prose(subject: str, stated: list[Statement], rng: random.Random) -> tuple[str, list[str]]:
    return " ".join(t.render(f.subject, f.object) for f, t in stated), [t.template_id for _, t in stated]


def _lines(subject: str, stated: list[Statement], rng: random.Random) -> tuple[str, list[str]]:
    marker = rng.choice(["- ", "* ", "> ", ""])
    text = "\n".join(marker + t.render(f.subject, f.object) for f, t in stated)
    return text, [t.template_id for _, t in stated]


def _markdown(subject: str, stated: list[Statement], rng: random.Random) -> tuple[str, list[str]]:
    body = "\n".join(f"- {t.render(f.subject, f.object)}" for f, t in stated)
    return f"## {subject}\n\n{body}", [t.template_id for _, t in stated]


def _json(subject: str, stated: list[Statement], rng: random.Random) -> tuple[str, list[str]]:
    record = {"name": subject} | {relations()[f.relation].label: f.object for f, _ in stated}
    return json.dumps(record, ensure_ascii=False), [f"{f.relation}:label" for f, _ in stated]


def _table(subject: str, stated: list[Statement], rng: random.Random) -> tuple[str, list[str]]:
    labels = ["name"] + [relations()[f.relation].label for f, _ in stated]
    values = [subject] + [f.object for f, _ in stated]
    text = "| " + " | ".join(labels) + " |\n|" + "---|" * len(labels) + "\n| " + " | ".join(values) + " |"
    return text, [f"{f.relation}:label" for f, _ in stated]


def _qa(subject: str, stated: list[Statement], rng: random.Random) -> tuple[str, list[str]]:
    lines, ids = [], []
    for f, _ in stated:
        q = rng.choice(relations()[f.relation].questions_train)  # train questions only
        lines.append(f"Q: {q.render(f.subject)}\nA: {f.object}")
        ids.append(q.template_id)
    return "\n".join(lines), ids


RENDERERS: dict[str, Callable[[str, list[Statement], random.Random], tuple[str, list[str]]]] = {
    "prose": _prose,
    "lines": _lines,
    "markdown": _markdown,
    "json": _json,
    "table": _table,
    "qa": _qa,
}


def fact_templates(facts: list[Fact], k: int, seed: int) -> dict[str, list[Template]]:
    """k train templates per fact (k=1: the same wording in every copy). The first is the cloze one,
    drawn from its own stream so that k (paraphrase augmentation) never changes which it is: runs
    that differ only in augmentation are probed on identical items."""
    first_rng = random.Random(f"kdyn:{seed}:cloze-templates")
    out = {}
    for f in facts:
        train = list(relations()[f.relation].train)
        first = first_rng.choice(train)
        rest = [t for t in train if t is not first]
        extra_rng = random.Random(f"kdyn:{seed}:paraphrases:{f.fact_id}")
        out[f.fact_id] = [first, *extra_rng.sample(rest, min(k - 1, len(rest)))]
    return out


def entity_documents(
    entity_facts: list[Fact], templates: dict[str, list[Template]], formats: list[str], rng: random.Random
) -> list[Document]:
    """`exposures` copies of one entity's document, each in every requested format."""
    docs: list[Document] = []
    eid, subject = entity_facts[0].entity_id, entity_facts[0].subject
    for copy in range(entity_facts[0].exposures):
        stated = [(f, templates[f.fact_id][copy % len(templates[f.fact_id])]) for f in entity_facts]
        rng.shuffle(stated)
        for fmt in formats:
            text, template_ids = RENDERERS[fmt](subject, stated, rng)
            docs.append(
                Document(
                    doc_id=f"{eid}-c{copy:02d}-{fmt}",
                    entity_id=eid,
                    fact_ids=[f.fact_id for f, _ in stated],
                    text=text,
                    template_ids=template_ids,
                    format=fmt,
                    copy_index=copy,
                )
            )
    return docs
