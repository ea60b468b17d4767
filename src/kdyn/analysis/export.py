"""`kdyn export RUN --format lm-eval --out DIR`: a run's probe results as lm-evaluation-harness samples files.

    kdyn export runs/quickstart --format lm-eval --out exports/quickstart
    kdyn analyze --from exports/quickstart/*.jsonl --out exports/quickstart-analysis   # the run's own transitions

One file per checkpoint and probe group, `samples_<kind>-<probe_type>_step-<step>.jsonl`, each line in the shape of
`lm_eval --log_samples`: doc_id, doc (the benchmark's probe record and its fact's entity_id), target, arguments (the requests: one
loglikelihood request per option for MCQ, one generate_until for open probes), resps, filtered_resps, filter, metrics,
doc_hash / prompt_hash / target_hash, and the metric values: MCQ `acc` (the option with the highest summed
log-likelihood is the answer: kdyn's `correct`) and `acc_norm` (per-character normalised); open probes `correct`
(kdyn's rule for the probe type, docs/metrics.md), `exact_match`, `contains` and `rouge1_recall`. The harness writes
response leaves as strings, and so does this export. `kdyn analyze --from` reads these files back with kind, probe type
and probe id taken from `doc`, so the export reproduces the run's transitions exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from kdyn.bench.schema import as_row, load_benchmark
from kdyn.errors import KdynError
from kdyn.io import atomic_dir

FORMATS = ("lm-eval",)


def _hash(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record(doc_id: int, probe: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    correct = bool(row["correct"])
    if probe["probe_type"] == "mcq":
        lls = row.get("option_logprobs")
        if lls is None or (isinstance(lls, float) and math.isnan(lls)):
            raise KdynError(f"probe {probe['probe_id']}: this run's probes.parquet has no per-option log-likelihoods "
                            f"(runs made before kdyn 0.1.0's export); re-score it with `kdyn probe` to export MCQ")  # fmt: skip
        lls = [float(x) for x in lls]
        best = max(range(len(lls)), key=lambda j: lls[j])
        args = [[probe["prompt"], (" " if not probe["prompt"].endswith((" ", "\n")) else "") + o] for o in probe["options"]]
        resps = [[[repr(ll), "False"]] for ll in lls]
        rec = {"doc_id": doc_id, "doc": probe, "target": probe["answer_index"], "arguments": args, "resps": resps,
               "filtered_resps": [r[0] for r in resps], "filter": "none", "metrics": ["acc", "acc_norm"],
               "acc": float(correct), "acc_norm": float(row["choice_norm"] == probe["answer_index"])}  # fmt: skip
        assert (best == probe["answer_index"]) == correct  # kdyn's choice is the argmax of these sums
    else:
        args = [[probe["prompt"], {"until": [], "do_sample": False}]]
        greedy = row["greedy"] or ""
        rouge = row["rouge1_recall"]
        rec = {"doc_id": doc_id, "doc": probe, "target": probe["target"], "arguments": args, "resps": [[greedy]],
               "filtered_resps": [greedy], "filter": "none", "metrics": ["correct", "exact_match", "contains", "rouge1_recall"],
               "correct": float(correct), "exact_match": float(bool(row["em"])), "contains": float(bool(row["contains"])),
               "rouge1_recall": None if rouge is None or math.isnan(rouge) else float(rouge)}  # fmt: skip
    rec |= {"doc_hash": _hash(probe), "prompt_hash": _hash(probe["prompt"]), "target_hash": _hash(str(rec["target"])),
            "kdyn_logprob": float(row["logprob"])}  # fmt: skip
    return rec


def export_run(run: str | Path, out: str | Path, fmt: str = "lm-eval") -> list[Path]:
    """Write the run's results in `fmt` into `out` (created whole, or not at all); returns the files written."""
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise KdynError(f"unknown export format '{fmt}'; known: {', '.join(FORMATS)}")
    if not (run / "probes.parquet").is_file():
        raise KdynError(f"{run} has no probes.parquet (is it a kdyn run folder?)")
    if out.exists() and any(out.iterdir()):
        raise KdynError(f"{out} exists and is not empty; choose another --out")
    bench = load_benchmark(run / "bench")
    entity = {f.fact_id: f.entity_id for f in bench.facts}
    # doc = the probe record, plus its fact's entity (the unit of the entity-clustered bootstrap)
    probes = {p.probe_id: as_row(p) | {"entity_id": entity.get(p.fact_id)} for p in bench.probes}
    rows = pq.read_table(run / "probes.parquet").to_pylist()
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["probe_id"] not in probes:
            raise KdynError(f"{run / 'probes.parquet'}: probe '{r['probe_id']}' is not in {run / 'bench' / 'probes.jsonl'}")
        groups.setdefault((r["kind"], r["probe_type"], int(r["step"])), []).append(r)
    written = []
    with atomic_dir(out) as tmp:
        for (kind, ptype, step), group in sorted(groups.items()):
            group.sort(key=lambda r: r["probe_id"])
            name = f"samples_{kind}-{ptype}_step-{step:06d}.jsonl"
            lines = [json.dumps(_record(i, probes[r["probe_id"]], r), sort_keys=True, ensure_ascii=False) for i, r in enumerate(group)]
            (tmp / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
            written.append(out / name)
    return written
