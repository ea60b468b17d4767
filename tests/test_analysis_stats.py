"""Statistics: bootstrap determinism and coverage, quantiles, McNemar, Spearman, log fits, seed intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sstats

from kdyn.analysis.stats import Bootstrap, log_fit, mcnemar, nanquantiles, seed_mean_ci, spearman_rows, wilson


def test_bootstrap_is_deterministic_per_key_and_seed():
    x = (np.random.default_rng(0).random((50, 3)) < 0.4).astype(float)
    a = Bootstrap(replicates=100, seed=0).means(x, "new/cloze")
    b = Bootstrap(replicates=100, seed=0).means(x, "new/cloze")
    c = Bootstrap(replicates=100, seed=1).means(x, "new/cloze")
    d = Bootstrap(replicates=100, seed=0).means(x, "new/qa")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_bootstrap_means_resample_items_with_replacement():
    x = np.arange(10, dtype=float)[:, None]
    boot = Bootstrap(replicates=2000, seed=3)
    means = boot.means(x, "k")
    assert means.shape == (2000, 1)
    assert means.mean() == pytest.approx(4.5, abs=0.05)
    assert means.std() == pytest.approx(x.std() / np.sqrt(10), rel=0.1)  # the standard error of the mean
    lo, hi = boot.ci(means)
    assert lo[0] < 4.5 < hi[0]


def test_bootstrap_chunks_and_cache_give_the_same_resamples(monkeypatch):
    from kdyn.analysis import stats

    x = (np.random.default_rng(0).random((40, 2)) < 0.5).astype(float)
    whole = Bootstrap(replicates=64).means(x, "g")
    monkeypatch.setattr(stats, "_CHUNK_CELLS", 40 * 5)  # blocks of 5 replicates
    monkeypatch.setattr(stats, "_CACHE_CELLS", 0)  # nothing cached
    assert np.array_equal(Bootstrap(replicates=64).means(x, "g"), whole)


def test_nanmeans_ignore_missing_cells():
    x = np.array([[1.0, np.nan], [3.0, np.nan]])
    m = Bootstrap(replicates=50).nanmeans(x, "k")
    assert np.all((m[:, 0] >= 1) & (m[:, 0] <= 3)) and np.isnan(m[:, 1]).all()


def test_nanquantiles_match_numpy():
    a = np.random.default_rng(2).normal(size=(500, 6))
    a[np.random.default_rng(3).random(a.shape) < 0.2] = np.nan
    a[:, 4] = np.nan
    lo, hi = nanquantiles(a, (0.025, 0.975))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanpercentile(a, [2.5, 97.5], axis=0)
    np.testing.assert_allclose(lo, ref[0], equal_nan=True)
    np.testing.assert_allclose(hi, ref[1], equal_nan=True)


def test_mcnemar_by_hand():
    # a right only on 8 items, b right only on 2 → exact two-sided binomial p = 2 · P(X <= 2 | 10, .5) = 112/1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    t = mcnemar(a, b)
    assert (t.n, t.b, t.c) == (20, 8, 2)
    assert t.p_value == pytest.approx(112 / 1024)
    assert t.statistic == pytest.approx((abs(8 - 2) - 1) ** 2 / 10)
    same = mcnemar(a, a)
    assert (same.b, same.c, same.p_value) == (0, 0, 1.0)


def test_spearman_rows_match_scipy():
    x = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    y = np.random.default_rng(0).normal(size=(4, 5))
    ours = spearman_rows(x, y)
    for row, value in zip(y, ours):
        assert value == pytest.approx(sstats.spearmanr(x, row).statistic)
    assert np.isnan(spearman_rows(x, np.ones((1, 5)))[0])


def test_log_fit_recovers_a_known_slope():
    t = np.array([1.0, 10.0, 100.0, 1000.0])
    r = 1.0 - 0.1 * np.log(t)
    slope, r2 = log_fit(t, np.stack([r, r + np.array([0.01, -0.01, 0.01, -0.01])]))
    assert slope[0] == pytest.approx(-0.1) and r2[0] == pytest.approx(1.0)
    assert r2[1] < 1.0
    slope, r2 = log_fit(t[:2], r[None, :2])
    assert np.isnan(slope[0])  # fewer than 3 points


def test_seed_mean_ci():
    mean, lo, hi = seed_mean_ci(np.array([0.2, 0.4, 0.6]))
    half = sstats.t.ppf(0.975, 2) * 0.2 / np.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((0.4, 0.4 - half, 0.4 + half))
    mean, lo, hi = seed_mean_ci(np.array([0.3]))
    assert mean == 0.3 and np.isnan(lo) and np.isnan(hi)


def test_seed_mean_ci_clips_a_rate_to_its_range():
    """Three seeds of a rate near 1: the raw t interval leaves [0, 1]; clipped, the mean is untouched."""
    values = np.array([0.77, 0.97, 0.90])
    _, raw_lo, raw_hi = seed_mean_ci(values)
    mean, lo, hi = seed_mean_ci(values, bounds=(0.0, 1.0))
    assert raw_hi > 1.0 and hi == 1.0 and lo == pytest.approx(raw_lo) and mean == pytest.approx(values.mean())


def test_wilson_interval_by_hand_and_at_the_boundary():
    z = 1.959963984540054
    lo, hi = wilson(np.array([3, 0, 6]), np.array([6, 6, 6]))
    # 3/6: (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)
    centre, half = (0.5 + z * z / 12) / (1 + z * z / 6), z / (1 + z * z / 6) * np.sqrt(0.25 / 6 + z * z / 144)
    assert (lo[0], hi[0]) == pytest.approx((centre - half, centre + half))
    assert lo[1] == 0.0 and hi[1] == pytest.approx(1 - 1 / (1 + z * z / 6))  # 0/6 is not [0, 0]
    assert lo[2] == pytest.approx(1 / (1 + z * z / 6)) and hi[2] == pytest.approx(1.0)  # 6/6 is not [1, 1]
    lo, hi = wilson(np.array([0]), np.array([0]))
    assert np.isnan(lo[0]) and np.isnan(hi[0])


def test_wilson_interval_holds_its_estimate_at_every_size():
    n = np.arange(1, 400)
    for k in (np.zeros_like(n), n // 3, n):
        lo, hi = wilson(k, n)
        assert np.all(lo <= k / n) and np.all(k / n <= hi)  # 0/10 gave lo = 2.8e-17 > 0, and a report figure failed
    assert np.all(wilson(np.zeros_like(n), n)[0] == 0.0) and np.all(wilson(n, n)[1] == 1.0)


def test_bootstrap_interval_is_undefined_when_under_95_percent_of_replicates_are():
    boot = Bootstrap(replicates=100)
    reps = np.full((100, 2), 0.83)
    reps[:31, 0] = np.nan  # 69 of 100 defined, all one value: the interval was [0.83–0.83]
    reps[:3, 1] = np.nan  # 97 defined: fine
    lo, hi, defined = boot.interval(reps)
    assert list(defined) == [69, 97]
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] == hi[1] == pytest.approx(0.83)
    assert "69 of 100 bootstrap replicates" in boot.ci_reason(69, 0.83) and boot.ci_reason(97, 0.83) is None
    assert np.isnan(boot.ci(reps)[0][0])


def test_entity_bootstrap_resamples_whole_entities():
    # 10 entities x 5 probes; within an entity the probes agree (right for entities 0-3)
    units = np.repeat(np.arange(10), 5)
    x = (units < 4).astype(float)
    by_item = Bootstrap(replicates=2000, seed=1).means(x, "g", units)  # unit "item": units are ignored
    by_entity = Bootstrap(replicates=2000, seed=1, unit="entity").means(x, "g", units)
    assert by_item.std() == pytest.approx(np.sqrt(0.24 / 50), rel=0.1)
    assert by_entity.std() == pytest.approx(np.sqrt(0.24 / 10), rel=0.1)  # 10 independent units, not 50
    # each replicate is a mixture of whole entities: the right fraction is a multiple of 1/10
    assert np.allclose(np.round(by_entity * 10), by_entity * 10)
    # every item its own entity: exactly the item resamples
    singles = Bootstrap(replicates=200, seed=1, unit="entity").means(x, "g", np.arange(50))
    assert np.array_equal(singles, Bootstrap(replicates=200, seed=1).means(x, "g"))


def test_rate_ci_over_entities_uses_the_design_effect():
    units = np.repeat(np.arange(10), 5)
    x = (units < 4).astype(float)
    boot = Bootstrap(replicates=2000, seed=1, unit="entity")
    reps = boot.means(x, "g", units)
    lo, hi = boot.rate_ci(np.array([20]), np.array([50]), reps, units)
    ref_lo, ref_hi = wilson(np.array([4]), np.array([10]))  # probes of an entity agree: deff = 5, n_eff = 10
    assert lo[0] == pytest.approx(ref_lo[0], abs=0.03) and hi[0] == pytest.approx(ref_hi[0], abs=0.03)
    plain_lo, _ = wilson(np.array([20]), np.array([50]))
    assert lo[0] < plain_lo[0]
    # at 50 of 50 nothing estimates deff: the bound (mean entity size 5) is used, as if one probe per entity
    lo, hi = boot.rate_ci(np.array([50]), np.array([50]), np.ones((2000, 1)), units)
    assert lo[0] == pytest.approx(wilson(np.array([10]), np.array([10]))[0][0])
