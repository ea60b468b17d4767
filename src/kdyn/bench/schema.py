"""Benchmark records (DESIGN.md): fact, document, probe; their validation when read back from disk.

Records are plain dicts on disk (JSONL, sorted keys) and typed dataclasses in memory. `check_benchmark`
reads a folder and checks every line (fields, their types, unique ids, ids that point at facts, mcq options):
`load_benchmark` raises on the first problem, `kdyn bench validate` prints them all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdyn.errors import KdynError
from kdyn.io import read_json, read_jsonl_numbered

SCHEMA_VERSION = 1

Kind = Literal["new", "related", "updated", "known", "skill"]
ProbeType = Literal["cloze", "qa", "mcq", "compositional", "arithmetic"]
KINDS: tuple[str, ...] = ("new", "related", "updated", "known")
PROBE_TYPES: tuple[str, ...] = ("cloze", "qa", "mcq", "compositional", "arithmetic")
FAMILIES: tuple[str, ...] = ("knowledge", "skill")
SPLITS: tuple[str, ...] = ("train", "eval")


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


def _checker(tp: Any) -> Callable[[Any], bool]:
    """A fast test for values of a field type (str, int, bool, list[str], X | None); JSON true is not an int."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:  # X | None
            inner = _checker(args[0])
            return lambda v: v is None or inner(v)
        tests = [_checker(a) for a in typing.get_args(tp)]
        return lambda v: any(t(v) for t in tests)
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        return lambda v: type(v) is list and all(type(x) is item for x in v)
    if tp is type(None):
        return lambda v: v is None
    return lambda v: type(v) is tp


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[1]}s"
    return {str: "a string", int: "an integer", bool: "a boolean", type(None): "null"}.get(tp, str(tp))


@functools.cache
def _schema(cls: type) -> tuple[set[str], set[str], list[tuple[str, Callable[[Any], bool], str]]]:
    """(field names, required names, (name, type test, type in words) per field) of a record class."""
    fields = dataclasses.fields(cls)
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    hints = typing.get_type_hints(cls)
    return {f.name for f in fields}, required, [(n, _checker(tp), _type_name(tp)) for n, tp in hints.items()]


def _typed(row: dict[str, Any], cls: type, path: Path, lineno: int, errors: list[str]) -> Any:
    """`cls(**row)` when every field is present, known and of its type; else None, the problems in `errors`."""
    names, required, tests = _schema(cls)
    if row.keys() == names:  # the common case, checked quickly
        for name, ok, _ in tests:
            if not ok(row[name]):
                break
        else:
            return cls(**row)
    where = f"{path}, line {lineno}"
    missing = sorted(required - row.keys())
    extra = sorted(row.keys() - names)
    if missing:
        errors.append(f"{where}: missing field(s) {', '.join(missing)}")
    if extra:
        errors.append(f"{where}: unknown field(s) {', '.join(extra)}")
    wrong = [f"{where}: field '{name}' must be {expected}, got {json.dumps(row[name], ensure_ascii=False)}"
             for name, ok, expected in tests if name in row and not ok(row[name])]  # fmt: skip
    errors.extend(wrong)
    return None if missing or extra or wrong else cls(**row)


def _fact_problems(f: Fact) -> list[str]:
    out = [] if f.fact_id.strip() else ["empty fact_id"]
    if f.kind not in KINDS:
        out.append(f"field 'kind': '{f.kind}' is not one of {', '.join(KINDS)}")
    if f.split not in SPLITS:
        out.append(f"field 'split': '{f.split}' is not one of {', '.join(SPLITS)}")
    if f.exposures < 0:
        out.append(f"field 'exposures' must be >= 0, got {f.exposures}")
    return out


def _document_problems(d: Document, facts: set[str]) -> list[str]:
    out = [] if d.doc_id.strip() else ["empty doc_id"]
    out += [f"unknown fact_id '{x}' (not in facts.jsonl)" for x in d.fact_ids if x not in facts][:1]
    if d.copy_index < 0:
        out.append(f"field 'copy_index' must be >= 0, got {d.copy_index}")
    return out


