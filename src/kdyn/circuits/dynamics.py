"""Link to the knowledge dynamics: did the circuits of facts the model forgot change more than those it kept?

Every prompt is one fact's cloze probe. For a pair of analysed checkpoints (s, t) — each consecutive pair,
and base → final — a fact's circuit change is 1 − Jaccard of its own top-k edges (its per-prompt scores,
k = CircuitsConfig.per_prompt_k) at s and at t. Facts are grouped by what their cloze probe did between
s and t in probes.parquet: forgotten (correct → wrong), retained (correct → correct), acquired (wrong →
correct), never (wrong → wrong). Per group: number of facts, mean change, percentile bootstrap 95% CI
over facts. A checkpoint that was not probed gives no rows, and a note says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kdyn.analysis.stats import Bootstrap
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.store import CircuitFile

DYNAMICS_COLUMNS = ("from_step", "to_step", "relation", "group", "n_facts", "mean_change", "ci_low", "ci_high")
GROUPS = {(True, False): "forgotten", (True, True): "retained", (False, True): "acquired", (False, False): "never"}


def per_prompt_top(cf: CircuitFile, k: int) -> np.ndarray:
    """[N, E] bool: each prompt's k edges with the largest |score|."""
    a = np.abs(cf.per_prompt)
    k = min(k, a.shape[1])
    top = np.argpartition(-a, k - 1, axis=1)[:, :k]
    out = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(out, top, True, axis=1)
    return out


def pairs_of(steps: list[int]) -> list[tuple[int, int]]:
    pairs = list(zip(steps[:-1], steps[1:]))
    if len(steps) > 2:
        pairs.append((steps[0], steps[-1]))
    return pairs


def dynamics_table(files: list[CircuitFile], correct: dict[tuple[str, int], bool], cfg: CircuitsConfig,
                   notes: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of DYNAMICS_COLUMNS for one relation; `correct` maps (probe_id, step) → the probe's correctness."""
    files = sorted(files, key=lambda f: f.step)
    by_step = {f.step: f for f in files}
    boot = Bootstrap(replicates=cfg.bootstrap, seed=cfg.seed)
    rows = []
    tops: dict[int, np.ndarray] = {}
    for s, t in pairs_of([f.step for f in files]):
        a, b = by_step[s], by_step[t]
        if a.probe_ids != b.probe_ids:
            notes.append(f"dynamics {s}→{t}: the checkpoints were analysed on different prompts")
            continue
        missing = [step for step in (s, t) if not any((p, step) in correct for p in a.probe_ids)]
        if missing:
            notes.append(f"dynamics {s}→{t}: step {missing[0]} was not probed, so facts cannot be grouped")
            continue
        k = cfg.per_prompt_k(int(a.valid.sum()))
        for step in (s, t):
            if step not in tops:
                tops[step] = per_prompt_top(by_step[step], k)
        inter = (tops[s] & tops[t]).sum(1)
        union = (tops[s] | tops[t]).sum(1)
        change = 1.0 - inter / np.maximum(union, 1)  # [N]
        groups = [GROUPS.get((correct.get((p, s)), correct.get((p, t))), None) for p in a.probe_ids]
        for name in GROUPS.values():
            x = change[[g == name for g in groups]]
            # one fact has no interval: resampling it gives itself back
            lo, hi = (boot.ci(boot.means(x, f"{a.relation}:{s}:{t}:{name}"))) if x.size > 1 else (np.nan, np.nan)
            rows.append({"from_step": s, "to_step": t, "relation": a.relation, "group": name, "n_facts": int(x.size),
                         "mean_change": float(x.mean()) if x.size else math.nan,
                         "ci_low": float(np.ravel(lo)[0]), "ci_high": float(np.ravel(hi)[0])})  # fmt: skip
    return rows
