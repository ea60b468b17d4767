"""Statistics for the analysis: bootstrap, Wilson intervals, McNemar, AUROC, Spearman, seed CIs, log-t fits.

Intervals (DESIGN.md, "Uncertainty"; docs/metrics.md, "intervals"): a single rate k/n gets a Wilson
interval, which is not degenerate at 0/n or n/n; differences, ratios and other statistics get a
percentile bootstrap with a fixed seed, so the same inputs give the same numbers. The bootstrap
resamples items, or whole entities (`unit="entity"`: the probes of one entity are correlated), and a
Wilson interval then uses the effective sample size n / deff, with the design effect deff estimated from
the entity bootstrap. A bootstrap interval with fewer than 95% of its replicates defined is undefined.
Resampling is vectorised: one matrix of resample counts (replicates x items) times a matrix of per-item
columns gives every replicate's sums at once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np

from kdyn.errors import KdynError

_CHUNK_CELLS = 4_000_000  # replicates x items per resample block when not cached (32 MB)
_CACHE_CELLS = 16_000_000  # resample counts kept for reuse across one analysis's tables (at most 128 MB)


Unit = Literal["item", "entity"]
MIN_DEFINED = 0.95  # a bootstrap interval needs this share of its replicates defined


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap over items or entities: `replicates` resamples, seeded per group `key`.

    The same key and item count always draw the same resamples (order-independent), so tables computed
    separately for one group (transitions, curves, trajectories) share them; the resample counts are cached
    for that. With `unit="entity"` and `units` (one code per row of `x`) whole entities are resampled; when
    every item is its own entity this draws exactly the item resamples.
    """

    replicates: int = 1000
    seed: int = 0
    level: float = 0.95
    unit: Unit = "item"
    _cache: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict, init=False, compare=False,
                                                           repr=False)  # fmt: skip

    def __post_init__(self) -> None:
        if self.replicates < 1:  # --bootstrap 0 or less: no resamples, so no interval at all
            raise KdynError(f"bootstrap replicates must be at least 1, got {self.replicates} (e.g. --bootstrap 1000)")

    def rng(self, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(key.encode("utf-8"))])

    def _codes(self, n: int, units: np.ndarray | None) -> tuple[np.ndarray | None, int]:
        """Entity code of each row (in order of first appearance) and the number of entities; None per item."""
        if self.unit == "item" or units is None:
            return None, n
        _, first, codes = np.unique(np.asarray(units), return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))  # codes numbered by first appearance: singletons give 0..n-1
        codes = order[codes.ravel()]
        return codes, int(codes.max()) + 1 if n else 0

    def _blocks(self, key: str, n: int, units: np.ndarray | None) -> Iterator[tuple[int, np.ndarray]]:
        """(first replicate, resample counts (replicates in block, n)) blocks for `key`."""
        codes, m = self._codes(n, units)
        cached = self._cache.get((key, n, m))
        if cached is not None:
            yield 0, cached
            return
        keep = self.replicates * n + sum(c.size for c in self._cache.values()) <= _CACHE_CELLS
        rng = self.rng(key)
        block = max(1, _CHUNK_CELLS // max(n, 1))
        parts = []
        for start in range(0, self.replicates, block):
            b = min(block, self.replicates - start)
            idx = rng.integers(0, m, size=(b, m))
            idx += np.arange(b)[:, None] * m
            counts = np.bincount(idx.ravel(), minlength=b * m).reshape(b, m).astype(np.float64)
            if codes is not None:
                counts = counts[:, codes]  # every probe of a drawn entity, as often as the entity was drawn
            if keep:
                parts.append(counts)
            yield start, counts
        if keep:
            self._cache[(key, n, m)] = np.concatenate(parts)

    def _sums(self, x: np.ndarray, key: str, units: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-replicate column sums of `x` (items, m) and the number of items drawn per replicate."""
        n, m = x.shape
        out = np.zeros((self.replicates, m))
        drawn = np.full(self.replicates, float(n))
        if n == 0 or m == 0:
            return out, drawn
        for start, counts in self._blocks(key, n, units):
            out[start : start + len(counts)] = counts @ x
            drawn[start : start + len(counts)] = counts.sum(axis=1)
        return out, drawn

    def sums(self, x: np.ndarray, key: str, units: np.ndarray | None = None) -> np.ndarray:
        """Per-replicate column sums of `x` (items, m) over resampled items: shape (replicates, m)."""
        return self._sums(_2d(x), key, units)[0]

    def means(self, x: np.ndarray, key: str, units: np.ndarray | None = None) -> np.ndarray:
        """Per-replicate column means of a fully observed `x` (items, m): shape (replicates, m)."""
        x = _2d(x)
        if x.shape[0] == 0:
            return np.full((self.replicates, x.shape[1]), np.nan)
        sums, drawn = self._sums(x, key, units)
        return sums / drawn[:, None]  # an entity resample draws a varying number of items

    def nanmeans(self, x: np.ndarray, key: str, units: np.ndarray | None = None) -> np.ndarray:
        """Per-replicate column means ignoring NaN cells of `x` (items, m); NaN where nothing is observed."""
        x = _2d(x)
        seen = np.isfinite(x)
        both = self.sums(np.concatenate([np.where(seen, x, 0.0), seen], axis=1), key, units)
        m = x.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return both[:, :m] / np.where(both[:, m:] > 0, both[:, m:], np.nan)

    def interval(self, replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi, number of defined replicates) along axis 0; the interval is NaN where fewer than 95% of
        the replicates are defined (a statistic undefined in many resamples has no trustworthy interval)."""
        reps = np.asarray(replicates, dtype=np.float64)
        tail = (1.0 - self.level) / 2.0
        lo, hi = nanquantiles(reps, (tail, 1.0 - tail))
        defined = np.isfinite(reps).sum(axis=0)
        ok = defined >= MIN_DEFINED * self.replicates
        return np.where(ok, lo, np.nan)[()], np.where(ok, hi, np.nan)[()], defined[()]

    def ci(self, replicates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval along axis 0 (see `interval`): NaN where under 95% of the replicates are defined."""
        lo, hi, _ = self.interval(replicates)
        return lo, hi

    def ci_reason(self, defined: int, value: float = 0.0, why: str | None = None) -> str | None:
        """Why a bootstrap interval is undefined although its value is (`why`: what makes a replicate undefined),
        or None when it is defined."""
        if not np.isfinite(value) or defined >= MIN_DEFINED * self.replicates:
            return None
        return (f"interval undefined: defined in only {int(defined)} of {self.replicates} bootstrap replicates "
                f"(under {MIN_DEFINED:.0%}{'; ' + why if why else ''})")

    def rate_ci(self, successes: np.ndarray, n: np.ndarray, replicates: np.ndarray | None = None,
                units: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Wilson interval of rates successes / n (arrays over columns); NaN where n = 0.

        Over entities, n becomes the effective n / deff, with the design effect deff = (bootstrap variance of
        the rate) / (binomial variance p(1 − p)/n), kept within [1, Σ m_e² / n] (m_e: items per entity; the
        upper bound is every probe of an entity agreeing). At 0/n and n/n the variance says nothing and deff
        takes that upper bound, so the interval is as wide as one observation per entity allows.
        """
        k = np.asarray(successes, dtype=np.float64)
        n = np.asarray(n, dtype=np.float64)
        codes, _ = self._codes(int(np.asarray(units).shape[0]) if units is not None else 0, units)
        if codes is None or replicates is None:
            return wilson(k, n, self.level)
        sizes = np.bincount(codes).astype(np.float64)
        deff_max = max(1.0, float((sizes**2).sum() / sizes.sum()))
        with np.errstate(invalid="ignore", divide="ignore"):
            p = k / n
            var_srs = p * (1.0 - p) / n
            var_boot = _nanvar(np.asarray(replicates, dtype=np.float64))
            deff = np.where(var_srs > 0, np.clip(var_boot / np.where(var_srs > 0, var_srs, 1.0), 1.0, deff_max),
                            deff_max)  # fmt: skip
            deff = np.where(np.isfinite(deff), deff, deff_max)
            return wilson(k / deff, n / deff, self.level)


def _2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def _nanvar(a: np.ndarray) -> np.ndarray:
    """Variance along axis 0 over finite values (NaN where fewer than two), without numpy's warnings."""
    seen = np.isfinite(a)
    count = seen.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(seen, a, 0.0).sum(axis=0) / count
        return np.where(count > 1, (np.where(seen, a - mean, 0.0) ** 2).sum(axis=0) / (count - 1), np.nan)


def wilson(successes: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of successes / n (elementwise; n may be an effective, non-integer size); NaN at n = 0."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denom
        half = z / denom * np.sqrt(np.maximum(p * (1.0 - p) / n, 0.0) + z * z / (4.0 * n * n))
        ok = n > 0
        # The interval holds p by construction; rounding can put an end on the wrong side of it (0/10 gave 3e-17).
        lo = np.where(ok, np.clip(np.minimum(centre - half, p), 0.0, 1.0), np.nan)
        hi = np.where(ok, np.clip(np.maximum(centre + half, p), 0.0, 1.0), np.nan)
    return lo[()], hi[()]


def nanquantiles(a: np.ndarray, qs: tuple[float, ...]) -> list[np.ndarray]:
    """Quantiles along axis 0 ignoring NaN (numpy's 'linear' method), vectorised over columns, one sort."""
    s = np.sort(np.asarray(a, dtype=np.float64), axis=0)  # NaN sorts last
    count = np.isfinite(s).sum(axis=0)
    last = np.maximum(count - 1, 0)
    out = []
    for q in qs:
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        below = np.take_along_axis(s, lo[None, ...], axis=0)[0]
        above = np.take_along_axis(s, hi[None, ...], axis=0)[0]
        out.append(np.where(count > 0, below + (above - below) * (pos - lo), np.nan)[()])  # [()]: 0-d → scalar
    return out


@dataclass(frozen=True)
class McNemar:
    """Paired test on the same items: b = right in A only, c = right in B only; exact binomial p."""

    n: int
    b: int
    c: int
    statistic: float  # continuity-corrected chi-square, for reference
    p_value: float  # exact two-sided binomial test on the discordant pairs


def mcnemar(a: np.ndarray, b: np.ndarray) -> McNemar:
    """McNemar test between two correctness vectors over the same items (same order)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("mcnemar needs two vectors over the same items")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(int(a.size), only_a, only_b, 0.0, 1.0)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    # exact two-sided binomial test with p = 1/2 (symmetric, so twice the smaller tail)
    p_value = min(1.0, 2.0 * _binomial_tail(min(only_a, only_b), discordant))
    return McNemar(int(a.size), only_a, only_b, float(statistic), p_value)


def _binomial_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), summed in log space so large n does not overflow."""
    log_choose = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in range(k + 1)]
    log_terms = np.array(log_choose) - n * math.log(2)
    top = log_terms.max()
    return float(math.exp(top) * np.exp(log_terms - top).sum())


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve of `score` ranking positives above negatives (ties count half).

    NaN scores are dropped; NaN when either class is empty.
    """
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=bool)
    keep = np.isfinite(score)
    score, label = score[keep], label[keep]
    n_pos = int(label.sum())
    n_neg = int(label.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score[None, :])[0]
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) along the last axis of a 2-D array."""
    a = np.asarray(a, dtype=np.float64)
    rows, cols = a.shape
    order = np.argsort(a, axis=1, kind="stable")
    ordered = np.take_along_axis(a, order, axis=1)
    new = np.ones_like(ordered, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = np.cumsum(new.ravel()) - 1  # tie groups never span rows: each row starts a new one
    size = np.bincount(group)
    start = np.broadcast_to(np.arange(cols), (rows, cols)).ravel()[new.ravel()]
    ranks = np.empty_like(ordered)
    np.put_along_axis(ranks, order, (start + (size + 1) / 2.0)[group].reshape(rows, cols), axis=1)
    return ranks


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rho between a fixed series `x` (T,) and each row of `y` (R, T); NaN for constant rows."""
    x = np.asarray(x, dtype=np.float64)
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    rx = rankdata(x[None, :])[0]
    ry = rankdata(y)
    rx = rx - rx.mean()
    ry = ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum() * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ry @ rx) / np.where(denom > 0, denom, 1.0), np.nan)


def log_fit(t: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit r = a + b log t for each row of `r` (R, m) over finite cells: (slope b, R^2)."""
    logt = np.log(np.asarray(t, dtype=np.float64))
    r = np.atleast_2d(np.asarray(r, dtype=np.float64))
    w = np.isfinite(r)
    y = np.where(w, r, 0.0)
    k = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * logt).sum(axis=1) / k
        my = y.sum(axis=1) / k
        dx = np.where(w, logt - mx[:, None], 0.0)
        dy = np.where(w, y - my[:, None], 0.0)
        sxx = (dx**2).sum(axis=1)
        syy = (dy**2).sum(axis=1)
        sxy = (dx * dy).sum(axis=1)
        slope = sxy / sxx
        r2 = np.where(syy > 0, sxy**2 / (sxx * syy), np.nan)
    bad = (k < 3) | ~(sxx > 0)
    return np.where(bad, np.nan, slope), np.where(bad, np.nan, r2)


def seed_mean_ci(values: np.ndarray, level: float = 0.95,
                 bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:  # fmt: skip
    """Mean over seeds with a Student-t interval; the interval is NaN with fewer than two finite values. `bounds`
    clips the interval to a quantity's range (a rate: (0, 1); with 3 seeds t = 4.3 and the raw interval of a rate
    near 0 or 1 leaves it)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan"), float("nan")
    from scipy import stats as sstats  # imported here: scipy.stats takes a second to import

    half = float(sstats.t.ppf(0.5 + level / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi
