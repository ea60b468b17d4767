"""summary.json: the headline numbers of an analysis, each with its CI, n and (when missing) a reason.

Each entry of `metrics` is {name, kind, probe_type, from_step, step, value, ci: [lo, hi] | null, n,
reason, ci_reason}. A value that cannot be computed is null with a reason, never 0; an interval that cannot
be (a bootstrap defined in under 95% of its replicates) is null with `ci_reason`. Checkpoint choices (loss-
and knowledge-optimal steps) are values without an interval. `bootstrap` says how intervals were made.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from kdyn.analysis.results import Results
from kdyn.analysis.stats import Bootstrap

LOSS_CURVE = ("training-set loss measured at every checkpoint, the base included (eval_loss.parquet: mean "
              "next-token NLL over every training document, the model at that checkpoint in eval mode); runs "
              "without it: the mean training loss over the logging steps since the previous checkpoint "
              "(train_log.parquet), undefined at the base; without either, the mean per-fact NLL "
              "(fact_loss.parquet); loss_knowledge.loss_source says which")  # fmt: skip


def _num(value: Any) -> Any:
    """JSON-safe number: numpy scalars to Python, NaN / NA to None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def metric(name: str, value: Any, *, kind: str | None = None, probe_type: str | None = None, step: Any = None,
           from_step: Any = None, ci: tuple[Any, Any] | None = None, n: Any = None,
           reason: str | None = None, ci_reason: str | None = None) -> dict[str, Any]:  # fmt: skip
    value = _num(value)
    lo, hi = (_num(ci[0]), _num(ci[1])) if ci is not None else (None, None)
    return {"name": name, "kind": kind, "probe_type": probe_type, "from_step": _num(from_step), "step": _num(step),
            "value": value, "ci": [lo, hi] if lo is not None and hi is not None else None, "n": _num(n),
            "reason": reason if value is None else None,
            "ci_reason": _text(ci_reason) if value is not None else None}  # fmt: skip


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _rate_reason(name: str) -> str:
    if name == "relative_forgetting":
        return "accuracy at the base is 0, so F / A(s) is undefined"
    return "not computable for this group"


def group_metrics(tables: dict[str, Any], final_step: Any) -> list[dict[str, Any]]:
    """Per (kind, probe_type): accuracy at base and final, F and BT base→final, consolidation, loss vs knowledge."""
    out: list[dict[str, Any]] = []
    tr = tables["transitions"]
    curves = tables["curves"]
    cons = tables["consolidation"].set_index(["kind", "probe_type"])
    lk = tables["loss_knowledge"].set_index(["kind", "probe_type"])
    final = tr[(tr["from_step"] == tr["from_step"].min()) & (tr["to_step"] == final_step)]
    for _, row in final.iterrows():
        key = {"kind": row["kind"], "probe_type": row["probe_type"]}
        n = row["n"]
        base = curves[(curves["kind"] == row["kind"]) & (curves["probe_type"] == row["probe_type"])].iloc[0]
        out.append(metric("accuracy", base["acc"], **key, step=base["step"], ci=(base["acc_lo"], base["acc_hi"]), n=n))
        out.append(metric("accuracy", row["acc_to"], **key, step=final_step, ci=(row["acc_to_lo"], row["acc_to_hi"]),
                          n=n))  # fmt: skip
        names = ["forgetting", "backward_transfer", "relative_forgetting"]
        adj = {}
        if row["k_max"] >= 2:  # some multiple choice: adjusted, or null with the reason (a group mixing open items)
            out.append(metric("accuracy_adj", row["acc_to_adj"], **key, step=final_step, n=n,
                              ci=(row["acc_to_adj_lo"], row["acc_to_adj_hi"]), reason=row["adj_reason"]))  # fmt: skip
            names += ["forgetting_adj", "backward_transfer_adj"]
            adj = {"forgetting_adj": row["adj_reason"], "backward_transfer_adj": row["adj_reason"]}
        for name in names:
            out.append(metric(name, row[name], **key, from_step=row["from_step"], step=final_step,
                              ci=(row[f"{name}_lo"], row[f"{name}_hi"]), n=n,
                              reason=adj.get(name) or _rate_reason(name)))  # fmt: skip
        if pd.notna(row["n_all_items"]):  # a known MCQ group: chance-adjusted over all its items, beside F
            for name in ("forgetting_adj_all_items", "backward_transfer_adj_all_items"):
                out.append(metric(name, row[name], **key, from_step=row["from_step"], step=final_step,
                                  ci=(row[f"{name}_lo"], row[f"{name}_hi"]), n=row["n_all_items"]))  # fmt: skip
        c = cons.loc[(row["kind"], row["probe_type"])]
        out.append(metric("consolidation_rate", c["consolidation_rate"], **key, step=final_step,
                          ci=(c["consolidation_rate_lo"], c["consolidation_rate_hi"]), n=c["n_followed"],
                          reason=c["reason"]))  # fmt: skip
        x = lk.loc[(row["kind"], row["probe_type"])]
        out.append(metric("spearman_neg_loss_accuracy", x["spearman"], **key, ci=(x["spearman_lo"], x["spearman_hi"]),
                          n=x["n_checkpoints"], reason=x["reason"], ci_reason=x["spearman_ci_reason"]))  # fmt: skip
        out.append(metric("acc_lost_by_loss_stopping", x["acc_lost_by_loss_stopping"], **key,
                          step=x["loss_optimal_step"], ci=(x["acc_lost_lo"], x["acc_lost_hi"]), n=n,
                          reason=x["reason"]))  # fmt: skip
        for name in ("loss_optimal_step", "knowledge_optimal_step"):
            out.append(metric(name, x[name], **key, reason=x["reason"]))
    return out


