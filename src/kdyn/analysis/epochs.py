"""Per-epoch counts of acquired, retained and forgotten knowledge, for probes and for entities.

Between consecutive epoch checkpoints (Results.epoch_indices; every checkpoint when epochs are unknown):
acquired = not learned before, learned now; retained = learned at both; forgotten = learned before,
not now. A probe is learned when correct. An entity is learned (Mousavi et al.) when the mean ROUGE-1
recall of its probes is >= 0.6 (probes with no ROUGE-1 value are left out of the mean); entities are
counted per (kind, probe_type) and with all probe types pooled (probe_type = 'all').
The base row of each group (epoch 0) has no previous epoch, so its transition counts are null.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdyn.analysis.results import ALL, Results

ENTITY_THRESHOLD = 0.6
EPOCH_COLUMNS = ["level", "kind", "probe_type", "epoch", "step", "n", "n_learned", "n_acquired",
                 "n_retained", "n_forgotten"]  # fmt: skip


def _rows(level: str, kind: str, ptype: str, res: Results, idx: np.ndarray,
          learned: np.ndarray, seen: np.ndarray) -> list[dict]:  # fmt: skip
    """Rows for one group: learned / seen are (units, epoch checkpoints) booleans."""
    labels = res.epochs[idx] if res.epochs is not None else np.arange(len(idx))
    out = []
    for j, i in enumerate(idx):
        row = {"level": level, "kind": kind, "probe_type": ptype, "epoch": float(labels[j]),
               "step": res.steps[i], "n": int(seen[:, j].sum()), "n_learned": int((learned[:, j] & seen[:, j]).sum()),
               "n_acquired": pd.NA, "n_retained": pd.NA, "n_forgotten": pd.NA}  # fmt: skip
        if j > 0:
            both = seen[:, j] & seen[:, j - 1]
            before, now = learned[:, j - 1] & both, learned[:, j] & both
            row |= {"n_acquired": int((~before & now & both).sum()), "n_retained": int((before & now).sum()),
                    "n_forgotten": int((before & ~now).sum())}  # fmt: skip
        out.append(row)
    return out


def entity_learned(rouge: np.ndarray, entity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(learned, seen) per entity x column from per-probe ROUGE-1 (probes x columns) and entity codes."""
    n_ent = int(entity.max()) + 1 if entity.size else 0
    learned = np.zeros((n_ent, rouge.shape[1]), dtype=bool)
    seen = np.zeros_like(learned)
    for j in range(rouge.shape[1]):
        ok = np.isfinite(rouge[:, j])
        total = np.bincount(entity[ok], weights=rouge[ok, j], minlength=n_ent)
        count = np.bincount(entity[ok], minlength=n_ent)
        seen[:, j] = count > 0
        learned[:, j] = seen[:, j] & (total >= ENTITY_THRESHOLD * np.maximum(count, 1) - 1e-12)
    return learned, seen


def epoch_counts(res: Results) -> tuple[pd.DataFrame, list[str]]:
    """epoch_counts.parquet (probe- and entity-level rows) and notes on what could not be computed."""
    idx = res.epoch_indices()
    rows: list[dict] = []
    for g in res.groups():
        c = res.correct[np.ix_(g.rows, idx)]
        rows += _rows("probe", g.kind, g.probe_type, res, idx, c, np.ones_like(c))
    notes = []
    entity_ids = res.items["entity_id"].to_numpy(dtype=object)
    has_entity = pd.notna(pd.Series(entity_ids)).to_numpy()
    if res.rouge1 is None:
        notes.append("entity-level counts need ROUGE-1 recall per probe (rouge1_recall); none in the input")
    elif not has_entity.any():
        notes.append("entity-level counts need each probe's entity (entity_id via bench/facts.jsonl); none found")
    else:
        kinds = res.items["kind"].to_numpy(dtype=object)
        types = res.items["probe_type"].to_numpy(dtype=object)
        keys = list(dict.fromkeys((k, t) for k, t in zip(kinds[has_entity], types[has_entity])))
        keys = list(dict.fromkeys(keys + [(k, ALL) for k in kinds[has_entity]]))
        for kind, ptype in keys:
            mask = has_entity & (kinds == kind) & ((types == ptype) if ptype != ALL else True)
            codes, _ = pd.factorize(entity_ids[mask])
            learned, seen = entity_learned(res.rouge1[np.ix_(np.nonzero(mask)[0], idx)], codes)
            if seen.any():
                rows += _rows("entity", kind, ptype, res, idx, learned, seen)
    frame = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    for col in ("n_acquired", "n_retained", "n_forgotten"):
        frame[col] = frame[col].astype("Int64")
    return frame, notes
