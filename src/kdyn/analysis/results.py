"""Per-item results as the analysis sees them: correctness (and scores) over items x checkpoints.

`grid` turns a long table (one row per item and checkpoint) into matrices, and is where bad input is
caught: duplicate rows and checkpoints covering different items. Run directories (load.py) and files
made elsewhere (external.py) both end in a `Results`. `groups` splits items by knowledge kind and probe
type; `known` probes wrong at the base are split off as `known_wrong_at_base` (DESIGN.md: they count
for forgetting only if correct at step 0, the rest are reported apart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kdyn.errors import KdynError

ALL = "all"  # kind / probe_type of items that carry none
KNOWN_WRONG_AT_BASE = "known_wrong_at_base"
KIND_ORDER = ("new", "related", "updated", "known", KNOWN_WRONG_AT_BASE, "skill")
TYPE_ORDER = ("cloze", "qa", "mcq", "compositional", "arithmetic")
ITEM_COLUMNS = ("item_id", "kind", "probe_type", "k", "fact_id", "entity_id")


@dataclass
class Group:
    """Items of one (kind, probe_type); `rows` index into Results' item axis."""

    kind: str
    probe_type: str
    rows: np.ndarray

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.probe_type}"


@dataclass
class Results:
    """Everything the analysis reads, aligned on items (rows) and checkpoints (columns)."""

    source: str  # the file or run directory, for messages
    items: pd.DataFrame  # ITEM_COLUMNS, one row per item
    steps: np.ndarray  # (S,) sorted checkpoints; steps[0] is the base model
    correct: np.ndarray  # bool (N, S)
    score: np.ndarray | None = None  # (N, S) target log-prob (runs) or `score` (external); NaN = missing
    rouge1: np.ndarray | None = None  # (N, S) ROUGE-1 recall of the greedy output
    nll: np.ndarray | None = None  # (N, S) per-fact NLL of the item's fact (fact_loss.parquet)
    epochs: np.ndarray | None = None  # (S,) epoch of each checkpoint
    loss: np.ndarray | None = None  # (S,) training loss since the previous checkpoint; NaN at the base
    eval_loss: np.ndarray | None = None  # (S,) training-set loss measured at each checkpoint (eval_loss.parquet)
    meta: dict[str, Any] = field(default_factory=dict)  # model, strategy, seed when known
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_arrays(cls, correct: Any, steps: Any = None, item_ids: Any = None, kind: Any = None,
                    probe_type: Any = None, k: Any = None, source: str = "<arrays>",
                    **extra: Any) -> Results:  # fmt: skip
        """Results from in-memory arrays (items x checkpoints); metadata columns may be scalars or per item."""
        c = np.asarray(correct, dtype=bool)
        n, s = c.shape
        frame = pd.DataFrame({"item_id": item_ids if item_ids is not None else [f"q{i}" for i in range(n)]})
        for name, value in (("kind", kind), ("probe_type", probe_type), ("k", k)):
            if value is not None:
                frame[name] = value
        for name in ("fact_id", "entity_id"):
            if name in extra:
                frame[name] = extra.pop(name)
        steps = np.arange(s) if steps is None else np.asarray(steps)
        return cls(source=source, items=item_table(frame, source), steps=steps, correct=c, **extra)

    @property
    def n_items(self) -> int:
        return int(self.correct.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.correct.shape[1])

    def analysis_kinds(self) -> np.ndarray:
        """Each item's kind, with `known` items wrong at the base relabelled KNOWN_WRONG_AT_BASE."""
        kinds = self.items["kind"].to_numpy(dtype=object).copy()
        kinds[(kinds == "known") & ~self.correct[:, 0]] = KNOWN_WRONG_AT_BASE
        return kinds

    def units(self, rows: np.ndarray) -> np.ndarray:
        """Entity code of each of `rows`, for entity bootstraps; an item without an entity is its own unit."""
        codes, _ = pd.factorize(self.items["entity_id"].to_numpy(dtype=object), use_na_sentinel=True)
        alone = codes < 0
        codes[alone] = codes.max(initial=-1) + 1 + np.arange(int(alone.sum()))
        return codes[np.asarray(rows, dtype=np.int64)]

    def composed(self, rows: np.ndarray) -> np.ndarray:
        """Which of `rows` are compositional probes: their fact_id (and so their fact's NLL and exposure) is the
        first hop's, not the composed fact's."""
        return self.items["probe_type"].to_numpy(dtype=object)[np.asarray(rows, dtype=np.int64)] == "compositional"

    def groups(self) -> list[Group]:
        """Non-empty (kind, probe_type) groups in a stable, readable order."""
        frame = pd.DataFrame({"kind": self.analysis_kinds(), "probe_type": self.items["probe_type"].to_numpy()})
        out = [Group(str(k), str(t), np.asarray(rows, dtype=np.int64))
               for (k, t), rows in frame.groupby(["kind", "probe_type"], sort=False).indices.items()]  # fmt: skip
        return sorted(out, key=lambda g: (_rank(g.kind, KIND_ORDER), _rank(g.probe_type, TYPE_ORDER)))

    def epoch_indices(self) -> np.ndarray:
        """Checkpoint indices that close an epoch (plus the base): every checkpoint when epochs are unknown.

        The checkpoint of epoch e is the first whose epoch value equals the integer e, which holds both
        when epochs are counted as completed epochs and when they are fractional (step / steps per epoch).
        """
        if self.epochs is None or not np.isfinite(self.epochs).any():
            return np.arange(self.n_steps)
        e = self.epochs
        picked = [0]
        seen: set[float] = {float(e[0])}
        for i in range(1, self.n_steps):
            if np.isfinite(e[i]) and e[i] == np.round(e[i]) and float(e[i]) not in seen:
                picked.append(i)
                seen.add(float(e[i]))
        return np.asarray(picked, dtype=np.int64)

    def step_cadence(self) -> bool:
        """True when some checkpoints fall between epochs (probing every N steps)."""
        return self.epochs is not None and len(self.epoch_indices()) < self.n_steps


