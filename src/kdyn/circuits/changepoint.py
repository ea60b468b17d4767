"""The formation → optimisation shift: one change point on the entropy and Jaccard-with-previous series.

Model: two constant segments fitted by least squares (a mean shift); the change point is the first
checkpoint of the second segment (ties: the earliest). With fewer than MIN_CHECKPOINTS checkpoints the
answer is null with a reason. Interval: bootstrap over prompts — resample the prompts with replacement
(the same resample at every checkpoint, since the prompts are the same), rebuild every checkpoint's
circuit from the resampled mean scores, recompute the series and its change point; the interval is the
2.5% / 97.5% quantile of those change steps (steps are discrete, so both ends are checkpoint steps).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import select
from kdyn.circuits.evolution import entropy, jaccard
from kdyn.circuits.store import CircuitFile

MIN_CHECKPOINTS = 4
SERIES = ("entropy", "jaccard_edges_prev")


def mean_shift(y: np.ndarray) -> int | None:
    """Index of the first point of the second segment of the best two-segment constant fit (None if n < 3)."""
    if len(y) < 3:
        return None
    sse = [((y[:k] - y[:k].mean()) ** 2).sum() + ((y[k:] - y[k:].mean()) ** 2).sum() for k in range(1, len(y))]
    return 1 + int(np.argmin(sse))


def series(steps: list[int], scores: list[np.ndarray], circuits: list[np.ndarray]) -> dict[str, tuple[list[int], np.ndarray]]:
    """The two series as (steps, values), NaN points dropped."""
    out = {
        "entropy": (steps, np.array([entropy(s, c) for s, c in zip(scores, circuits)])),
        "jaccard_edges_prev": (steps[1:], np.array([jaccard(a, b) for a, b in zip(circuits[1:], circuits[:-1])])),
    }
    return {k: ([s for s, v in zip(st, vals) if np.isfinite(v)], vals[np.isfinite(vals)]) for k, (st, vals) in out.items()}


def change_step(steps: list[int], values: np.ndarray) -> int | None:
    k = mean_shift(values)
    return None if k is None else steps[k]


def change_points(files: list[CircuitFile], cfg: CircuitsConfig) -> dict[str, dict[str, Any]]:
    """{series: {step, ci_low, ci_high, n_boot, reason}} for one relation's checkpoints."""
    files = sorted(files, key=lambda f: f.step)
    steps = [f.step for f in files]

    def empty(reason: str) -> dict[str, dict[str, Any]]:
        return {name: {"step": None, "ci_low": None, "ci_high": None, "n_boot": 0, "reason": reason} for name in SERIES}

    if len(files) < MIN_CHECKPOINTS:
        return empty(f"{len(files)} checkpoint(s) analysed; a change point needs at least {MIN_CHECKPOINTS}")
    if any(f.probe_ids != files[0].probe_ids for f in files):
        return empty("the checkpoints were analysed on different prompts; rerun `kdyn circuits` on all of them")
    graph = files[0].graph()
    observed = series(steps, [f.scores for f in files], [f.circuit for f in files])
    rng = np.random.default_rng([cfg.seed, zlib.crc32(files[0].relation.encode("utf-8"))])
    n = files[0].per_prompt.shape[0]
    boot: dict[str, list[int]] = {name: [] for name in SERIES}
    for _ in range(cfg.bootstrap):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n) / n  # [N] resampled prompt weights
        means = [f.dense(weights @ f.per_prompt) for f in files]
        for name, (st, vals) in series(steps, means, [select(graph, m, cfg) for m in means]).items():
            step = change_step(st, vals)
            if step is not None:
                boot[name].append(step)
    out = {}
    for name in SERIES:
        st, vals = observed[name]
        step = change_step(st, vals)
        b = np.array(boot[name])
        reason = None if step is not None else f"the {name} series has {len(vals)} finite point(s); a change point needs 3"
        out[name] = {"step": step, "ci_low": int(np.quantile(b, 0.025, method="lower")) if b.size else None,
                     "ci_high": int(np.quantile(b, 0.975, method="higher")) if b.size else None,
                     "n_boot": int(b.size), "reason": reason, "steps": st,
                     "values": [float(v) if math.isfinite(v) else None for v in vals]}  # fmt: skip
    return out
