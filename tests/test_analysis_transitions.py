"""Transitions, chance adjustment and FUAR against values worked out by hand; property tests.

The hand-built group (steps 0, 10, 20):
    a: 1 1 0      A(0) = A(10) = A(20) = 0.5
    b: 0 1 1      0→10: F = 1/4 (d), BT = 1/4 (b)
    c: 0 0 1      0→20: F = 2/4 (a, d), BT = 2/4 (b, c)
    d: 1 0 0      10→20: F = 1/4 (a), BT = 1/4 (c)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kdyn.analysis import Bootstrap, Results
from kdyn.analysis.transitions import checkpoint_pairs, transition_tables

GRID = [[1, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]]
BOOT = Bootstrap(replicates=200, seed=0)


def table_for(correct, k=0, kind="new", probe_type="cloze", steps=(0, 10, 20)) -> pd.DataFrame:
    res = Results.from_arrays(correct, steps=list(steps), kind=kind, probe_type=probe_type, k=k)
    return transition_tables(res, BOOT)[0]


def row(table: pd.DataFrame, s: int, t: int, kind: str | None = None) -> pd.Series:
    sel = (table["from_step"] == s) & (table["to_step"] == t)
    if kind is not None:
        sel &= table["kind"] == kind
    assert sel.sum() == 1
    return table[sel].iloc[0]


def test_pairs_are_base_to_each_then_step_to_step_without_duplicates():
    assert checkpoint_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
    table = table_for(GRID)
    assert list(zip(table["from_step"], table["to_step"], table["consecutive"])) == [
        (0, 10, True), (0, 20, False), (10, 20, True)]  # fmt: skip


def test_forgetting_and_backward_transfer_by_hand():
    table = table_for(GRID)
    r = row(table, 0, 10)
    assert (r["n"], r["n_1to0"], r["n_0to1"]) == (4, 1, 1)
    assert r["forgetting"] == 0.25 and r["backward_transfer"] == 0.25
    r = row(table, 0, 20)
    assert (r["n_1to0"], r["n_0to1"]) == (2, 2)
    assert r["forgetting"] == 0.5 and r["backward_transfer"] == 0.5
    assert r["relative_forgetting"] == 1.0  # F / A(0) = 0.5 / 0.5
    assert r["acc_from"] == 0.5 and r["acc_to"] == 0.5 and r["acc_change"] == 0.0
    r = row(table, 10, 20)
    assert (r["n_1to0"], r["n_0to1"]) == (1, 1)


def test_open_questions_have_no_chance_adjustment():
    r = row(table_for(GRID, k=0), 0, 20)
    assert np.isnan(r["forgetting_adj"]) and np.isnan(r["backward_transfer_adj"]) and np.isnan(r["acc_to_adj"])


@pytest.mark.parametrize(
    "k, chance, acc_adj",
    [
        (2, 0.25, 0.0),  # E = (1 − .5)(1 − .5)/1; (2·.5 − 1)/1 = 0
        (4, 0.25 / 3, 1 / 3),  # E = .25/3; (4·.5 − 1)/3
        (5, 0.25 / 4, 0.375),  # E = .25/4; (5·.5 − 1)/4
    ],
)
def test_chance_adjustment_with_k(k, chance, acc_adj):
    r = row(table_for(GRID, k=k, probe_type="mcq"), 0, 20)
    assert r["forgetting_adj"] == pytest.approx(0.5 - chance)
    assert r["backward_transfer_adj"] == pytest.approx(0.5 - chance)
    assert r["acc_to_adj"] == pytest.approx(acc_adj)
    assert r["acc_from_adj"] == pytest.approx(acc_adj)
    assert (r["k_min"], r["k_max"]) == (k, k)


def test_chance_adjustment_is_floored_at_zero():
    # k = 2, base → 10: F = 0.25 and E = 0.25 → 0; A = 0.25 with k = 2 → (0.5 − 1)/1 < 0 → 0
    r = row(table_for(GRID, k=2, probe_type="mcq"), 0, 10)
    assert r["forgetting_adj"] == 0.0
    low = table_for([[1, 1], [0, 0], [0, 0], [0, 0]], k=2, probe_type="mcq", steps=(0, 10))
    assert row(low, 0, 10)["acc_to_adj"] == 0.0


def test_chance_adjustment_uses_each_items_own_k():
    # k = 2 (a), 4 (b, c), 5 (d); each k's items expect E_k = (1 − A_k(s))(1 − A_k(t)) / (k − 1), weighted n_k / n.
    # 0 → 20: a 1→0, b and c 0→1, d 1→0: every stratum has A_k(s) or A_k(t) = 1, so E = 0 and F_adj = F.
    # 0 → 10: only k = 4 expects any: A_4 = 0 → 0.5, E = 2/4 · (1 · 0.5)/3 = 1/12; F = BT = 1/4.
    # at 20, c = 0,1,1,0: mean (k c − 1)/(k − 1) = (−1 + 1 + 1 − 0.25)/4 = 0.1875
    table = table_for(GRID, k=[2, 4, 4, 5], probe_type="mcq")
    r = row(table, 0, 20)
    assert r["forgetting_adj"] == pytest.approx(0.5) and r["backward_transfer_adj"] == pytest.approx(0.5)
    assert r["acc_to_adj"] == pytest.approx(0.1875)
    assert (r["k_min"], r["k_max"]) == (2, 5) and r["adj_reason"] is None
    r = row(table, 0, 10)
    assert r["forgetting_adj"] == pytest.approx(1 / 4 - 1 / 12)
    assert r["backward_transfer_adj"] == pytest.approx(1 / 4 - 1 / 12)


def test_mixed_k_uses_the_per_item_expectation_not_the_pooled_one():
    """Four k = 2 items that flip like coins (1→0, 0→1, 1→1, 0→0) beside four k = 4 items always right.
    Per k: E_2 = (1 − .5)(1 − .5)/1 = .25, E_4 = 0 → E = .5 · .25 = .125 = F, so F_adj = 0: all of it is chance.
    The pooled formula (1 − A(s))(1 − A(t)) · mean 1/(k − 1) = .25² · (1 + 1/3)/2 = .0417 would leave .083."""
    coins = [[1, 0], [0, 1], [1, 1], [0, 0]]
    table = table_for(coins + [[1, 1]] * 4, k=[2] * 4 + [4] * 4, probe_type="mcq", steps=(0, 10))
    r = row(table, 0, 10)
    assert r["forgetting"] == pytest.approx(0.125) and r["backward_transfer"] == pytest.approx(0.125)
    assert r["forgetting_adj"] == pytest.approx(0.0) and r["backward_transfer_adj"] == pytest.approx(0.0)
    # accuracy adjusted per item: (.5 · (2 · .5 − 1)/1 + .5 · (4 · 1 − 1)/3) = .5
    assert r["acc_to_adj"] == pytest.approx(0.5)


def test_a_group_mixing_open_and_mcq_items_says_why_it_is_not_adjusted():
    table = table_for(GRID, k=[0, 4, 4, 4], probe_type="mcq")
    r = row(table, 0, 20)
    assert np.isnan(r["forgetting_adj"]) and np.isnan(r["acc_to_adj"])
    assert "mixes 1 open (k = 0) and 3 multiple-choice" in r["adj_reason"]
    assert "open answers" in row(table_for(GRID, k=0), 0, 20)["adj_reason"]


def test_known_mcq_is_chance_adjusted_over_all_its_items():
    """20 known 4-option items: 15 right at the base (3 of them wrong at 10), 5 wrong (1 of them right at 10).
    Selected group (right at base): A(0) = 1, so E = 0 and F_adj = F = 3/15. Over all 20 items (Harmon et al.):
    A(0) = .75, A(10) = .65, E = .25 · .35 / 3; F = 3/20 → F_adj = .15 − E; BT = 1/20 → BT_adj = .05 − E."""
    correct = [[1, 1]] * 12 + [[1, 0]] * 3 + [[0, 1]] + [[0, 0]] * 4
    table = table_for(correct, k=4, kind="known", probe_type="mcq", steps=(0, 10))
    known = row(table, 0, 10, "known")
    e = 0.25 * 0.35 / 3
    assert known["n"] == 15 and known["forgetting"] == pytest.approx(0.2) and known["forgetting_adj"] == pytest.approx(0.2)
    assert known["n_all_items"] == 20 and known["acc_from_all_items"] == pytest.approx(0.75)
    assert known["forgetting_all_items"] == pytest.approx(0.15)
    assert known["forgetting_adj_all_items"] == pytest.approx(0.15 - e)
    assert known["backward_transfer_adj_all_items"] == pytest.approx(0.05 - e)
    lo, hi = known["forgetting_adj_all_items_lo"], known["forgetting_adj_all_items_hi"]
    assert lo <= known["forgetting_adj_all_items"] <= hi and hi > lo
    apart = row(table, 0, 10, "known_wrong_at_base")
    assert pd.isna(apart["n_all_items"]) and np.isnan(apart["forgetting_adj_all_items"])
    assert pd.isna(row(table_for(correct, kind="known", steps=(0, 10)), 0, 10, "known")["n_all_items"])  # open: none


def test_a_rate_at_n_of_n_gets_a_wilson_interval_not_a_point():
    # 6 of 6 right: the bootstrap gave [1.00–1.00]; Wilson's lower bound is 1 / (1 + z²/6) = 0.6097
    r = row(table_for([[0, 1]] * 6, steps=(0, 10)), 0, 10)
    assert r["acc_to"] == 1.0 and r["acc_to_hi"] == pytest.approx(1.0)
    wilson_lo = 1 / (1 + 1.959964**2 / 6)
    assert r["acc_to_lo"] == pytest.approx(wilson_lo, abs=1e-6)
    assert r["forgetting"] == 0.0 and r["forgetting_lo"] == 0.0  # 0 of 6 forgotten: the mirror image
    assert r["forgetting_hi"] == pytest.approx(1 - wilson_lo, abs=1e-6)


def test_relative_forgetting_is_nan_when_nothing_was_known():
    r = row(table_for([[0, 1], [0, 0]], steps=(0, 10)), 0, 10)
    assert np.isnan(r["relative_forgetting"])
    assert np.isnan(r["relative_forgetting_lo"])


def test_known_probes_wrong_at_base_are_reported_apart():
    correct = [[1, 0], [1, 1], [0, 1], [0, 0]]
    table = table_for(correct, kind="known", steps=(0, 10))
    known = row(table, 0, 10, "known")
    assert known["n"] == 2 and known["forgetting"] == 0.5 and known["acc_from"] == 1.0
    apart = row(table, 0, 10, "known_wrong_at_base")
    assert apart["n"] == 2 and apart["backward_transfer"] == 0.5


def test_fuar_by_hand():
    # cloze: 4 known (base-correct), 1 forgotten by 20; 3 new, 2 acquired by 20; 2 updated, 1 acquired by 20
    # → FUAR(0→20) = 1 / (2 + 1); at 10 nothing is acquired yet → NaN with a reason
    known = [[1, 1, 1]] * 3 + [[1, 1, 0]]
    new = [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
    updated = [[0, 0, 1], [0, 0, 0]]
    res = Results.from_arrays(known + new + updated, steps=[0, 10, 20],
                              kind=["known"] * 4 + ["new"] * 3 + ["updated"] * 2, probe_type="cloze")  # fmt: skip
    _, fuar = transition_tables(res, BOOT)
    final = fuar[fuar["step"] == 20].iloc[0]
    assert (final["n_forgotten_known"], final["n_acquired_new"], final["n_acquired_updated"]) == (1, 2, 1)
    assert final["fuar"] == pytest.approx(1 / 3)
    assert final["fuar_lo"] <= final["fuar"] <= final["fuar_hi"]
    early = fuar[fuar["step"] == 10].iloc[0]
    assert np.isnan(early["fuar"]) and "no new or updated" in early["reason"]


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    correct = rng.random((300, 4)) < 0.5
    a = table_for(correct, steps=(0, 1, 2, 3))
    b = table_for(correct, steps=(0, 1, 2, 3))
    pd.testing.assert_frame_equal(a, b)
    for rate in ("forgetting", "backward_transfer", "acc_to"):
        assert (a[f"{rate}_lo"] <= a[rate] + 1e-12).all() and (a[rate] <= a[f"{rate}_hi"] + 1e-12).all()
        assert (a[f"{rate}_hi"] - a[f"{rate}_lo"] > 0).all()


matrices = st.integers(1, 6).flatmap(
    lambda s: arrays(np.bool_, st.tuples(st.integers(1, 30), st.just(s + 1)))
)


@settings(max_examples=60, deadline=None)
@given(correct=matrices, k=st.sampled_from([0, 2, 3, 4, 5]))
def test_properties_of_transitions(correct, k):
    steps = list(range(0, 10 * correct.shape[1], 10))
    res = Results.from_arrays(correct, steps=steps, kind="new", probe_type="mcq" if k else "qa", k=k)
    table, _ = transition_tables(res, Bootstrap(replicates=20, seed=0))
    for _, r in table.iterrows():
        s, t = steps.index(r["from_step"]), steps.index(r["to_step"])
        crosstab = pd.crosstab(correct[:, s], correct[:, t]).reindex(index=[False, True], columns=[False, True],
                                                                     fill_value=0)  # fmt: skip
        # F and BT are the off-diagonal counts of the 2x2 transition matrix
        assert r["n_1to0"] == crosstab.loc[True, False] and r["n_0to1"] == crosstab.loc[False, True]
        assert r["forgetting"] == pytest.approx(crosstab.loc[True, False] / len(correct))
        assert r["backward_transfer"] == pytest.approx(crosstab.loc[False, True] / len(correct))
        # A(t) − A(s) = BT − F
        assert r["acc_to"] - r["acc_from"] == pytest.approx(r["backward_transfer"] - r["forgetting"])
        rates = ["acc_from", "acc_to", "forgetting", "backward_transfer", "relative_forgetting",
                 "forgetting_adj", "backward_transfer_adj", "acc_to_adj", "acc_from_adj"]  # fmt: skip
        for name in rates:
            v = r[name]
            assert np.isnan(v) or -1e-12 <= v <= 1 + 1e-12, (name, v)
            lo, hi = r.get(f"{name}_lo", np.nan), r.get(f"{name}_hi", np.nan)
            assert np.isnan(lo) or (-1e-12 <= lo <= hi <= 1 + 1e-12)
        if k == 0:
            assert np.isnan(r["forgetting_adj"])
        else:
            assert r["forgetting_adj"] <= r["forgetting"] + 1e-12


def test_chance_adjusted_rates_at_the_boundary_are_not_a_point():
    # 6 of 6 four-option items right throughout: F = 0, E = 0, A = 1. F_adj's interval is F's Wilson interval less E,
    # adjusted accuracy's the transform (4A − 1)/3 of A's; the bootstrap gave [0.00–0.00] and [1.00–1.00]
    r = row(table_for([[1, 1]] * 6, k=4, probe_type="mcq", steps=(0, 10)), 0, 10)
    wilson_lo = 1 / (1 + 1.959964**2 / 6)
    assert r["forgetting_adj"] == 0.0 and r["forgetting_adj_lo"] == 0.0
    assert r["forgetting_adj_hi"] == pytest.approx(1 - wilson_lo, abs=1e-6)
    assert r["acc_to_adj"] == 1.0 and r["acc_to_adj_lo"] == pytest.approx((4 * wilson_lo - 1) / 3, abs=1e-6)