def _rank(name: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


@dataclass
class Grid:
    """Where each row of a long table lands in the (item, checkpoint) matrix."""

    items: np.ndarray  # sorted item ids (str)
    steps: np.ndarray  # sorted checkpoints
    flat: np.ndarray  # per row: item_index * n_steps + step_index

    def matrix(self, values: Any, dtype: Any = np.float64, fill: Any = np.nan) -> np.ndarray:
        out = np.full(len(self.items) * len(self.steps), fill, dtype=dtype)
        out[self.flat] = np.asarray(values, dtype=dtype)
        return out.reshape(len(self.items), len(self.steps))

    def first_rows(self) -> np.ndarray:
        """For each item, the index of one of its rows (to read per-item metadata)."""
        item_index = self.flat // len(self.steps)
        first = np.full(len(self.items), -1, dtype=np.int64)
        first[item_index[::-1]] = np.arange(len(item_index))[::-1]
        return first


def grid(item_ids: Any, steps: np.ndarray, source: str, item_label: str, step_label: str) -> Grid:
    """Index a long table by (item, checkpoint); duplicates or uneven checkpoints raise KdynError."""
    codes, items = pd.factorize(pd.Series(item_ids, dtype="string").astype(object), sort=True)
    step_codes, uniq_steps = pd.factorize(steps, sort=True)
    n, s = len(items), len(uniq_steps)
    if n == 0:
        raise KdynError(f"{source} has no rows; it needs one row per {item_label} and {step_label}")
    flat = codes.astype(np.int64) * s + step_codes
    counts = np.bincount(flat, minlength=n * s)
    if (counts > 1).any():
        where = int(np.argmax(counts > 1))
        extra = int((counts[counts > 1] - 1).sum())
        raise KdynError(
            f"{source} has {extra} duplicate row(s) for the same {item_label} and {step_label} "
            f"(e.g. {items[where // s]!r} at {step_label} {uniq_steps[where % s]}); "
            f"each item must be scored once per checkpoint"
        )
    if (counts == 0).any():
        missing = (counts.reshape(n, s) == 0)
        j = int(np.argmax(missing.any(axis=0)))
        i = int(np.argmax(missing[:, j]))
        raise KdynError(
            f"{source}: checkpoints cover different items ({step_label} {uniq_steps[j]} lacks "
            f"{int(missing[:, j].sum())} of {n} items, e.g. {items[i]!r}); every checkpoint must score the same items"
        )
    return Grid(np.asarray(items, dtype=object), np.asarray(uniq_steps), flat)


def as_correct(values: pd.Series, source: str, column: str = "correct") -> np.ndarray:
    """A correctness column as bool: true/false, 0/1 or their strings; anything else raises KdynError."""
    if values.isna().any():
        raise KdynError(f"{source} has {int(values.isna().sum())} row(s) with no '{column}' value; "
                        f"every row needs true/false or 0/1")  # fmt: skip
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values
    else:
        text = values.astype(str).str.strip().str.lower()
        numbers = text.map({"true": 1, "false": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0})
    bad = ~numbers.isin([0, 1])
    if bad.any():
        raise KdynError(f"{source}: column '{column}' must be true/false or 0/1, found "
                        f"{_show(values[bad].iloc[0])}")  # fmt: skip
    return numbers.to_numpy(dtype=np.float64) == 1


def _show(value: Any) -> str:
    """A value for an error message: strings quoted, numbers plain (no numpy reprs)."""
    return repr(value) if isinstance(value, str) else str(value.item() if hasattr(value, "item") else value)


_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def checkpoint_number(label: Any, source: str) -> int | float:
    """A checkpoint as a number: numbers pass through; strings give their last integer ('step-120' → 120)."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    if isinstance(label, (float, np.floating)) and np.isfinite(label):
        return int(label) if float(label).is_integer() else float(label)
    match = _LAST_INT.search(str(label))
    if match is None:
        raise KdynError(f"{source}: checkpoint {label!r} is not a number and contains none "
                        f"(use a step number such as 120 or 'step-120')")  # fmt: skip
    return int(match.group(1))


def as_steps(values: pd.Series, source: str, column: str) -> np.ndarray:
    """A checkpoint column as numbers (int when all are whole); raises KdynError on missing values."""
    if values.isna().any():
        raise KdynError(f"{source} has {int(values.isna().sum())} row(s) with no '{column}' value")
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        out = values.to_numpy(dtype=np.float64)
    else:
        mapping = {v: checkpoint_number(v, source) for v in pd.unique(values)}
        out = values.map(mapping).to_numpy(dtype=np.float64)
    return out.astype(np.int64) if np.all(out == np.round(out)) else out


def item_table(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Normalise per-item metadata: missing kind / probe_type become 'all', k defaults to 0 and is checked."""
    out = pd.DataFrame({"item_id": frame["item_id"].astype(str).to_numpy()})
    for col in ("kind", "probe_type"):
        vals = frame[col] if col in frame else pd.Series([None] * len(frame))
        out[col] = pd.Series(vals.to_numpy(dtype=object)).where(pd.notna(vals.to_numpy()), ALL).astype(str)
    k = frame["k"] if "k" in frame else pd.Series(np.zeros(len(frame)))
    k = pd.to_numeric(pd.Series(k.to_numpy()), errors="coerce").fillna(0)
    bad = (k < 0) | (k == 1) | (k != np.round(k))
    if bad.any():
        raise KdynError(f"{source}: item {out['item_id'][bad.to_numpy()].iloc[0]!r} has k = "
                        f"{_show(k[bad].iloc[0])}; k is the number of options (>= 2), or 0 for open "
                        f"questions")  # fmt: skip
    out["k"] = k.to_numpy(dtype=np.int64)
    for col in ("fact_id", "entity_id"):
        vals = frame[col].to_numpy(dtype=object) if col in frame else np.full(len(frame), None, dtype=object)
        out[col] = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in vals]
    return out
