"""The formation → optimisation shift: is there one change point in the entropy / Jaccard-with-previous series?

Model: two straight lines, each fitted by least squares to its own segment of at least 2 points (x = the
training step), against one straight line through the whole series. A steady trend is therefore no change
point; a jump or a bend is. The change point is the first checkpoint of the second segment of the best
split (ties: the earliest).

Test (likelihood ratio, Monte Carlo calibrated): R = 1 − SSE_two / SSE_one, with SSE_two the best split's.
For Gaussian noise around one line, R does not depend on the line or the noise scale, so its null
distribution for the series' x values is simulated once from NULL_DRAWS standard normal series (seeded);
p = (1 + #{R_null ≥ R}) / (1 + NULL_DRAWS). A change point is reported when p < LEVEL (0.05), else "no change
point". A series that one line fits exactly has none (p = 1). The test needs MIN_POINTS finite points (two
lines of 2 points leave no residual on 4) and at least MIN_CHECKPOINTS checkpoints; fewer: "not tested".

Interval, for a reported change point only: bootstrap over prompts — resample the prompts with replacement
(the same resample at every checkpoint, since the prompts are the same), rebuild every checkpoint's circuit
from the resampled mean scores, recompute the series and its best split; the interval is the 2.5% / 97.5%
quantile of those change steps (steps are discrete, so both ends are checkpoint steps).
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import select
from kdyn.circuits.evolution import entropy, jaccard
from kdyn.circuits.store import CircuitFile, mean_scores

MIN_CHECKPOINTS = 5
MIN_POINTS = 5
MIN_SEGMENT = 2
LEVEL = 0.05
NULL_DRAWS = 9999
SERIES = ("entropy", "jaccard_edges_prev")
LABELS = {"entropy": "entropy", "jaccard_edges_prev": "Jaccard-with-previous"}


def _residual_maker(x: np.ndarray) -> np.ndarray:
    """[n, n]: I − H for the least-squares line through points x (y' M y is the line's SSE)."""
    X = np.stack([np.ones_like(x), x], axis=1)
    return np.eye(len(x)) - X @ np.linalg.pinv(X)


@lru_cache(maxsize=64)
def _makers(x: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(one line [n, n], two lines for each split k = MIN_SEGMENT .. n − MIN_SEGMENT [K, n, n]); x is
    standardised first (large steps would make the design ill-conditioned)."""
    xs = np.asarray(x, dtype=np.float64)
    xs = (xs - xs.mean()) / (xs.std() or 1.0)
    n = len(xs)
    two = []
    for k in range(MIN_SEGMENT, n - MIN_SEGMENT + 1):
        m = np.zeros((n, n))
        m[:k, :k], m[k:, k:] = _residual_maker(xs[:k]), _residual_maker(xs[k:])
        two.append(m)
    return _residual_maker(xs), np.stack(two)


