"""`kdyn compare RUN...`: one table across runs (strategies, models, seeds) with CIs and paired tests.

    from kdyn.analysis.comparison import compare
    c = compare(["runs/full-s0", "runs/lora-s0", "runs/lora-s1"])
    c.runs; c.seeds; c.tests

- runs: per run and (kind, probe_type), accuracy at the base and at the compared checkpoint, F and BT
  base → checkpoint and the consolidation rate, each with its bootstrap CI over items.
- seeds: runs sharing model and strategy aggregated as mean ± Student-t 95% CI over seeds.
- tests: McNemar between every two runs on the items they share (grouped by each probe's own kind, so
  `known` here includes known probes wrong at the base) at the compared checkpoint, with the paired
  accuracy difference (b − a) and its bootstrap CI.
The compared checkpoint is each run's last (`at="final"`) or a step every run has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdyn.analysis.load import expand_run_dirs, load_run, run_labels
from kdyn.analysis.results import Results
from kdyn.analysis.stats import Bootstrap, mcnemar, seed_mean_ci
from kdyn.analysis.trajectories import Trajectories, consolidation_table
from kdyn.analysis.transitions import transition_tables
from kdyn.errors import KdynError
from kdyn.io import read_json

CI = ("", "_lo", "_hi")
METRICS = ("acc_final", "forgetting", "backward_transfer", "consolidation_rate")
RUN_COLUMNS = ["run", "model", "strategy", "seed", "kind", "probe_type", "n", "step", "acc_base",
               *[f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")]]  # fmt: skip
SEED_COLUMNS = ["model", "strategy", "kind", "probe_type", "n_seeds", "runs",
                *[f"{m}{s}" for m in METRICS for s in ("_mean", "_lo", "_hi")], "reason"]  # fmt: skip
TEST_COLUMNS = ["run_a", "run_b", "kind", "probe_type", "step_a", "step_b", "n", "acc_a", "acc_b", "diff",
                "diff_lo", "diff_hi", "only_a", "only_b", "statistic", "p_value", "reason"]  # fmt: skip


@dataclass
class Comparison:
    runs: pd.DataFrame
    seeds: pd.DataFrame
    tests: pd.DataFrame
    warnings: list[str] = field(default_factory=list)  # e.g. runs probed in different precisions


def _column(res: Results, at: str | int) -> int:
    if at == "final":
        return res.n_steps - 1
    hit = np.nonzero(np.asarray(res.steps) == int(at))[0]
    if not len(hit):
        raise KdynError(f"{res.source} has no checkpoint at step {at}; its checkpoints are "
                        f"{', '.join(map(str, res.steps[:12]))}")  # fmt: skip
    return int(hit[0])


def run_rows(res: Results, label: str, j: int, boot: Bootstrap) -> list[dict]:
    """Per-group rows of one run at checkpoint column j."""
    tr, _ = transition_tables(res, boot)
    tr = tr[(tr["from_step"] == res.steps[0]) & (tr["to_step"] == res.steps[j])]
    cons = consolidation_table(res, Trajectories(res.correct[:, : j + 1]), boot).set_index(["kind", "probe_type"])
    rows = []
    for _, r in tr.iterrows():
        c = cons.loc[(r["kind"], r["probe_type"])]
        rows.append({"run": label, "model": res.meta.get("model"), "strategy": res.meta.get("strategy"),
                     "seed": res.meta.get("seed"), "kind": r["kind"], "probe_type": r["probe_type"], "n": r["n"],
                     "step": res.steps[j], "acc_base": r["acc_from"],
                     "acc_final": r["acc_to"], "acc_final_lo": r["acc_to_lo"], "acc_final_hi": r["acc_to_hi"],
                     **{f"{m}{s}": r[f"{m}{s}"] for m in ("forgetting", "backward_transfer") for s in CI},
                     **{f"consolidation_rate{s}": c[f"consolidation_rate{s}"] for s in CI}})  # fmt: skip
    return rows


def seed_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± t-CI over runs that share model and strategy (a run without either is its own group)."""
    rows = []
    frame = runs.assign(_model=runs["model"].fillna(runs["run"]), _strategy=runs["strategy"].fillna(""))
    for (model, strategy, kind, ptype), part in frame.groupby(["_model", "_strategy", "kind", "probe_type"],
                                                              sort=False):  # fmt: skip
        row = {"model": model, "strategy": strategy or None, "kind": kind, "probe_type": ptype,
               "n_seeds": len(part), "runs": ", ".join(part["run"])}  # fmt: skip
        rows.append(row | seed_stats(part, METRICS))
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def seed_stats(part: pd.DataFrame, metrics: tuple[str, ...]) -> dict[str, Any]:
    """Per rate in `metrics`: mean over the runs of `part` (one per seed) and its t-interval clipped to [0, 1] as
    `m_mean, m_lo, m_hi`, and the reason there is no interval."""
    row: dict[str, Any] = {}
    for m in metrics:
        row[f"{m}_mean"], row[f"{m}_lo"], row[f"{m}_hi"] = seed_mean_ci(part[m].to_numpy(dtype=np.float64), bounds=(0.0, 1.0))
    row["reason"] = None if len(part) > 1 else "one seed: no interval over seeds (see the run's bootstrap CI)"
    return row


