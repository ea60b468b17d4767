"""Statistics: bootstrap determinism and coverage, quantiles, McNemar, Spearman, log fits, seed intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sstats

from kdyn.analysis.stats import Bootstrap, log_fit, mcnemar, nanquantiles, seed_mean_ci, spearman_rows


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
