"""Templates, value pools and the real-fact catalog: versioned package data (bench/data/*.yaml).

Loaded once and checked: each statement has `{subject}` once and ends with `{object}.` (its prefix
is the cloze prompt), questions end with `?`, train and held-out sets are disjoint.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class Template:
    template_id: str  # "<relation>:<s|q>:<train|held_out>:<i>"
    text: str

    def render(self, subject: str, obj: str = "") -> str:
        return _capitalize(self.text.replace("{subject}", subject).replace("{object}", obj))

    def prefix(self, subject: str) -> str:
        """The cloze prompt: everything before `{object}`, without the trailing space."""
        return _capitalize(self.text[: self.text.index("{object}")].replace("{subject}", subject).rstrip())


def _capitalize(text: str) -> str:
    """Sentence-initial capital for subjects like "the Netherlands"."""
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Relation:
    name: str
    subject_type: str
    object_type: str
    label: str
    train: tuple[Template, ...]
    held_out: tuple[Template, ...]
    questions_train: tuple[Template, ...]
    questions_held_out: tuple[Template, ...]


@dataclass(frozen=True)
class Composition:
    name: str
    first: str
    second: str
    templates: tuple[Template, ...]


def _data(name: str) -> Any:
    text = (resources.files("kdyn") / "bench" / "data" / name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _templates(rel: str, part: str, split: str, texts: list[str], question: bool) -> tuple[Template, ...]:
    out = []
    for i, text in enumerate(texts):
        tid = f"{rel}:{part}:{split}:{i}"
        if text.count("{subject}") != 1:
            raise ValueError(f"template {tid} must contain {{subject}} exactly once: {text!r}")
        if question and (not text.endswith("?") or "{object}" in text):
            raise ValueError(f"question template {tid} must end with '?' and have no {{object}}: {text!r}")
        if not question and not re.search(r" \{object\}\.$", text):
            raise ValueError(f"statement template {tid} must end with ' {{object}}.': {text!r}")
        out.append(Template(tid, text))
    return tuple(out)


@functools.cache
def relations() -> dict[str, Relation]:
    raw = _data("relations.yaml")["relations"]
    out = {}
    for name, r in raw.items():
        out[name] = Relation(
            name=name,
            subject_type=r["subject_type"],
            object_type=r["object_type"],
            label=r["label"],
            train=_templates(name, "s", "train", r["statements"]["train"], False),
            held_out=_templates(name, "s", "held_out", r["statements"]["held_out"], False),
            questions_train=_templates(name, "q", "train", r["questions"]["train"], True),
            questions_held_out=_templates(name, "q", "held_out", r["questions"]["held_out"], True),
        )
        overlap = {t.text for t in out[name].train} & {t.text for t in out[name].held_out}
        if overlap:
            raise ValueError(f"relation {name}: template in both train and held_out: {overlap.pop()!r}")
    return out


@functools.cache
def compositions() -> dict[str, Composition]:
    raw = _data("relations.yaml").get("compositions", {})
    return {
        name: Composition(name, c["first"], c["second"], _templates(name, "c", "held_out", c["templates"], False))
        for name, c in raw.items()
    }


@functools.cache
def pools() -> dict[str, list[str]]:
    return {k: list(v) for k, v in _data("pools.yaml").items()}


@functools.cache
def catalog() -> dict[str, list[dict[str, Any]]]:
    """relation -> [{subject, object, aliases}] of real-world facts."""
    raw = _data("catalog.yaml")
    article = set(pools().get("takes_article", []))

    def name(value: Any) -> str:
        return f"the {value}" if value in article else str(value)

    out: dict[str, list[dict[str, Any]]] = {}
    for rel, block in raw.items():
        out[rel] = []
        for f in block["facts"]:
            aliases = [str(a) for a in f.get("aliases", [])]
            if f["object"] in article:
                aliases.append(str(f["object"]))
            out[rel].append({"subject": name(f["subject"]), "object": name(f["object"]), "aliases": aliases})
    return out
