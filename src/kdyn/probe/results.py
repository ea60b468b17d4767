"""Probe results as a typed Arrow table (the rows of probes.parquet) and their accuracy summary."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa

SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("epoch", pa.float64()),
        ("probe_id", pa.string()),
        ("kind", pa.string()),
        ("probe_type", pa.string()),
        ("fact_id", pa.string()),
        ("k", pa.int64()),
        ("logprob", pa.float64()),
        ("first_token_rank", pa.int64()),
        ("greedy", pa.string()),
        ("em", pa.bool_()),
        ("contains", pa.bool_()),
        ("rouge1_recall", pa.float64()),
        ("choice", pa.int64()),
        ("choice_norm", pa.int64()),
        ("option_logprobs", pa.list_(pa.float64())),  # mcq: summed log-likelihood of each option, in option order
        ("correct", pa.bool_()),
        ("known_wrong_at_base", pa.bool_()),  # known probes wrong at step 0: excluded from forgetting
    ]
)


def flag_known(rows: list[dict[str, Any]], base: dict[str, bool] | None = None) -> None:
    """Set known_wrong_at_base from the step-0 correctness (`base`, probe_id → correct) or these rows."""
    for r in rows:
        if r["kind"] != "known":
            r["known_wrong_at_base"] = None
        else:
            correct0 = base.get(r["probe_id"], r["correct"]) if base is not None else r["correct"]
            r["known_wrong_at_base"] = not correct0


def to_table(rows: list[dict[str, Any]], step: int = 0, epoch: float = 0.0) -> pa.Table:
    full = [{**r, "step": step, "epoch": epoch} for r in rows]
    return pa.Table.from_pylist(full, schema=SCHEMA)


def accuracy_by_group(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(kind, probe_type) → (n correct, n)."""
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        key = (r["kind"], r["probe_type"])
        acc[key][0] += int(bool(r["correct"]))
        acc[key][1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(acc.items())}
