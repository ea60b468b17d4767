"""Accuracy, acquisition and consolidation by exposure frequency (DynamicKnowledgeCircuits' buckets).

Each trained fact is stated in `exposures` documents per epoch (facts.jsonl). Probes of trained facts are
grouped by their fact's bucket — low: 1 copy, medium: 2–5, high: more than 5 — per (kind, probe_type,
bucket), and for every trained kind pooled (kind `trained`). Per group, base → final checkpoint, with
DESIGN.md's definitions: accuracy at the base and at the end, acquisition BT = #{0→1}/n, forgetting
F = #{1→0}/n, and the consolidation rate (consolidated / acquired, over acquisitions with a later
checkpoint: `n_followed`), each with a 95% interval (Wilson; trajectories.py, stats.py). Probes without
exposures (known facts, skills, imported results) are left out; so are compositional probes (`exposure_notes` says so): their fact is the first hop, and the exposure of
that hop is not the composed fact's. A run without exposure counts gives an empty table.

    exposure.parquet / exposure_table(res, boot) → EXPOSURE_COLUMNS
    exposure_over_runs(run_dirs)                 → (per run, mean ± t-CI over seeds), for sweeps
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kdyn.analysis.comparison import seed_stats
from kdyn.analysis.load import load_run, run_labels
from kdyn.analysis.results import Group, Results
from kdyn.analysis.stats import Bootstrap
from kdyn.analysis.trajectories import Trajectories, consolidation_table
from kdyn.analysis.transitions import group_transitions

BUCKETS = (("low", 1, 1), ("medium", 2, 5), ("high", 6, None))  # (name, min copies, max copies or open)
POOLED = "trained"  # kind of the rows that pool every trained kind
CI = ("", "_lo", "_hi")
METRICS = ("acc_final", "backward_transfer", "forgetting", "consolidation_rate")
EXPOSURE_COLUMNS = ["kind", "probe_type", "bucket", "min_exposures", "max_exposures", "n", "acc_base",
                    *[f"{m}{s}" for m in METRICS for s in CI], "n_ever_acquired", "n_followed",
                    "reason"]  # fmt: skip
SEED_COLUMNS = ["model", "strategy", "kind", "probe_type", "bucket", "n_seeds", "runs",
                *[f"{m}{s}" for m in METRICS for s in ("_mean", "_lo", "_hi")], "reason"]  # fmt: skip


@dataclass
class BucketGroup(Group):
    """The items of one (kind, probe_type) whose facts fall in one exposure bucket."""

    bucket: str = ""

    @property
    def key(self) -> str:  # its own bootstrap stream, apart from the whole group's
        return f"{self.kind}/{self.probe_type}/exposure={self.bucket}"


def buckets(exposures: np.ndarray) -> np.ndarray:
    """Bucket name per item (object array); None where there is no positive exposure count."""
    e = np.asarray(exposures, dtype=np.float64)
    out = np.full(e.shape, None, dtype=object)
    for name, low, high in BUCKETS:
        out[(e >= low) & ((e <= high) if high is not None else np.isfinite(e))] = name
    return out


def _exposures(res: Results) -> np.ndarray:
    return pd.to_numeric(res.items["exposures"], errors="coerce").to_numpy(dtype=np.float64)


def exposure_notes(res: Results) -> list[str]:
    """Why some probes with an exposure count are not in the exposure table."""
    if "exposures" not in res.items:
        return []
    left = int((res.composed(np.arange(res.n_items)) & np.isfinite(_exposures(res))).sum())
    return [f"exposure buckets leave out {left} compositional probe(s): the exposure they carry is their first "
            f"hop's, not the composed fact's"] if left else []  # fmt: skip


def bucket_groups(res: Results) -> list[BucketGroup]:
    """Non-empty groups: each (kind, probe_type) split by bucket, then all trained kinds pooled per type
    (compositional probes left out: their exposure is the first hop's)."""
    if "exposures" not in res.items:
        return []
    bucket = buckets(_exposures(res))
    bucket[res.composed(np.arange(res.n_items))] = None
    out = []
    for g in res.groups():
        for name, _, _ in BUCKETS:
            rows = g.rows[bucket[g.rows] == name]
            if len(rows):
                out.append(BucketGroup(g.kind, g.probe_type, rows, name))
    ptype = res.items["probe_type"].to_numpy(dtype=object)
    for t in dict.fromkeys(g.probe_type for g in out):
        for name, _, _ in BUCKETS:
            rows = np.nonzero((ptype == t) & (bucket == name))[0]
            if len(rows):
                out.append(BucketGroup(POOLED, t, rows, name))
    return out


def exposure_table(res: Results, boot: Bootstrap) -> pd.DataFrame:
    """exposure.parquet: one row per (kind, probe_type, bucket) with CIs, base → final checkpoint."""
    groups = bucket_groups(res)
    if not groups:
        return pd.DataFrame(columns=EXPOSURE_COLUMNS)
    cons = consolidation_table(res, Trajectories(res.correct), boot, groups)
    exposures = _exposures(res)
    rows = []
    for g, (_, c) in zip(groups, cons.iterrows()):
        tr, _ = group_transitions(res, g, boot)
        r = tr[(tr["from_step"] == res.steps[0]) & (tr["to_step"] == res.steps[-1])].iloc[0]
        rows.append({"kind": g.kind, "probe_type": g.probe_type, "bucket": g.bucket,
                     "min_exposures": int(exposures[g.rows].min()), "max_exposures": int(exposures[g.rows].max()),
                     "n": len(g.rows), "acc_base": r["acc_from"], "acc_final": r["acc_to"],
                     "acc_final_lo": r["acc_to_lo"], "acc_final_hi": r["acc_to_hi"],
                     **{f"{m}{s}": r[f"{m}{s}"] for m in ("backward_transfer", "forgetting") for s in CI},
                     **{f"consolidation_rate{s}": c[f"consolidation_rate{s}"] for s in CI},
                     "n_ever_acquired": int(c["n_ever_acquired"]), "n_followed": int(c["n_followed"]),
                     "reason": c["reason"]})  # fmt: skip
    return pd.DataFrame(rows, columns=EXPOSURE_COLUMNS)


def exposure_over_runs(run_dirs: list[Path], bootstrap: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run's exposure table (with run, model, strategy, seed), and mean ± t-CI over seeds of runs
    sharing model and strategy."""
    boot = Bootstrap(replicates=bootstrap, seed=seed)
    frames = []
    for label, path in zip(run_labels(run_dirs), run_dirs):
        res = load_run(path)
        table = exposure_table(res, boot)
        frames.append(table.assign(run=label, model=res.meta.get("model"), strategy=res.meta.get("strategy"),
                                   seed=res.meta.get("seed")))  # fmt: skip
    columns = ["run", "model", "strategy", "seed", *EXPOSURE_COLUMNS]
    per_run = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
    if per_run is None:
        return pd.DataFrame(columns=columns), pd.DataFrame(columns=SEED_COLUMNS)
    per_run = per_run[columns]
    rows = []
    keys = ["model", "strategy", "kind", "probe_type", "bucket"]
    for key, part in per_run.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key)) | {"n_seeds": len(part), "runs": ", ".join(part["run"])}
        rows.append(row | seed_stats(part, METRICS))
    return per_run, pd.DataFrame(rows, columns=SEED_COLUMNS)
