"""Comparison findings with seeds: set-up differences over seeds lead (not run-vs-run pairs), and the paired
tests between seeds of the same two set-ups are written out once, not once per seed pair."""

from __future__ import annotations

import pandas as pd

from kdyn.analysis.comparison import Comparison
from kdyn.report.comparison import comparison_findings


def comparison() -> Comparison:
    runs = pd.DataFrame([{"run": f"{s}-s{i}", "model": "m", "strategy": s, "kind": k, "probe_type": t, "n": n}
                         for s in ("full", "lora") for i in (0, 1)
                         for k, t, n in (("new", "cloze", 40), ("known", "qa", 10))])  # fmt: skip
    seeds = pd.DataFrame([
        {"model": "m", "strategy": "full", "kind": "new", "probe_type": "cloze", "n_seeds": 2,
         "acc_final_mean": 0.70, "acc_final_lo": 0.60, "acc_final_hi": 0.80},
        {"model": "m", "strategy": "lora", "kind": "new", "probe_type": "cloze", "n_seeds": 2,
         "acc_final_mean": 0.10, "acc_final_lo": 0.00, "acc_final_hi": 0.20},
        {"model": "m", "strategy": "full", "kind": "known", "probe_type": "qa", "n_seeds": 2,
         "forgetting_mean": 0.50, "forgetting_lo": 0.20, "forgetting_hi": 0.80},
        {"model": "m", "strategy": "lora", "kind": "known", "probe_type": "qa", "n_seeds": 2,
         "forgetting_mean": 0.40, "forgetting_lo": 0.10, "forgetting_hi": 0.70},
    ])  # fmt: skip
    tests = pd.DataFrame([{"run_a": f"full-s{i}", "run_b": f"lora-s{j}", "kind": "new", "probe_type": "cloze",
                           "n": 40, "acc_a": 0.7, "acc_b": 0.1, "diff": -0.6, "diff_lo": -0.75, "diff_hi": -0.45,
                           "p_value": 1e-6 * (1 + i + 2 * j)} for i in (0, 1) for j in (0, 1)])  # fmt: skip
    return Comparison(runs=runs, seeds=seeds, tests=tests)


def test_setups_over_seeds_lead_and_seed_pairs_are_not_repeated():
    found = comparison_findings([], comparison())
    assert found[0].startswith("new cloze, final accuracy over 2 seeds: highest full 0.70 [0.60–0.80], lowest lora "
                               "0.10 [0.00–0.20]; the t-intervals over seeds are apart.")  # fmt: skip
    assert found[1].startswith("known QA, forgetting F over 2 seeds: highest full") and "overlap" in found[1]
    pairs = [f for f in found if " vs " in f and "McNemar" in f]
    assert len(pairs) == 1 and "full-s0 0.70 vs lora-s0 0.10" in pairs[0]  # the smallest p of the four seed pairs
    assert "3 more pairs differ at p < 0.05" in " ".join(found)


def test_small_multiples_draw_an_interval_that_does_not_hold_its_point():
    # A bootstrap interval need not hold its estimate, and a Wilson end could land 3e-17 past it: the figure drew
    # error bars from the point (yerr) and matplotlib refused the negative length, so a sweep's report failed.
    import matplotlib

    matplotlib.use("Agg")
    from kdyn.report.comparison import small_multiples

    runs = pd.DataFrame([{"run": "a-s0", "model": "m", "strategy": "full", "kind": "known", "probe_type": "mcq",
                          "n": 10, "forgetting": 0.3, "forgetting_lo": 0.1, "forgetting_hi": 0.5,
                          "backward_transfer": 0.0, "backward_transfer_lo": 2.8e-17, "backward_transfer_hi": 0.28}])
    fig = small_multiples(Comparison(runs=runs, seeds=pd.DataFrame(), tests=pd.DataFrame()),
                          [("forgetting", "v", "F"), ("backward_transfer", "^", "BT")])  # fmt: skip
    (ax, *_) = fig.axes
    spans = sorted(tuple(seg[:, 1]) for c in ax.collections for seg in c.get_segments())
    assert spans == [(2.8e-17, 0.28), (0.1, 0.5)]  # each interval drawn from its own ends


def test_seeds_apart_on_the_same_few_probes_do_not_lead_without_the_paired_tests():
    # Every seed scores the same 6 arithmetic probes: 2 right in every seed of one model, 0 in the other's, gives
    # t-intervals [0.33, 0.33] and [0.00, 0.00], "apart", while no run pair differs on those 6 probes (McNemar
    # p = 0.5). The models sweep's report led with that sentence; now it says so and comes after the others.
    comp = comparison()
    comp.runs = pd.concat([comp.runs, pd.DataFrame([{"run": f"{s}-s{i}", "model": "m", "strategy": s, "kind": "skill",
                                                     "probe_type": "arithmetic", "n": 6}
                                                    for s in ("full", "lora") for i in (0, 1)])])  # fmt: skip
    comp.seeds = pd.concat([comp.seeds, pd.DataFrame([
        {"model": "m", "strategy": "full", "kind": "skill", "probe_type": "arithmetic", "n_seeds": 2,
         "acc_final_mean": 1 / 3, "acc_final_lo": 1 / 3, "acc_final_hi": 1 / 3},
        {"model": "m", "strategy": "lora", "kind": "skill", "probe_type": "arithmetic", "n_seeds": 2,
         "acc_final_mean": 0.0, "acc_final_lo": 0.0, "acc_final_hi": 0.0}])])  # fmt: skip
    comp.tests = pd.concat([comp.tests, pd.DataFrame([{"run_a": f"full-s{i}", "run_b": f"lora-s{j}", "kind": "skill",
                                                       "probe_type": "arithmetic", "n": 6, "acc_a": 1 / 3, "acc_b": 0.0,
                                                       "diff": -1 / 3, "diff_lo": -2 / 3, "diff_hi": 0.0, "p_value": 0.5}
                                                      for i in (0, 1) for j in (0, 1)])])  # fmt: skip
    from kdyn.report.comparison import setup_findings

    found = setup_findings(comp)
    assert [f.split(",")[0] for f in found] == ["new cloze", "known QA", "arithmetic"]
    assert found[2].endswith("are apart. Final accuracy paired over their 6 shared probes: 0 of 4 run pairs differ at "
                             "p < 0.05 (McNemar).")  # fmt: skip
    assert found[0].endswith("Final accuracy paired over their 40 shared probes: 4 of 4 run pairs differ at p < 0.05 "
                             "(McNemar).")  # fmt: skip
    assert found[1].endswith("overlap. F is over 10 probes right at the base.")