def _probe_problems(p: Probe, facts: dict[str, Fact], fact_ids: set[str]) -> list[str]:
    out = [] if p.probe_id.strip() else ["empty probe_id"]
    if p.family not in FAMILIES:
        out.append(f"field 'family': '{p.family}' is not one of {', '.join(FAMILIES)}")
    if p.kind not in (*KINDS, "skill"):
        out.append(f"field 'kind': '{p.kind}' is not one of {', '.join((*KINDS, 'skill'))}")
    if p.probe_type not in PROBE_TYPES:
        out.append(f"probe_type '{p.probe_type}' is not one of {', '.join(PROBE_TYPES)}")
    if p.probe_type == "mcq":
        if len(p.options) < 2 or p.k != len(p.options):
            out.append(f"an mcq probe needs k == len(options) >= 2 (k is {p.k}, {len(p.options)} options)")
        elif p.answer_index is None or not 0 <= p.answer_index < p.k:
            out.append(f"answer_index must index into options (0 to {p.k - 1}), got {p.answer_index}")
        elif p.options[p.answer_index] != p.target:
            out.append("options[answer_index] must equal target")
    elif p.k != 0 or p.options or p.answer_index is not None:
        out.append("only mcq probes have options and answer_index (k must be 0)")
    if not p.target.strip():
        out.append("empty target")
    if p.fact_id is None:
        if p.family == "knowledge":
            out.append("a knowledge probe needs a fact_id")
    elif p.fact_id not in fact_ids:
        out.append(f"fact_id '{p.fact_id}' is not in facts.jsonl")
    elif p.fact_id in facts and p.kind != facts[p.fact_id].kind:
        out.append(f"kind '{p.kind}' differs from its fact's kind '{facts[p.fact_id].kind}'")
    return out


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


def _read_manifest(path: Path, errors: list[str]) -> dict[str, Any]:
    try:
        manifest = read_json(path)
    except KdynError as e:
        errors.append(str(e))
        return {}
    if not isinstance(manifest, dict):
        errors.append(f"{path} must hold a JSON object, got a {type(manifest).__name__}")
        return {}
    if manifest.get("schema_version") != SCHEMA_VERSION:
        errors.append(f"{path}: schema_version {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}")
    return manifest


def _read_records(path: Path, cls: type, errors: list[str]) -> tuple[list[tuple[int, Any]], set[str]]:
    """(line number, record) for every well-typed line of one JSONL file, and the ids of all its lines (so that a
    badly typed fact is not also reported as missing by every probe of it); a second use of an id is a problem."""
    try:
        rows = read_jsonl_numbered(path)
    except KdynError as e:
        errors.append(str(e))
        return [], set()
    id_field = dataclasses.fields(cls)[0].name  # fact_id, doc_id, probe_id
    ids = {row[id_field] for _, row in rows if isinstance(row.get(id_field), str)}
    first: dict[str, int] = {}
    out = []
    for lineno, row in rows:
        record = _typed(row, cls, path, lineno, errors)
        if record is None:
            continue
        key = getattr(record, id_field)
        if key in first:
            errors.append(f"{path}, line {lineno}: duplicate {id_field} '{key}' (first on line {first[key]})")
            continue
        first[key] = lineno
        out.append((lineno, record))
    return out, ids


def check_benchmark(root: str | Path) -> tuple[Benchmark | None, list[str]]:
    """Read BENCH/ and check every record: its fields and their types, its ids (unique, and pointing at facts
    that exist), mcq options. Returns (the benchmark, []) or (None, every problem, each naming file and line)."""
    root = Path(root)
    if not root.is_dir():
        return None, [f"benchmark directory not found: {root} (build one with `kdyn bench build`)"]
    errors: list[str] = []
    manifest = _read_manifest(root / "manifest.json", errors)
    facts, fact_ids = _read_records(root / "facts.jsonl", Fact, errors)
    by_id = {f.fact_id: f for _, f in facts}
    documents, _ = _read_records(root / "documents.jsonl", Document, errors)
    probes, _ = _read_records(root / "probes.jsonl", Probe, errors)
    for name, records, problems in (("facts", facts, _fact_problems),
                                    ("documents", documents, lambda d: _document_problems(d, fact_ids)),
                                    ("probes", probes, lambda p: _probe_problems(p, by_id, fact_ids))):  # fmt: skip
        for lineno, record in records:
            tag = f" ({record.probe_id})" if isinstance(record, Probe) else ""
            errors.extend(f"{root / name}.jsonl, line {lineno}{tag}: {problem}" for problem in problems(record))
    if not probes and (root / "probes.jsonl").is_file() and not any("probes.jsonl" in e for e in errors):
        errors.append(f"{root / 'probes.jsonl'} holds no probes: there would be nothing to score")
    if errors:
        return None, errors
    return Benchmark(root, list(by_id.values()), [d for _, d in documents], [p for _, p in probes], manifest), []


def validate_bench(root: str | Path) -> list[str]:
    """Every problem in BENCH/ (what `kdyn bench validate` prints); [] when it is a valid benchmark."""
    return check_benchmark(root)[1]


def load_benchmark(root: str | Path) -> Benchmark:
    """Read BENCH/ and check every record; bad input fails with file, line and field (the first problem)."""
    bench, errors = check_benchmark(root)
    if bench is None:
        more = f" (and {len(errors) - 1} more: `kdyn bench validate {root}` lists them)" if len(errors) > 1 else ""
        raise KdynError(errors[0] + more)
    return bench
