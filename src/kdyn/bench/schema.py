"""Benchmark records (DESIGN.md): fact, document, probe; their validation when read back from disk.

Records are plain dicts on disk (JSONL, sorted keys) and typed dataclasses in memory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdyn.errors import KdynError
from kdyn.io import read_json, read_jsonl

SCHEMA_VERSION = 1

Kind = Literal["new", "related", "updated", "known", "skill"]
ProbeType = Literal["cloze", "qa", "mcq", "compositional", "arithmetic"]
KINDS: tuple[str, ...] = ("new", "related", "updated", "known")
PROBE_TYPES: tuple[str, ...] = ("cloze", "qa", "mcq", "compositional", "arithmetic")


@dataclass
class Fact:
    fact_id: str
    entity_id: str
    entity_type: str
    kind: str
    relation: str
    subject: str
    object: str
    object_aliases: list[str] = field(default_factory=list)
    previous_object: str | None = None  # updated facts only: the value the model knew
    exposures: int = 0  # documents stating this fact per epoch (0: never trained on)
    split: str = "train"  # train (stated in documents) | eval (known facts, never trained on)


@dataclass
class Document:
    doc_id: str
    entity_id: str
    fact_ids: list[str]
    text: str
    template_ids: list[str]
    format: str
    copy_index: int


@dataclass
class Probe:
    probe_id: str
    fact_id: str | None  # None for skill probes
    family: str  # knowledge | skill
    kind: str
    probe_type: str
    prompt: str
    chat: bool  # question-style: rendered with the model's chat template when it has one
    target: str
    target_aliases: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # mcq
    answer_index: int | None = None  # mcq
    k: int = 0  # options count; 0 if open
    template_id: str | None = None


RECORDS: dict[str, type] = {"facts": Fact, "documents": Document, "probes": Probe}


def as_row(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def _check_row(row: dict[str, Any], cls: type, path: Path, lineno: int) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - row.keys())
    if missing:
        raise KdynError(f"{path}, line {lineno}: missing field(s) {', '.join(missing)}")
    extra = sorted(row.keys() - names)
    if extra:
        raise KdynError(f"{path}, line {lineno}: unknown field(s) {', '.join(extra)}")
    return cls(**row)


def _validate_probe(p: Probe, path: Path, lineno: int) -> None:
    where = f"{path}, line {lineno} ({p.probe_id})"
    if p.probe_type not in PROBE_TYPES:
        raise KdynError(f"{where}: probe_type '{p.probe_type}' is not one of {', '.join(PROBE_TYPES)}")
    if p.probe_type == "mcq":
        if len(p.options) < 2 or p.k != len(p.options):
            raise KdynError(f"{where}: an mcq probe needs k == len(options) >= 2")
        if p.answer_index is None or not 0 <= p.answer_index < p.k:
            raise KdynError(f"{where}: answer_index must index into options")
        if p.options[p.answer_index] != p.target:
            raise KdynError(f"{where}: options[answer_index] must equal target")
    elif p.k != 0 or p.options:
        raise KdynError(f"{where}: only mcq probes have options (k must be 0)")
    if not p.target.strip():
        raise KdynError(f"{where}: empty target")


@dataclass
class Benchmark:
    """A benchmark directory read back and validated."""

    root: Path
    facts: list[Fact]
    documents: list[Document]
    probes: list[Probe]
    manifest: dict[str, Any]

    @property
    def facts_by_id(self) -> dict[str, Fact]:
        return {f.fact_id: f for f in self.facts}


def load_benchmark(root: str | Path) -> Benchmark:
    """Read BENCH/ and check every record; bad input fails with file, line and field."""
    root = Path(root)
    if not root.is_dir():
        raise KdynError(f"benchmark directory not found: {root} (build one with `kdyn bench build`)")
    manifest_path = root / "manifest.json"
    manifest = read_json(manifest_path)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise KdynError(
            f"{manifest_path}: schema_version {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    loaded: dict[str, list[Any]] = {}
    for name, cls in RECORDS.items():
        path = root / f"{name}.jsonl"
        loaded[name] = [_check_row(row, cls, path, i) for i, row in enumerate(read_jsonl(path), 1)]
    fact_ids = {f.fact_id for f in loaded["facts"]}
    seen: set[str] = set()
    for i, p in enumerate(loaded["probes"], 1):
        _validate_probe(p, root / "probes.jsonl", i)
        if p.probe_id in seen:
            raise KdynError(f"{root / 'probes.jsonl'}, line {i}: duplicate probe_id '{p.probe_id}'")
        seen.add(p.probe_id)
        if p.fact_id is not None and p.fact_id not in fact_ids:
            raise KdynError(f"{root / 'probes.jsonl'}, line {i}: fact_id '{p.fact_id}' is not in facts.jsonl")
    for i, d in enumerate(loaded["documents"], 1):
        bad = [f for f in d.fact_ids if f not in fact_ids]
        if bad:
            raise KdynError(f"{root / 'documents.jsonl'}, line {i}: unknown fact_id '{bad[0]}'")
    return Benchmark(root, loaded["facts"], loaded["documents"], loaded["probes"], manifest)
