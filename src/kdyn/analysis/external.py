"""Per-item results made elsewhere, for `kdyn analyze --from FILE... --out DIR` (DESIGN.md).

A FILE is CSV, JSONL or Parquet with columns item_id, checkpoint, correct and optionally k, kind,
probe_type, score, fact_id, entity_id (checkpoints sort numerically: numbers, or labels such as 'step-120'), or an
lm-evaluation-harness --log_samples file (lmeval.py). Any FILE may be written CKPT=FILE to give its
checkpoint; a table given so must not have its own checkpoint column. The first checkpoint is the base.
`score` is read as a target log-prob: step-level metrics use it, and AUROC uses −score as the item's NLL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from kdyn.analysis.lmeval import infer_checkpoint, looks_like_samples, read_samples
from kdyn.analysis.results import Results, as_correct, as_steps, checkpoint_number, grid, item_table
from kdyn.errors import KdynError
from kdyn.io import read_jsonl

REQUIRED = ("item_id", "checkpoint", "correct")
OPTIONAL = ("k", "kind", "probe_type", "score", "fact_id", "entity_id")  # entity_id: the entity-clustered bootstrap's unit


def parse_source(arg: str) -> tuple[str | None, Path]:
    """'CKPT=FILE' → (CKPT, FILE); a plain existing path → (None, path)."""
    if Path(arg).is_file() or "=" not in arg:
        path = Path(arg)
        label = None
    else:
        label, raw = arg.split("=", 1)
        path = Path(raw)
    if not path.is_file():
        raise KdynError(f"file not found: {path}")
    return label, path


def read_any(path: Path) -> tuple[pd.DataFrame | None, list[dict[str, Any]] | None]:
    """A table file as a DataFrame (CSV / Parquet), or JSONL records (which may be lm-eval samples)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            return pd.read_csv(path), None
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
            raise KdynError(f"{path} is not a readable CSV file ({str(e).splitlines()[0]})") from None
    if suffix == ".parquet":
        try:
            return pq.read_table(path).to_pandas(), None
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise KdynError(f"{path} is not a readable parquet file ({type(e).__name__})") from None
    if suffix in (".jsonl", ".json"):
        return None, read_jsonl(path)
    raise KdynError(f"{path}: unsupported file type '{suffix}'; use .csv, .jsonl or .parquet")


def read_source(arg: str, metric: str | None, filter_name: str | None) -> tuple[Path, pd.DataFrame]:
    """One --from argument as a checked long table (item_id, checkpoint, correct, k, kind, probe_type, score)."""
    label, path = parse_source(arg)
    frame, records = read_any(path)
    if records is not None and looks_like_samples(path, records[0] if records else None):
        ckpt = checkpoint_number(label, str(path)) if label is not None else infer_checkpoint(path)
        return path, read_samples(path, ckpt, metric, filter_name)
    if frame is None:
        frame = pd.DataFrame(records)
    needed = [c for c in REQUIRED if c != "checkpoint" or label is None]
    missing = [c for c in needed if c not in frame]
    if missing:
        raise KdynError(f"{path} is missing column(s) {', '.join(missing)}; per-item results need "
                        f"item_id, checkpoint, correct (optionally k, kind, probe_type, score)")  # fmt: skip
    if label is not None:
        if "checkpoint" in frame:
            raise KdynError(f"{path} has its own checkpoint column, so it cannot also be given as {label}=FILE")
        frame = frame.assign(checkpoint=checkpoint_number(label, str(path)))
    out = frame[[c for c in REQUIRED + OPTIONAL if c in frame]].copy()
    out["checkpoint"] = as_steps(out["checkpoint"], str(path), "checkpoint")
    out["correct"] = as_correct(out["correct"], str(path))
    grid(out["item_id"].astype(str), out["checkpoint"].to_numpy(), str(path), "item_id", "checkpoint")  # per-file check
    return path, out


def load_external(sources: Sequence[str], metric: str | None = None, filter_name: str | None = None) -> Results:
    """Per-item results from one or more files; bad input raises KdynError naming the file."""
    if not sources:
        raise KdynError("--from needs at least one results file")
    parts = [read_source(arg, metric, filter_name) for arg in sources]
    paths = [str(p) for p, _ in parts]
    long = pd.concat([f for _, f in parts], ignore_index=True)
    label = paths[0] if len(paths) == 1 else f"the files given to --from ({', '.join(paths)})"
    g = grid(long["item_id"].astype(str), long["checkpoint"].to_numpy(), label, "item_id", "checkpoint")
    if len(g.steps) < 2:
        raise KdynError(f"{label} cover(s) only checkpoint {g.steps[0]}; the analysis needs at least two checkpoints")
    first = long.iloc[g.first_rows()].reset_index(drop=True).assign(item_id=g.items)
    res = Results(source=label, items=item_table(first, label), steps=g.steps,
                  correct=g.matrix(long["correct"].to_numpy(), dtype=bool, fill=False))  # fmt: skip
    res.notes.append(f"imported results: the first checkpoint ({g.steps[0]}) is the base")
    if "score" in long and pd.to_numeric(long["score"], errors="coerce").notna().any():
        res.score = g.matrix(pd.to_numeric(long["score"], errors="coerce"))
        res.nll = -res.score
        res.notes.append("AUROC uses −score as each item's NLL (imported results have no per-fact loss)")
    res.meta = {"run": None, "model": None, "strategy": None, "seed": None}
    return res


def imported_frame(res: Results) -> pd.DataFrame:
    """The normalised long table of imported results, as DIR/probes.parquet (so compare and query work)."""
    n, s = res.correct.shape
    score = res.score if res.score is not None else np.full((n, s), np.nan)
    items = res.items.loc[np.repeat(np.arange(n), s)].reset_index(drop=True)
    return pd.DataFrame({
        "step": np.tile(res.steps, n), "probe_id": items["item_id"], "correct": res.correct.ravel(),
        "logprob": score.ravel(), "kind": items["kind"], "probe_type": items["probe_type"], "k": items["k"],
    })  # fmt: skip