def paired_tests(loaded: list[tuple[str, Results, int]], boot: Bootstrap) -> pd.DataFrame:
    rows = []
    for (la, ra, ja), (lb, rb, jb) in combinations(loaded, 2):
        a = pd.DataFrame({"item": ra.items["item_id"], "kind": ra.items["kind"], "probe_type": ra.items["probe_type"],
                          "ca": ra.correct[:, ja]})  # fmt: skip
        b = pd.DataFrame({"item": rb.items["item_id"], "cb": rb.correct[:, jb]})
        both = a.merge(b, on="item", how="inner")
        base = {"run_a": la, "run_b": lb, "step_a": ra.steps[ja], "step_b": rb.steps[jb]}
        if both.empty:
            rows.append(base | {"kind": None, "probe_type": None, "n": 0, "reason": "the runs share no items"})
            continue
        for (kind, ptype), part in both.groupby(["kind", "probe_type"], sort=False):
            ca, cb = part["ca"].to_numpy(), part["cb"].to_numpy()
            test = mcnemar(ca, cb)
            diff_b = boot.means((cb.astype(float) - ca.astype(float)), f"{la}|{lb}|{kind}/{ptype}")
            (lo,), (hi,) = boot.ci(diff_b)
            rows.append(base | {"kind": kind, "probe_type": ptype, "n": test.n, "acc_a": ca.mean(),
                                "acc_b": cb.mean(), "diff": cb.mean() - ca.mean(), "diff_lo": lo, "diff_hi": hi,
                                "only_a": test.b, "only_b": test.c, "statistic": test.statistic,
                                "p_value": test.p_value, "reason": None})  # fmt: skip
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def compare(run_dirs: list[str] | list[Path], at: str | int = "final", bootstrap: int = 1000,
            seed: int = 0) -> Comparison:  # fmt: skip
    """Compare runs (paths or globs) at each run's last checkpoint or at a shared step."""
    paths = expand_run_dirs([str(p) for p in run_dirs])
    boot = Bootstrap(replicates=bootstrap, seed=seed)
    loaded = []
    for label, path in zip(run_labels(paths), paths):
        res = load_run(Path(path))
        loaded.append((label, res, _column(res, at)))
    runs = pd.DataFrame([r for label, res, j in loaded for r in run_rows(res, label, j, boot)], columns=RUN_COLUMNS)
    return Comparison(runs, seed_table(runs), paired_tests(loaded, boot), precision_warnings(paths, run_labels(paths)))


def precision_warnings(paths: list[Path], labels: list[str]) -> list[str]:
    """A warning when the runs' manifests record different probe precisions (bf16 and fp32 scores of one model
    differ on a few probes, so part of a difference between such runs may be the precision)."""
    seen = {}
    for label, path in zip(labels, paths):
        manifest = read_json(Path(path) / "manifest.json") if (Path(path) / "manifest.json").is_file() else {}
        if isinstance(manifest, dict) and manifest.get("probe_precision"):
            seen[label] = manifest["probe_precision"]
    if len(set(seen.values())) < 2:
        return []
    listed = ", ".join(f"{label}: {p}" for label, p in seen.items())
    return [f"the runs were probed in different precisions ({listed}); bf16 and fp32 scores of one model differ on "
            "a few probes, so set probe.precision to the same value to compare like with like"]
