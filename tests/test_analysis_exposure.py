"""Exposure buckets: which items land where, the rates against hand counts, pooling, and the analyze wiring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from kdyn.analysis import analyze
from kdyn.analysis.exposure import buckets, exposure_over_runs, exposure_table
from kdyn.analysis.results import Results
from kdyn.analysis.stats import Bootstrap
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.io import read_jsonl, write_jsonl


def test_buckets_follow_dynamic_knowledge_circuits():
    got = buckets(np.array([0, 1, 2, 5, 6, 10, np.nan]))
    assert list(got) == [None, "low", "medium", "medium", "high", "high", None]


def small_results() -> Results:
    # 6 cloze items of kind new: exposures 1,1,3,3,8,8; one known item (never trained) and a skill item
    correct = np.array([
        [0, 1, 1],  # low: acquired, consolidated
        [0, 0, 0],  # low: never
        [0, 1, 0],  # medium: acquired, not consolidated
        [1, 1, 0],  # medium: forgotten
        [0, 0, 1],  # high: acquired at the end
        [0, 1, 1],  # high: acquired, consolidated
        [1, 1, 1],  # known
        [1, 0, 1],  # skill
    ], dtype=bool)  # fmt: skip
    res = Results.from_arrays(correct, steps=[0, 10, 20], kind=["new"] * 6 + ["known", "skill"],
                              probe_type=["cloze"] * 6 + ["cloze", "arithmetic"])  # fmt: skip
    res.items["exposures"] = [1, 1, 3, 3, 8, 8, 0, np.nan]
    return res


def test_rates_by_bucket_match_hand_counts():
    table = exposure_table(small_results(), Bootstrap(replicates=200))
    new = table[table["kind"] == "new"].set_index("bucket")
    assert list(new.index) == ["low", "medium", "high"] and (new["n"] == 2).all()
    assert new.loc["low", "backward_transfer"] == 0.5 and new.loc["low", "acc_final"] == 0.5
    assert new.loc["low", "consolidation_rate"] == 1.0
    assert new.loc["medium", "acc_base"] == 0.5 and new.loc["medium", "forgetting"] == 0.5
    assert new.loc["medium", "backward_transfer"] == 0.0  # the 0→1→0 item ends where it began
    assert new.loc["medium", "consolidation_rate"] == 0.0 and new.loc["medium", "n_ever_acquired"] == 2
    assert new.loc["high", "acc_final"] == 1.0 and new.loc["high", "backward_transfer"] == 1.0
    assert (new["min_exposures"].tolist(), new["max_exposures"].tolist()) == ([1, 3, 8], [1, 3, 8])
    for m in ("acc_final", "backward_transfer", "forgetting"):
        assert ((new[f"{m}_lo"] <= new[m] + 1e-12) & (new[m] <= new[f"{m}_hi"] + 1e-12)).all(), m
    # known and skill items have no exposures: no rows; pooled rows repeat the only trained kind here
    assert set(table["kind"]) == {"new", "trained"}
    pooled = table[table["kind"] == "trained"].set_index("bucket")
    pd.testing.assert_series_equal(pooled["acc_final"], new["acc_final"])


def test_never_acquired_group_is_nan_with_reason():
    table = exposure_table(small_results(), Bootstrap(replicates=50))
    assert table["reason"].isna().all()
    res = small_results()
    res.correct[:6] = False
    low = exposure_table(res, Bootstrap(replicates=50)).iloc[0]
    assert np.isnan(low["consolidation_rate"]) and "ever correct" in low["reason"]


def test_no_exposure_column_gives_an_empty_table():
    res = small_results()
    res.items = res.items.drop(columns="exposures")
    assert exposure_table(res, Bootstrap(replicates=10)).empty


def test_analyze_writes_exposure_and_sweeps_aggregate_seeds(tmp_path):
    runs = [write_synthetic_run(tmp_path / f"r{s}", n_items=600, n_checkpoints=3, seed=s) for s in (0, 1)]
    for run in runs:  # spread trained facts over the three buckets; known facts are never trained on
        facts = read_jsonl(run / "bench" / "facts.jsonl")
        write_jsonl(run / "bench" / "facts.jsonl", [f | {"exposures": 0 if f["kind"] == "known" else [1, 3, 9][i % 3]}
                                                    for i, f in enumerate(facts)])  # fmt: skip
    analyze(runs[0], bootstrap=50)
    written = pq.read_table(runs[0] / "analysis" / "exposure.parquet").to_pandas()
    assert set(written["bucket"]) == {"low", "medium", "high"} and "known" not in set(written["kind"])
    per_run, seeds = exposure_over_runs(runs, bootstrap=50)
    assert set(per_run["run"]) == {"r0", "r1"} and (per_run["run"] == "r0").sum() == len(written)
    row = seeds[(seeds["kind"] == "new") & (seeds["probe_type"] == "cloze") & (seeds["bucket"] == "high")].iloc[0]
    both = per_run[(per_run["kind"] == "new") & (per_run["probe_type"] == "cloze") & (per_run["bucket"] == "high")]
    assert row["n_seeds"] == 2 and np.isclose(row["acc_final_mean"], both["acc_final"].mean())
    assert row["acc_final_lo"] <= row["acc_final_mean"] <= row["acc_final_hi"]