def other_metrics(tables: dict[str, Any], base_step: Any, final_step: Any) -> list[dict[str, Any]]:
    """FUAR, skill drop vs base, step-level effectivity and decay."""
    out: list[dict[str, Any]] = []
    fuar = tables["fuar"]
    for _, r in fuar[fuar["step"] == final_step].iterrows():
        out.append(metric("fuar", r["fuar"], probe_type=r["probe_type"], from_step=base_step, step=final_step,
                          ci=(r["fuar_lo"], r["fuar_hi"]), n=r["n_known"], reason=r["reason"],
                          ci_reason=r["fuar_ci_reason"]))  # fmt: skip
    tr = tables["transitions"]
    skills = tr[(tr["kind"] == "skill") & (tr["from_step"] == base_step) & (tr["to_step"] == final_step)]
    for _, r in skills.iterrows():
        out.append(metric("skill_accuracy_drop", -r["acc_change"], kind="skill", probe_type=r["probe_type"],
                          from_step=r["from_step"], step=final_step, ci=(-r["acc_change_hi"], -r["acc_change_lo"]),
                          n=r["n"]))  # fmt: skip
    for _, r in tables["stepwise"].iterrows():
        key = {"kind": r["kind"], "probe_type": r["probe_type"], "from_step": r["injection_step"], "n": r["n"]}
        out.append(metric("effectivity", r["effectivity"], **key, ci=(r["effectivity_lo"], r["effectivity_hi"]),
                          reason=r["reason"], ci_reason=r["ci_reason"]))  # fmt: skip
        out.append(metric("decay", r["decay"], **key, ci=(r["decay_lo"], r["decay_hi"]), reason=r["reason"],
                          ci_reason=r["ci_reason"]))  # fmt: skip
        out.append(metric("decay_r2", r["decay_r2"], **key, reason=r["reason"]))
    return out


def interval_method(unit: str) -> str:
    """How the intervals were made, in words (summary.json's bootstrap.method; the report quotes it)."""
    if unit == "entity":
        return ("Wilson intervals for single rates with the effective sample size of an entity-clustered bootstrap; "
                "percentile bootstrap over entities for the other statistics")  # fmt: skip
    return "Wilson intervals for single rates; percentile bootstrap over items for the other statistics"


def build_summary(res: Results, tables: dict[str, Any], boot: Bootstrap, notes: list[str]) -> dict[str, Any]:
    final_step = res.steps[-1]
    return {
        "source": res.source,
        "meta": {k: _num(v) for k, v in res.meta.items()},
        "n_items": res.n_items,
        "checkpoints": [_num(s) for s in res.steps],
        "base_step": _num(res.steps[0]),
        "final_step": _num(final_step),
        "epoch_checkpoints": [_num(res.steps[i]) for i in res.epoch_indices()],
        "bootstrap": {"replicates": boot.replicates, "seed": boot.seed, "level": boot.level, "unit": boot.unit,
                      "method": interval_method(boot.unit)},  # fmt: skip
        "loss_curve": LOSS_CURVE,
        "metrics": group_metrics(tables, final_step) + other_metrics(tables, res.steps[0], final_step),
        "notes": list(dict.fromkeys(res.notes + notes)),
    }
