"""Read lm-evaluation-harness `--log_samples` files (samples_<task>_<date>.jsonl) as per-item results.

Each line of such a file is one document of one task: doc_id, doc, target, arguments, resps,
filtered_resps, and (recent harness versions) filter, metrics, doc_hash, prompt_hash, target_hash, plus one
key per metric (acc, acc_norm, exact_match, ...). The harness writes leaf values of resps /
filtered_resps as strings. Mapping to kdyn's per-item columns:
- item_id = '<task>/<doc_id>', probe_type = the task (from the file name), kind = 'all';
- correct = the chosen metric (default: acc, then exact_match, then the first 0/1 metric listed);
- k = the number of options for multiple-choice tasks (one log-likelihood request per option), else 0;
- score = the log-likelihood of the target option (multiple choice), else missing.
The checkpoint is given as CKPT=FILE or read from the nearest folder named like step-120, checkpoint-120,
ckpt120 or global_step120 (the harness puts files under a folder named after the model path).
Files written by `kdyn export --format lm-eval` (samples_<kind>-<type>_step-<step>.jsonl, kdyn/analysis/export.py)
carry the benchmark's probe record as `doc`: item_id, kind and probe_type come from it, the checkpoint from the
file name, `correct` is the default metric and `kdyn_logprob` the score, so the run's own analysis is reproduced.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdyn.errors import KdynError, did_you_mean
from kdyn.io import read_jsonl

DEFAULT_METRICS = ("acc", "exact_match")
_FILE = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")
_KDYN_FILE = re.compile(r"^samples_(?P<task>.+)_step-(?P<step>\d+)\.jsonl$")  # `kdyn export --format lm-eval`
_KDYN_DOC = ("probe_id", "kind", "probe_type")  # a kdyn export's doc is the benchmark's probe record
_CKPT = re.compile(r"(?:global_step|checkpoint|ckpt|step|iter(?:ation)?)[-_=]?(\d+)", re.IGNORECASE)


def looks_like_samples(path: Path, first: dict[str, Any] | None) -> bool:
    """True for a harness samples file: by its name, or by a first record with doc_id and responses."""
    if _FILE.match(path.name) or _KDYN_FILE.match(path.name):
        return True
    return first is not None and "doc_id" in first and ("filtered_resps" in first or "resps" in first)


def task_name(path: Path) -> str:
    match = _FILE.match(path.name) or _KDYN_FILE.match(path.name)
    return match.group("task") if match else path.stem.removeprefix("samples_")


def infer_checkpoint(path: Path) -> int:
    """The checkpoint number in the file name of a kdyn export, else in the nearest parent folder named like
    step-120 / checkpoint-120."""
    kdyn = _KDYN_FILE.match(path.name)
    if kdyn:
        return int(kdyn.group("step"))
    for part in reversed(path.resolve().parent.parts):
        hits = _CKPT.findall(part)
        if hits:
            return int(hits[-1])
    raise KdynError(f"cannot tell which checkpoint {path} belongs to; name it on the command line as "
                    f"CKPT=FILE (e.g. 120={path.name}) or keep it under a folder such as step-120")  # fmt: skip


def _pick_metric(rec: dict[str, Any], metric: str | None, path: Path) -> str:
    if metric is not None:
        if metric not in rec:
            numeric = [k for k, v in rec.items() if isinstance(v, (int, float)) and k != "doc_id"]
            raise KdynError(f"{path}, line 1: no metric '{metric}'{did_you_mean(metric, numeric)}; "
                            f"this file has {', '.join(numeric) or 'no numeric metrics'}")  # fmt: skip
        return metric
    listed = rec.get("metrics") if isinstance(rec.get("metrics"), list) else []
    for name in (*DEFAULT_METRICS, *listed):
        if name in rec and _binary(rec[name]) is not None:
            return str(name)
    raise KdynError(f"{path}: no 0/1 metric found (looked for {', '.join(DEFAULT_METRICS)} and the 'metrics' "
                    f"list); choose one with --metric")  # fmt: skip


def _binary(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def _options(rec: dict[str, Any]) -> tuple[int, float]:
    """(k, target log-likelihood) of a multiple-choice record; (0, NaN) for anything else."""
    resps = rec.get("filtered_resps")
    if not isinstance(resps, list) or len(resps) < 2:
        return 0, np.nan
    if not all(isinstance(r, list) and len(r) == 2 for r in resps):
        return 0, np.nan
    try:
        ll = [float(r[0]) for r in resps]
    except (TypeError, ValueError):
        return 0, np.nan
    k = len(ll) // 2 if "acc_mutual_info" in (rec.get("metrics") or []) else len(ll)
    target = rec.get("target")
    if isinstance(target, str) and target.strip().isdigit():
        target = int(target)
    score = ll[target] if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < k else np.nan
    return k, score


def read_samples(path: Path, checkpoint: Any, metric: str | None = None,
                 filter_name: str | None = None) -> pd.DataFrame:  # fmt: skip
    """One harness samples file as rows of item_id, checkpoint, correct, k, kind, probe_type, score."""
    records = read_jsonl(path)
    if not records:
        raise KdynError(f"{path} has no samples")
    filters = list(dict.fromkeys(str(r.get("filter", "none")) for r in records))
    if filter_name is not None:
        if filter_name not in filters:
            raise KdynError(f"{path} has no filter '{filter_name}'{did_you_mean(filter_name, filters)}; "
                            f"its filters are {', '.join(filters)}")  # fmt: skip
    elif len(filters) > 1:
        raise KdynError(f"{path} holds results under several filters ({', '.join(filters)}); pick one with --filter")
    chosen = filter_name or filters[0]
    ours = _kdyn_doc(records[0])
    name = "correct" if metric is None and ours and "correct" in records[0] else _pick_metric(records[0], metric, path)
    task = task_name(path)
    rows = []
    for lineno, rec in enumerate(records, start=1):
        if str(rec.get("filter", "none")) != chosen:
            continue
        if "doc_id" not in rec:
            raise KdynError(f"{path}, line {lineno}: no doc_id; is this an lm-eval --log_samples file?")
        value = _binary(rec.get(name))
        if value is None:
            raise KdynError(f"{path}, line {lineno}: metric '{name}' is {rec.get(name)!r}, not 0/1; "
                            f"choose a 0/1 metric with --metric")  # fmt: skip
        k, score = _options(rec)
        doc = rec.get("doc") if _kdyn_doc(rec) else None
        fact, entity = None, None
        if doc is not None:  # kdyn's own export: its probe id, kind, type, fact and entity, and the target log-prob
            item, kind, ptype, fact, entity = doc["probe_id"], doc["kind"], doc["probe_type"], doc.get("fact_id"), doc.get("entity_id")
            score = float(rec["kdyn_logprob"]) if isinstance(rec.get("kdyn_logprob"), (int, float)) else score
        else:
            item, kind, ptype = f"{task}/{rec['doc_id']}", None, task
        rows.append({"item_id": item, "checkpoint": checkpoint, "correct": value, "k": k, "kind": kind,
                     "probe_type": ptype, "score": score, "fact_id": fact, "entity_id": entity})  # fmt: skip
    return pd.DataFrame(rows)


def _kdyn_doc(rec: dict[str, Any]) -> bool:
    doc = rec.get("doc")
    return isinstance(doc, dict) and all(isinstance(doc.get(key), str) for key in _KDYN_DOC)
