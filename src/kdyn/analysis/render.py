"""Rich tables for the analysis commands: a thin last layer over the result dataframes."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.table import Table

from kdyn.analysis.comparison import Comparison
from kdyn.analysis.pipeline import Analysis


def num(value: Any, digits: int = 3) -> str:
    """A number for a table cell; '—' for missing values (never a silent 0)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def with_ci(value: Any, lo: Any, hi: Any, digits: int = 2) -> str:
    """'0.59 [0.41–0.76]': a value and its interval ('—' when missing)."""
    if num(value) == "—":
        return "—"
    if num(lo) == "—" or num(hi) == "—":
        return num(value, digits)
    return f"{num(value, digits)} [{num(lo, digits)}–{num(hi, digits)}]"


def ci_cell(row: pd.Series, name: str, suffix: str = "") -> str:
    """Cell for `name` with its `name_lo` / `name_hi` interval."""
    return with_ci(row[f"{name}{suffix}"], row[f"{name}_lo"], row[f"{name}_hi"])


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < 2 else "right")
    return table


def analysis_tables(analysis: Analysis) -> list[Table]:
    """Headline per group (base → final), then FUAR, skills and step-level rows when present."""
    res = analysis.results
    t = analysis.tables
    final = res.steps[-1]
    tr = t["transitions"]
    tr = tr[(tr["from_step"] == res.steps[0]) & (tr["to_step"] == final)]
    cons = t["consolidation"].set_index(["kind", "probe_type"])
    lk = t["loss_knowledge"].set_index(["kind", "probe_type"])
    head = _table(f"Knowledge dynamics, base (step {res.steps[0]}) → final (step {final}); 95% CIs over items; "
                  f"stop = step with the lowest loss / the highest accuracy",
                  ["kind", "probe type", "n", "A(0)", "A(T)", "forgetting", "acquisition", "consolidated",
                   "ρ(−loss, A)", "stop"])  # fmt: skip
    for _, r in tr.iterrows():
        c, x = cons.loc[(r["kind"], r["probe_type"])], lk.loc[(r["kind"], r["probe_type"])]
        head.add_row(r["kind"], r["probe_type"], str(r["n"]), num(r["acc_from"]),
                     with_ci(r["acc_to"], r["acc_to_lo"], r["acc_to_hi"]),
                     with_ci(r["forgetting"], r["forgetting_lo"], r["forgetting_hi"]),
                     with_ci(r["backward_transfer"], r["backward_transfer_lo"], r["backward_transfer_hi"]),
                     with_ci(c["consolidation_rate"], c["consolidation_rate_lo"], c["consolidation_rate_hi"]),
                     with_ci(x["spearman"], x["spearman_lo"], x["spearman_hi"]),
                     f"{num(x['loss_optimal_step'])} / {num(x['knowledge_optimal_step'])}")  # fmt: skip
    out = [head]
    mcq = tr[tr["k_min"] >= 2]
    if len(mcq):
        adj = _table("Multiple choice, chance-adjusted (each item's own k)",
                     ["kind", "probe type", "k", "A_adj(final)", "F_adj", "BT_adj"])  # fmt: skip
        for _, r in mcq.iterrows():
            k = str(r["k_min"]) if r["k_min"] == r["k_max"] else f"{r['k_min']}–{r['k_max']}"
            adj.add_row(r["kind"], r["probe_type"], k, *[ci_cell(r, m) for m in ("acc_to_adj", "forgetting_adj",
                                                                                 "backward_transfer_adj")])  # fmt: skip
        out.append(adj)
    fuar = t["fuar"][t["fuar"]["step"] == final]
    if len(fuar):
        ft = _table(f"FUAR at step {final} (forgotten known / acquired new + updated; lower is better)",
                    ["probe type", "forgotten", "acquired new", "acquired updated", "FUAR"])  # fmt: skip
        for _, r in fuar.iterrows():
            ft.add_row(r["probe_type"], str(r["n_forgotten_known"]), str(r["n_acquired_new"]),
                       str(r["n_acquired_updated"]), with_ci(r["fuar"], r["fuar_lo"], r["fuar_hi"]))  # fmt: skip
        out.append(ft)
    if len(t["stepwise"]):
        st = _table("Step-level (Chang et al.)", ["kind", "probe type", "injection", "effectivity", "decay", "R²"])
        for _, r in t["stepwise"].iterrows():
            st.add_row(r["kind"], r["probe_type"], num(r["injection_step"]),
                       with_ci(r["effectivity"], r["effectivity_lo"], r["effectivity_hi"]),
                       with_ci(r["decay"], r["decay_lo"], r["decay_hi"]), num(r["decay_r2"], 2))  # fmt: skip
        out.append(st)
    return out


def comparison_tables(comp: Comparison) -> list[Table]:
    runs = _table("Runs (95% intervals: Wilson for rates, bootstrap over items otherwise)",
                  ["run", "kind / type", "model", "strategy", "seed", "step", "A(base)", "A", "F", "BT",
                   "consolidation"])  # fmt: skip
    for _, r in comp.runs.iterrows():
        runs.add_row(r["run"], f"{r['kind']} / {r['probe_type']}", num(r["model"]), num(r["strategy"]),
                     num(r["seed"]), num(r["step"]), num(r["acc_base"]),
                     with_ci(r["acc_final"], r["acc_final_lo"], r["acc_final_hi"]),
                     with_ci(r["forgetting"], r["forgetting_lo"], r["forgetting_hi"]),
                     with_ci(r["backward_transfer"], r["backward_transfer_lo"], r["backward_transfer_hi"]),
                     ci_cell(r, "consolidation_rate"))
    out = [runs]
    if (comp.seeds["n_seeds"] > 1).any():
        seeds = _table("Over seeds (mean and 95% t-interval)",
                       ["model / strategy", "kind / type", "seeds", "A", "F", "BT", "consolidation"])  # fmt: skip
        for _, r in comp.seeds[comp.seeds["n_seeds"] > 1].iterrows():
            seeds.add_row(f"{r['model']} / {num(r['strategy'])}", f"{r['kind']} / {r['probe_type']}", str(r["n_seeds"]),
                          *[ci_cell(r, m, "_mean") for m in ("acc_final", "forgetting", "backward_transfer",
                                                             "consolidation_rate")])  # fmt: skip
        out.append(seeds)
    if len(comp.tests):
        tests = _table("Paired tests on shared items (McNemar, exact p)",
                       ["runs a / b", "kind / type", "n", "A(a)", "A(b)", "b − a", "only a", "only b",
                        "p"])  # fmt: skip
        for _, r in comp.tests.iterrows():
            tests.add_row(f"{r['run_a']} / {r['run_b']}", f"{r['kind']} / {r['probe_type']}", num(r["n"]),
                          num(r["acc_a"]), num(r["acc_b"]), with_ci(r["diff"], r["diff_lo"], r["diff_hi"]),
                          num(r["only_a"]), num(r["only_b"]), num(r["p_value"], 4))  # fmt: skip
        out.append(tests)
    return out


def frame_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for col in frame.columns:
        table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(frame[col]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*[num(v, 4) for v in row])
    return table
