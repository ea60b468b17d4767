"""Loss vs knowledge and step-level (Chang et al.) metrics against values worked out by hand.

Group of four items over steps 0, 10, 20, 30, 40:
    1: 0 1 1 1 1
    2: 0 0 1 1 0        A = 0, .25, .75, .5, .25
    3: 0 0 1 0 0
    4: 0 0 0 0 0
train_log: (5, 4.0) (10, 3.0) | (15, 2.0) (20, 2.0) | (25, 1.0) (30, 1.0) | (35, 0.5) (40, 0.9)
    → loss per checkpoint NaN, 3.5, 2.0, 1.0, 0.7 (mean since the previous checkpoint; NaN at the base)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from kdyn.analysis import Bootstrap, Results
from kdyn.analysis.load import train_loss
from kdyn.analysis.loss_knowledge import curves_table, loss_knowledge_table
from kdyn.analysis.stats import auroc
from kdyn.analysis.stepwise import stepwise_tables
from kdyn.io import write_parquet

STEPS = [0, 10, 20, 30, 40]
CORRECT = [[0, 1, 1, 1, 1], [0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
BOOT = Bootstrap(replicates=200, seed=0)


def loss_curve(tmp_path) -> np.ndarray:
    path = tmp_path / "train_log.parquet"
    write_parquet(path, pa.table({"step": [5, 10, 15, 20, 25, 30, 35, 40],
                                  "loss": [4.0, 3.0, 2.0, 2.0, 1.0, 1.0, 0.5, 0.9]}))  # fmt: skip
    return train_loss(path, np.array(STEPS), [])


def test_loss_per_checkpoint_is_the_mean_since_the_previous_checkpoint(tmp_path):
    loss = loss_curve(tmp_path)
    assert np.isnan(loss[0])
    assert loss[1:] == pytest.approx([3.5, 2.0, 1.0, 0.7])


def tables(tmp_path, nll=None):
    res = Results.from_arrays(CORRECT, steps=STEPS, kind="new", probe_type="cloze", fact_id=["f1", "f2", "f3", "f4"],
                              loss=loss_curve(tmp_path), nll=nll)  # fmt: skip
    curves, cache = curves_table(res, BOOT)
    return curves, loss_knowledge_table(res, cache, BOOT)


def test_loss_vs_knowledge_by_hand(tmp_path):
    curves, lk = tables(tmp_path)
    assert list(curves["acc"]) == [0, 0.25, 0.75, 0.5, 0.25]
    r = lk.iloc[0]
    assert r["loss_source"] == "train_loss" and r["n_checkpoints"] == 4
    # ranks of −loss over steps 10..40: 1 2 3 4; of A (.25 .75 .5 .25): 1.5 4 3 1.5 → rho = −0.5 / sqrt(5 · 4.5)
    assert r["spearman"] == pytest.approx(-0.5 / np.sqrt(22.5))
    # with 4 items, 15 of 200 resamples have the same accuracy at every checkpoint with a loss (rho undefined
    # there): under 95% defined, so the interval is undefined with the count, not a percentile of the rest
    assert r["spearman_n_boot"] == 185 and np.isnan(r["spearman_lo"]) and np.isnan(r["spearman_hi"])
    assert "185 of 200 bootstrap replicates" in r["spearman_ci_reason"]
    # loss fell at every step; accuracy fell 20 → 30 and 30 → 40
    assert r["n_loss_fell_acc_fell"] == 2 and list(r["loss_fell_acc_fell_steps"]) == [30, 40]
    assert r["loss_optimal_step"] == 40 and r["knowledge_optimal_step"] == 20
    assert r["acc_at_loss_optimal"] == 0.25 and r["acc_at_knowledge_optimal"] == 0.75
    assert r["acc_lost_by_loss_stopping"] == pytest.approx(0.5)
    assert r["reason"] is None


def test_auroc_of_fact_nll_by_hand(tmp_path):
    nll = np.full((4, 5), 1.0)
    nll[:, 2] = [0.5, 1.0, 2.0, 0.8]  # correct: 1 1 1 0 → P(nll_right < nll_wrong) = 1/3
    curves, lk = tables(tmp_path, nll=nll)
    assert curves.loc[2, "auroc_nll"] == pytest.approx(1 / 3)
    assert np.isnan(curves.loc[0, "auroc_nll"]) and "one class" in curves.loc[0, "auroc_reason"]
    assert curves.loc[2, "fact_nll"] == pytest.approx(np.mean([0.5, 1.0, 2.0, 0.8]))
    # mean fact NLL: 1, 1, 1.075, 1, 1 → ranks of −NLL 3.5 3.5 1 3.5 3.5; of A (0 .25 .75 .5 .25): 1 2.5 5 4 2.5
    # → rho = −5 / sqrt(5 · 9.5)
    assert lk.iloc[0]["spearman_fact_nll"] == pytest.approx(-5 / np.sqrt(47.5))


def test_auroc_without_fact_loss_is_nan_with_a_reason(tmp_path):
    curves, _ = tables(tmp_path)
    assert curves["auroc_nll"].isna().all()
    assert "fact_loss" in curves.loc[1, "auroc_reason"]


def test_auroc_ties_and_one_class():
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    assert np.isnan(auroc([1, 2], [1, 1]))


def test_loss_curve_falls_back_to_fact_nll_and_explains_too_few_points():
    res = Results.from_arrays([[0, 1], [0, 0]], steps=[0, 10], kind="new", probe_type="qa", fact_id=["a", "b"],
                              nll=np.array([[3.0, 1.0], [3.0, 2.0]]))  # fmt: skip
    curves, cache = curves_table(res, BOOT)
    r = loss_knowledge_table(res, cache, BOOT).iloc[0]
    assert r["loss_source"] == "fact_nll" and r["loss_optimal_step"] == 10
    assert np.isnan(r["spearman"]) and "fewer than 3" in r["reason"]


# Step-level: steps 0, 10, 20, 30, 60, 100; epochs step/100 (step cadence); peak window 50 → 10, 20, 30.
# item x: ℓ = −10 −6 −4 −5 −7 −8 → peak −4 at 20, effectivity 6, R(10) = 5/6, R(40) = 3/6, R(80) = 2/6
# item y: ℓ = −5 −6 −7 −8 −9 −9  → peak −6 at 10, effectivity −1 (not gained; no retainability)
STEP_STEPS = [0, 10, 20, 30, 60, 100]
ELL = np.array([[-10, -6, -4, -5, -7, -8], [-5, -6, -7, -8, -9, -9]], dtype=float)


def step_results() -> Results:
    return Results.from_arrays(np.zeros_like(ELL, dtype=bool), steps=STEP_STEPS, kind="new", probe_type="cloze",
                               score=ELL, epochs=np.array(STEP_STEPS) / 100)  # fmt: skip


def test_effectivity_retainability_and_decay_by_hand():
    table, curve, notes = stepwise_tables(step_results(), BOOT)
    assert notes == []
    r = table.iloc[0]
    assert r["effectivity"] == pytest.approx((6 - 1) / 2) and r["n_gained"] == 1
    assert list(curve["offset"]) == [10, 40, 80]
    assert list(curve["retainability"]) == pytest.approx([5 / 6, 3 / 6, 2 / 6])
    slope, intercept = np.polyfit(np.log([10, 40, 80]), [5 / 6, 3 / 6, 2 / 6], 1)
    assert r["decay"] == pytest.approx(-slope)
    fitted = intercept + slope * np.log([10, 40, 80])
    resid = np.array([5 / 6, 3 / 6, 2 / 6]) - fitted
    r2 = 1 - (resid**2).sum() / ((np.array([5 / 6, 3 / 6, 2 / 6]) - 0.5555555555555556) ** 2).sum()
    assert r["decay_r2"] == pytest.approx(r2)
    assert r["effectivity_lo"] <= r["effectivity"] <= r["effectivity_hi"]


def test_step_level_needs_step_cadence():
    res = step_results()
    res.epochs = np.arange(len(STEP_STEPS), dtype=float)  # every checkpoint closes an epoch
    table, curve, notes = stepwise_tables(res, BOOT)
    assert table.empty and curve.empty and "epoch ends only" in notes[0]


def test_step_level_rejects_an_unknown_injection_step():
    from kdyn.errors import KdynError

    with pytest.raises(KdynError, match="injection step 15 is not a checkpoint"):
        stepwise_tables(step_results(), BOOT, injection_steps=[15])
