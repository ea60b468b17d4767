"""Per-item trajectories, consolidation and per-epoch counts against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kdyn.analysis import Bootstrap, Results
from kdyn.analysis.epochs import epoch_counts
from kdyn.analysis.trajectories import Trajectories, consolidation_table, trajectory_table

STEPS = [0, 10, 20, 30]
# pattern: (first acquired step, windows, flips, consolidated)
CASES = {
    "0000": (None, [], 0, None),  # never acquired
    "0001": (30, [(30, 30)], 1, True),  # acquired at the last checkpoint: consolidated by definition
    "1111": (0, [(0, 30)], 0, True),  # correct at step 0 and kept
    "1100": (0, [(0, 10)], 1, False),  # correct at step 0, then lost
    "0101": (10, [(10, 10), (30, 30)], 3, False),
    "0110": (10, [(10, 20)], 2, False),
    "0111": (10, [(10, 30)], 1, True),
    "1011": (0, [(0, 0), (20, 30)], 2, False),
}


def results() -> Results:
    correct = [[ch == "1" for ch in pattern] for pattern in CASES]
    return Results.from_arrays(correct, steps=STEPS, item_ids=list(CASES), kind="new", probe_type="cloze")


def test_trajectory_table_by_hand():
    res = results()
    table = trajectory_table(res, Trajectories(res.correct)).to_pylist()
    assert [r["probe_id"] for r in table] == list(CASES)
    for r, (pattern, (first, windows, flips, consolidated)) in zip(table, CASES.items()):
        assert r["first_acquired_step"] == first, pattern
        assert [(w["start_step"], w["end_step"]) for w in r["windows"]] == windows, pattern
        assert r["n_windows"] == len(windows)
        assert r["flips"] == flips, pattern
        assert r["consolidated"] == consolidated, pattern
        assert r["followed"] == (None if first is None else first < STEPS[-1]), pattern
        assert r["final_correct"] == (pattern[-1] == "1")
        assert r["correct_at_base"] == (pattern[0] == "1")
        assert r["n_correct"] == pattern.count("1")


def test_consolidation_rate_by_hand():
    res = results()
    table = consolidation_table(res, Trajectories(res.correct), Bootstrap(replicates=200))
    r = table.iloc[0]
    # ever acquired: every pattern but 0000 (7); 0001 is first right at the last checkpoint, so nothing shows
    # whether it is kept: the rate is over the 6 others, of which 1111 and 0111 stayed (2)
    assert (r["n"], r["n_ever_acquired"], r["n_never_acquired"], r["n_consolidated"]) == (8, 7, 1, 2)
    assert (r["n_acquired_at_last"], r["n_followed"]) == (1, 6)
    assert r["n_acquired_in_training"] == 4  # wrong at base, acquired later: 0001, 0101, 0110, 0111
    assert r["consolidation_rate"] == pytest.approx(2 / 6)
    assert r["consolidation_rate_lo"] <= 2 / 6 <= r["consolidation_rate_hi"]
    assert r["mean_flips"] == pytest.approx(np.mean([c[2] for c in CASES.values()]))
    assert r["final_acc"] == pytest.approx(5 / 8)
    assert r["reason"] is None


def test_consolidation_rate_is_nan_with_a_reason_when_nothing_was_acquired():
    res = Results.from_arrays([[0, 0, 0], [0, 0, 0]], kind="new", probe_type="qa")
    r = consolidation_table(res, Trajectories(res.correct), Bootstrap(replicates=50)).iloc[0]
    assert np.isnan(r["consolidation_rate"]) and "ever correct" in r["reason"]


def test_consolidation_waits_for_a_later_checkpoint():
    """Items first right at the last checkpoint are not counted as consolidated (they cannot show it yet)."""
    res = Results.from_arrays([[0, 1, 1], [0, 1, 0], [0, 0, 1], [0, 0, 1]], kind="new", probe_type="cloze")
    r = consolidation_table(res, Trajectories(res.correct), Bootstrap(replicates=50)).iloc[0]
    assert (r["n_ever_acquired"], r["n_followed"], r["n_consolidated"]) == (4, 2, 1)
    assert r["consolidation_rate"] == 0.5  # was 3 / 4, counting the two acquired at the last checkpoint as kept
    only_last = Results.from_arrays([[0, 1], [0, 0]], kind="new", probe_type="qa")
    r = consolidation_table(only_last, Trajectories(only_last.correct), Bootstrap(replicates=50)).iloc[0]
    assert np.isnan(r["consolidation_rate"]) and "last checkpoint" in r["reason"]


def test_probe_level_epoch_counts_use_epoch_checkpoints_only():
    # steps 0, 5, 10, 15, 20 with epochs 0, .5, 1, 1.5, 2 → epoch checkpoints 0, 10, 20
    correct = [[0, 1, 1, 0, 0],  # epoch 1: acquired; epoch 2: forgotten
               [1, 0, 1, 1, 1],  # retained, retained (the dip at step 5 is between epochs)
               [0, 0, 0, 1, 1],  # epoch 2: acquired
               [1, 1, 0, 0, 1]]  # epoch 1: forgotten; epoch 2: acquired
    res = Results.from_arrays(correct, steps=[0, 5, 10, 15, 20], kind="new", probe_type="cloze",
                              epochs=np.array([0, 0.5, 1, 1.5, 2]))  # fmt: skip
    assert list(res.epoch_indices()) == [0, 2, 4]
    table, _ = epoch_counts(res)
    probe = table[table["level"] == "probe"]
    assert list(probe["step"]) == [0, 10, 20]
    assert list(probe["n_learned"]) == [2, 2, 3]
    e1, e2 = probe.iloc[1], probe.iloc[2]
    assert (e1["n_acquired"], e1["n_retained"], e1["n_forgotten"]) == (1, 1, 1)
    assert (e2["n_acquired"], e2["n_retained"], e2["n_forgotten"]) == (2, 1, 1)
    assert probe.iloc[0]["n_acquired"] is pd.NA  # the base has no previous epoch


def test_entity_level_counts_with_rouge_threshold():
    # entity A: probes (.5, .7) → mean .6 → learned (>= 0.6); entity B: (.4, .7) → .55 → not learned
    rouge = np.array([
        [0.0, 0.5, 0.9],  # A
        [0.0, 0.7, 0.1],  # A  → A: 0, .6 (learned), .5 (forgotten)
        [0.0, 0.4, 0.8],  # B
        [0.0, 0.7, 0.8],  # B  → B: 0, .55, .8 (acquired)
    ])  # fmt: skip
    res = Results.from_arrays(rouge >= 0.6, steps=[0, 10, 20], kind="new", probe_type="qa",
                              entity_id=["A", "A", "B", "B"], rouge1=rouge)  # fmt: skip
    table, notes = epoch_counts(res)
    assert notes == []
    ent = table[(table["level"] == "entity") & (table["probe_type"] == "qa")]
    assert list(ent["n"]) == [2, 2, 2]
    assert list(ent["n_learned"]) == [0, 1, 1]
    e1, e2 = ent.iloc[1], ent.iloc[2]
    assert (e1["n_acquired"], e1["n_retained"], e1["n_forgotten"]) == (1, 0, 0)
    assert (e2["n_acquired"], e2["n_retained"], e2["n_forgotten"]) == (1, 0, 1)
    # the probe types pooled ('all') give the same here: one probe type
    pooled = table[(table["level"] == "entity") & (table["probe_type"] == "all")]
    assert list(pooled["n_learned"]) == [0, 1, 1]


def test_entity_counts_explain_why_they_are_missing():
    res = Results.from_arrays([[0, 1]], kind="new", probe_type="qa")
    table, notes = epoch_counts(res)
    assert (table["level"] == "entity").sum() == 0
    assert any("ROUGE-1" in n for n in notes)
