"""`kdyn bench build`: config → BENCH/ facts.jsonl, documents.jsonl, probes.jsonl, manifest.json.

Deterministic: the same config and seed give byte-identical files (no timestamps, sorted keys,
string-seeded RNGs). The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from kdyn import __version__
from kdyn.bench.arithmetic import arithmetic_probes
from kdyn.bench.config import BenchConfig
from kdyn.bench.documents import entity_documents, fact_templates
from kdyn.bench.facts import catalog_facts, new_facts, related_facts, rng_for
from kdyn.bench.probes import Distractors, compositional_probes, fact_probes
from kdyn.bench.schema import SCHEMA_VERSION, Document, Fact, Probe, as_row
from kdyn.config import to_dict
from kdyn.errors import KdynError
from kdyn.io import atomic_dir, check_writable, dumps_json, sha256_file, write_jsonl

FILES = ("facts.jsonl", "documents.jsonl", "probes.jsonl")


def make_records(cfg: BenchConfig) -> tuple[list[Fact], list[Document], list[Probe]]:
    taken: set[str] = set()
    updated, known = catalog_facts(cfg)
    facts = new_facts(cfg, taken) + related_facts(cfg, taken) + updated + known
    templates = fact_templates(facts, cfg.templates_per_fact, cfg.seed)

    doc_rng = rng_for(cfg.seed, "documents")
    by_entity: dict[str, list[Fact]] = {}
    for f in facts:
        if f.exposures > 0:
            by_entity.setdefault(f.entity_id, []).append(f)
    documents = [d for group in by_entity.values() for d in entity_documents(group, templates, cfg.formats, doc_rng)]

    probe_rng = rng_for(cfg.seed, "probes")
    distractors = Distractors(facts)
    probes = [p for f in facts for p in fact_probes(f, templates[f.fact_id][0], distractors, cfg, probe_rng)]
    probes += compositional_probes(facts, cfg, probe_rng)
    pc = cfg.probes
    probes += arithmetic_probes(
        rng_for(cfg.seed, "arithmetic"), pc.arithmetic_one_step, pc.arithmetic_multi_step,
        pc.arithmetic_instruction, pc.arithmetic_max_operand,
    )
    return facts, documents, probes


def counts(facts: list[Fact], documents: list[Document], probes: list[Probe]) -> dict[str, Any]:
    return {
        "facts_by_kind": dict(sorted(Counter(f.kind for f in facts).items())),
        "entities_trained": len({d.entity_id for d in documents}),
        "documents": len(documents),
        "document_words": sum(len(d.text.split()) for d in documents),
        "probes_by_kind_type": dict(sorted(Counter(f"{p.kind}/{p.probe_type}" for p in probes).items())),
        "probes": len(probes),
    }


def check_out_dir(out: Path) -> None:
    check_writable(out.parent)  # atomic_dir writes beside `out`, then renames it over `out`
    if out.is_dir():
        check_writable(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise KdynError(f"{out} exists and is not a kdyn benchmark; choose another --out")


def write_bench(out: Path, facts: list[Fact], documents: list[Document], probes: list[Probe],
                manifest_extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Write the four files atomically as one directory; returns the manifest."""
    out = Path(out)
    check_out_dir(out)
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "facts.jsonl", map(as_row, facts))
        write_jsonl(tmp / "documents.jsonl", map(as_row, documents))
        write_jsonl(tmp / "probes.jsonl", map(as_row, probes))
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kdyn_version": __version__,
            **manifest_extra,
            "counts": counts(facts, documents, probes),
            "sha256": {name: sha256_file(tmp / name) for name in FILES},
        }
        (tmp / "manifest.json").write_text(dumps_json(manifest), encoding="utf-8")
    return manifest


def build_bench(cfg: BenchConfig, out: str | Path) -> dict[str, Any]:
    """Build the benchmark described by `cfg` into `out`; returns the manifest."""
    check_out_dir(Path(out))
    try:
        facts, documents, probes = make_records(cfg)
    except ValueError as e:  # e.g. too few distractors for the requested mcq_options
        raise KdynError(f"cannot build benchmark '{cfg.name}': {e}") from None
    return write_bench(Path(out), facts, documents, probes, {"source": "kdyn bench build", "config": to_dict(cfg), "seed": cfg.seed})
