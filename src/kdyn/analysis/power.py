"""Power formulas (docs/metrics.md, "Power: kdyn plan"), at α = 0.05 (two-sided) and 80% power:

- `wilson_halfwidth`: half the Wilson 95% interval of a rate p observed on n items;
- `mdd_paired`: the smallest difference in accuracy between two runs on the same n items that McNemar's
  test detects, from Connor's (1987) sample size n = (z_{α/2}·√ψ + z_β·√(ψ − δ²))² / δ² solved for δ (ψ: the
  discordant share; 0.5 for two independent runs at accuracy 0.5, the worst case);
- `mdd_groups`: the smallest difference between two groups of different items (two-sample z test);
- `n_for_*`: the inverses, the n that reaches a given difference or half-width.

`kdyn.plan` applies them to a config's groups; tests/test_plan.py checks them against scipy and simulations.
"""

from __future__ import annotations

import math

from scipy.stats import norm

Z_ALPHA = float(norm.ppf(0.975))  # two-sided 5%
Z_BETA = float(norm.ppf(0.80))  # 80% power


def wilson_halfwidth(n: int, p: float = 0.5, z: float = Z_ALPHA) -> float:
    """Half the width of the Wilson interval of a rate p observed on n items (NaN for n = 0)."""
    if n <= 0:
        return math.nan
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def mdd_paired(n: int, psi: float = 0.5) -> float:
    """Smallest δ = p10 − p01 McNemar detects on n pairs with discordant share ψ (Connor 1987), α 0.05, power 0.8."""
    if n <= 0:
        return math.nan

    def needed(delta: float) -> float:
        return (Z_ALPHA * math.sqrt(psi) + Z_BETA * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / (delta * delta)

    lo, hi = 1e-6, psi
    if needed(hi) > n:
        return math.nan  # not even the largest possible difference is detectable
    for _ in range(100):  # needed() falls as δ grows: bisect for needed(δ) = n
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if needed(mid) > n else (lo, mid)
    return hi


def mdd_groups(n1: int, n2: int, p: float = 0.5) -> float:
    """Smallest difference between two independent groups' rates a two-sample z test detects (α 0.05, power 0.8)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan
    delta = (Z_ALPHA + Z_BETA) * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return delta if delta <= 1 else math.nan  # two rates cannot differ by more than 1: nothing is detectable


def n_for_paired(effect: float, psi: float = 0.5) -> int:
    return math.ceil((Z_ALPHA * math.sqrt(psi) + Z_BETA * math.sqrt(psi - effect * effect)) ** 2 / effect**2)


def n_for_groups(effect: float, p: float = 0.5) -> int:
    return math.ceil(2 * p * (1 - p) * ((Z_ALPHA + Z_BETA) / effect) ** 2)


def n_for_halfwidth(width: float, p: float = 0.5) -> int:
    n = 1
    while wilson_halfwidth(n, p) > width:
        n *= 2
    lo = n // 2
    while lo + 1 < n:  # the smallest n with half-width ≤ width
        mid = (lo + n) // 2
        lo, n = (lo, mid) if wilson_halfwidth(mid, p) <= width else (mid, n)
    return n
