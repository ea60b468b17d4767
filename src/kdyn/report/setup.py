"""Section 1, set-up: model, strategy, benchmark manifest (counts by kind), config, time taken.

One run: key facts, the benchmark's counts by kind and probe type, the resolved config.yaml (folded).
Several runs: one row per run.
"""

from __future__ import annotations

from typing import Any

import yaml

from kdyn.analysis.results import KIND_ORDER, TYPE_ORDER
from kdyn.report.data import RunData
from kdyn.report.html import Markup, Section, bullets, details, key_values, table, tag
from kdyn.report.text import num, plural, step_label

TITLE = "1. Set-up"


def _get(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def time_taken(m: dict[str, Any]) -> str:
    """'12.3 min (training 9.0 min, probing 2.1 min)', and the sessions when resumed."""
    parts = [f"{label} {duration(m[key])}" for key, label in (("train_seconds", "training"),
                                                             ("probe_seconds", "probing")) if key in m]  # fmt: skip
    if m.get("resumed"):
        parts.append(f"{m['resumed'] + 1} sessions: resumed {m['resumed']}×")
    return duration(m.get("seconds")) + (f" ({', '.join(parts)})" if parts else "")


def training_line(cfg: dict[str, Any], manifest: dict[str, Any] | None = None) -> str:
    """Epochs, lr, batch, schedule, and the precisions the run used (manifest.json: 'auto' resolved), else the config's."""
    t = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    m = manifest or {}
    used = [f"{what} {m[key]}" for key, what in (("precision", "training"), ("probe_precision", "probing")) if m.get(key)]
    bits = [f"{_get(t, 'epochs')} epochs" if _get(t, "epochs") is not None else None,
            f"lr {_get(t, 'optimizer.lr')}" if _get(t, "optimizer.lr") is not None else None,
            f"batch {_get(t, 'batch_size')} × {_get(t, 'seq_len')} tokens" if _get(t, "batch_size") else None,
            f"{_get(t, 'schedule.kind')} schedule" if _get(t, "schedule.kind") else None,
            f"precision: {', '.join(used)}" if used else f"precision {_get(t, 'precision')}" if _get(t, "precision") else None]  # fmt: skip
    return ", ".join(b for b in bits if b) or "—"


def counts_table(bench: dict[str, Any]) -> Markup:
    """Probes by kind (rows) and probe type (columns), with facts per kind."""
    counts = bench.get("counts", {}) if isinstance(bench.get("counts"), dict) else {}
    by = counts.get("probes_by_kind_type", {}) or {}
    facts = counts.get("facts_by_kind", {}) or {}
    if not by and not facts:
        return tag("p", "No benchmark manifest (bench/manifest.json) in this run.")
    pairs = [tuple(k.split("/", 1)) for k in by]
    kinds = sorted({k for k, _ in pairs} | set(facts), key=lambda k: (KIND_ORDER + (k,)).index(k))
    types = sorted({t for _, t in pairs}, key=lambda t: (TYPE_ORDER + (t,)).index(t))
    rows = [[k, facts.get(k, "—"), *[by.get(f"{k}/{t}", "—") for t in types]] for k in kinds]
    return table(["kind", "facts", *[f"{t} probes" for t in types]], rows,
                 caption=f"Benchmark: {counts.get('documents', '—')} documents ({counts.get('document_words', '—')} "
                         f"words) per epoch, {counts.get('probes', '—')} probes")  # fmt: skip


def setup_section(run: RunData) -> Section:
    m, cfg = run.manifest, run.config
    steps = run.steps
    boot = run.summary.get("bootstrap", {})
    pairs = [
        ("run", str(run.path)),
        ("status", m.get("status", "— (no manifest.json)")),
        ("model", m.get("model") or cfg.get("model") or "—"),
        ("strategy", m.get("strategy") or _get(cfg, "train.strategy") or "—"),
        ("seed", num(m.get("seed", _get(cfg, "train.seed")))),
        ("training", training_line(cfg, m)),
        ("checkpoints", f"{plural(len(steps), 'checkpoint')}: steps {', '.join(step_label(s) for s in steps)} "
                        f"(step {step_label(run.base_step)} is the base model)"),  # fmt: skip
        ("time taken", time_taken(m)),
        ("started / ended", f"{m.get('started', '—')} / {m.get('ended', '—')}"),
        ("kdyn / git", f"{m.get('kdyn_version', '—')} / {m.get('git_sha') or '—'}"),
        ("intervals", f"95% (every [a–b] in this report): {boot.get('method', 'percentile bootstrap over items')}; "
                      f"{boot.get('replicates', '—')} bootstrap replicates"),  # fmt: skip
    ]
    sec = Section("setup", TITLE).add(tag("div", key_values(pairs), counts_table(run.bench_manifest), class_="cols"))
    if cfg:
        sec.add(details("resolved config (config.yaml)", tag("pre", yaml.safe_dump(cfg, sort_keys=False))))
    notes = run.notes + list(run.summary.get("notes", []))
    if notes:
        sec.add(tag("p", "Notes from the analysis:", class_="lead"), bullets(notes, class_="notes"))
    return sec


def runs_setup_section(runs: list[RunData]) -> Section:
    rows = []
    for r in runs:
        m = r.manifest
        rows.append([r.label, m.get("model") or r.config.get("model") or "—",
                     m.get("strategy") or _get(r.config, "train.strategy") or "—", num(m.get("seed")),
                     m.get("status", "—"), training_line(r.config, m), len(r.steps),
                     r.bench_manifest.get("counts", {}).get("probes", "—"), time_taken(m), str(r.path)])  # fmt: skip
    head = ["run", "model", "strategy", "seed", "status", "training", "checkpoints", "probes", "time taken", "path"]
    sec = Section("setup", TITLE).add(table(head, rows, numeric_from=99))
    for r in runs:
        if r.notes:
            sec.add(tag("p", f"{r.label}: {'; '.join(r.notes)}", class_="lead"))
    return sec