def _fit(x: tuple[float, ...], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y [D, n] → (SSE of one line [D], SSE of two lines per split [D, K])."""
    one, two = _makers(x)
    return ((y @ one) * y).sum(1), ((y[None] @ two) * y[None]).sum(2).T


def best_split(steps: list[int], values: np.ndarray) -> tuple[int | None, float]:
    """(index of the first point of the second segment, R = 1 − SSE_two / SSE_one); (None, NaN) when there
    are fewer than MIN_POINTS points, (None, 0) when one line fits exactly."""
    if len(values) < MIN_POINTS:
        return None, math.nan
    y = np.asarray(values, dtype=np.float64)[None, :]
    sse_one, sse_two = _fit(tuple(float(s) for s in steps), y)
    if sse_one[0] <= 1e-12 * max(1.0, float((y**2).sum())):
        return None, 0.0
    k = int(np.argmin(sse_two[0]))
    return MIN_SEGMENT + k, float(1.0 - sse_two[0, k] / sse_one[0])


@lru_cache(maxsize=64)
def _null(x: tuple[float, ...], seed: int) -> np.ndarray:
    """[NULL_DRAWS] sorted R of standard normal series at x (no change point)."""
    z = np.random.default_rng([seed, len(x), 0x6E756C6C]).standard_normal((NULL_DRAWS, len(x)))
    sse_one, sse_two = _fit(x, z)
    return np.sort(1.0 - sse_two.min(1) / sse_one)


def p_value(steps: list[int], r: float, seed: int) -> float:
    """Monte Carlo p of R against one line with Gaussian noise (1.0 when one line fits exactly)."""
    if r <= 0:
        return 1.0
    null = _null(tuple(float(s) for s in steps), seed)
    exceed = null.size - int(np.searchsorted(null, r, side="left"))  # #{R_null >= r}
    return (1 + exceed) / (1 + null.size)


def series(steps: list[int], scores: list[np.ndarray], circuits: list[np.ndarray]) -> dict[str, tuple[list[int], np.ndarray]]:
    """The two series as (steps, values), NaN points dropped."""
    out = {
        "entropy": (steps, np.array([entropy(s, c) for s, c in zip(scores, circuits)])),
        "jaccard_edges_prev": (steps[1:], np.array([jaccard(a, b) for a, b in zip(circuits[1:], circuits[:-1])])),
    }
    return {k: ([s for s, v in zip(st, vals) if np.isfinite(v)], vals[np.isfinite(vals)]) for k, (st, vals) in out.items()}


def change_step(steps: list[int], values: np.ndarray) -> int | None:
    k, _ = best_split(steps, values)
    return None if k is None else steps[k]


def assess(name: str, steps: list[int], values: np.ndarray, seed: int) -> dict[str, Any]:
    """{status, step, p_value, statistic, reason} of one series: "change point", "none" or "not tested"."""
    label = LABELS[name]
    if len(values) < MIN_POINTS:
        reason = f"not tested: the {label} series has {len(values)} finite point(s), needs ≥ {MIN_POINTS}"
        return {"status": "not tested", "step": None, "p_value": None, "statistic": None, "reason": reason}
    k, r = best_split(steps, values)
    p = p_value(steps, r, seed)
    if k is None or p >= LEVEL:
        why = "one straight line fits it exactly" if k is None else f"two lines fit no better than one, p = {p:.3g}"
        why += f" ≥ {LEVEL}" if k is not None else ""
        return {"status": "none", "step": None, "p_value": p, "statistic": r, "reason": f"no change point: {why}"}
    return {"status": "change point", "step": steps[k], "p_value": p, "statistic": r, "reason": None}


def change_points(files: list[CircuitFile], cfg: CircuitsConfig) -> dict[str, dict[str, Any]]:
    """{series: {status, step, ci_low, ci_high, n_boot, p_value, statistic, level, reason, steps, values}}
    for one relation's checkpoints."""
    files = sorted(files, key=lambda f: f.step)
    steps = [f.step for f in files]
    blank = {"status": "not tested", "step": None, "ci_low": None, "ci_high": None, "n_boot": 0, "p_value": None,
             "statistic": None, "level": LEVEL, "null_draws": NULL_DRAWS}  # fmt: skip
    if len(files) < MIN_CHECKPOINTS:
        reason = f"not tested: {len(files)} checkpoint(s), needs ≥ {MIN_CHECKPOINTS}"
        return {name: blank | {"reason": reason} for name in SERIES}
    if any(f.probe_ids != files[0].probe_ids for f in files):
        reason = "not tested: the checkpoints were analysed on different prompts; rerun `kdyn circuits` on all of them"
        return {name: blank | {"reason": reason} for name in SERIES}
    graph = files[0].graph()
    observed = series(steps, [f.scores for f in files], [f.circuit for f in files])
    out = {}
    for name in SERIES:
        st, vals = observed[name]
        out[name] = blank | assess(name, st, vals, cfg.seed) | {"steps": st, "values": [float(v) for v in vals]}
    found = [name for name in SERIES if out[name]["status"] == "change point"]
    if not found:
        return out
    rng = np.random.default_rng([cfg.seed, zlib.crc32(files[0].relation.encode("utf-8"))])
    n = files[0].per_prompt.shape[0]
    boot: dict[str, list[int]] = {name: [] for name in found}
    for _ in range(cfg.bootstrap):
        weights = np.bincount(rng.integers(0, n, size=n), minlength=n) / n  # [N] resampled prompt weights
        means = [f.dense(mean_scores(f.per_prompt, weights)) for f in files]
        resampled = series(steps, means, [select(graph, m, cfg) for m in means])
        for name in found:
            step = change_step(*resampled[name])
            if step is not None:
                boot[name].append(step)
    for name in found:
        b = np.array(boot[name])
        out[name] |= {"ci_low": int(np.quantile(b, 0.025, method="lower")) if b.size else None,
                      "ci_high": int(np.quantile(b, 0.975, method="higher")) if b.size else None,
                      "n_boot": int(b.size)}  # fmt: skip
    return out
