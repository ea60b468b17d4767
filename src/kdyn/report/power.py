"""What a run's sizes can detect, beside its headline numbers: `kdyn.plan.plan_of_run` (the run's own bench and
its base model's answers at step 0, nothing re-scored) turned into one cell per (kind, probe type).

A cell reads "Δ ≥ 0.21": the smallest change in that group's accuracy (or forgetting F, for the known facts right
at the base) between this run and another run on the same items that McNemar's test detects at α = 0.05 with 80%
power (docs/metrics.md, "Power: kdyn plan"); "Δ: none" when the group is too small for any change to be detectable.
`power_line` says the same for every group in one line, with the claims the run can decide (`kdyn run` prints it).
"""

from __future__ import annotations

import math

from kdyn.analysis.results import KNOWN_WRONG_AT_BASE
from kdyn.errors import KdynError
from kdyn.analysis.power import mdd_paired
from kdyn.plan import Plan, headline_power, plan_of_run
from kdyn.report.data import RunData

CAPTION = ("Δ ≥ x: the smallest change from another run on the same items that a paired test detects (McNemar, "
           "α 0.05, 80% power; kdyn plan, from this run's group sizes and its answers at the base)")  # fmt: skip


def run_power(run: RunData) -> dict[tuple[str, str], float]:
    """(kind, probe type) → the smallest detectable paired change (NaN: none); {} for input kdyn cannot size
    (imported results without a probes.parquet). The known facts wrong at the base are the known group's rest."""
    try:
        plan = plan_of_run(run.path)
    except KdynError:
        return {}
    out = {(g.kind, g.probe_type): mdd_paired(g.n) for g in plan.groups}
    for g in plan.groups:
        if g.kind == "known" and g.n_all is not None:
            out[(KNOWN_WRONG_AT_BASE, g.probe_type)] = mdd_paired(g.n_all - g.n)
    return out


def detectable(power: dict[tuple[str, str], float], kind: str, probe_type: str) -> str:
    """'Δ ≥ 0.21', 'Δ: none' (too few items) or '—' (not sized)."""
    if (kind, probe_type) not in power:
        return "—"
    delta = power[(kind, probe_type)]
    return "Δ: none" if math.isnan(delta) else f"Δ ≥ {delta:.2f}"


def power_line(plan: Plan) -> str:
    """One line: 'plan (paired, 80% power): this run can detect a change of ≥ 0.21 in new accuracy (cloze, QA, MCQ;
    n = 80 each), …; too few items for any change in …; it can decide M4 and cannot decide H1, M5'."""
    by: dict[tuple[str, str, int], list[str]] = {}
    for h in headline_power(plan):
        ptype = h["probe_type"].upper() if h["probe_type"] in ("qa", "mcq") else h["probe_type"]
        by.setdefault((h["kind"], h["quantity"], h["n"]), []).append(ptype)
    seen, few = [], []
    for (kind, quantity, n), types in by.items():
        each = f"n = {n}{' each' if len(types) > 1 else ''}{' right at the base' if kind == 'known' else ''}"
        what = f"{kind} {quantity} ({', '.join(types)}; {each})"
        delta = mdd_paired(n)
        (few if math.isnan(delta) else seen).append(what if math.isnan(delta) else f"≥ {delta:.2f} in {what}")
    line = "plan (paired, 80% power): this run can detect " + (f"a change of {', '.join(seen)}" if seen else "no change")
    line += f"; too few items for any change in {', '.join(few)}" if few else ""
    yes = [c["claim"] for c in plan.claims if c["verdict"] == "can decide"]
    no = [c["claim"] for c in plan.claims if c["verdict"] == "cannot decide"]
    verdicts = [f"can decide {', '.join(yes)}" if yes else "", f"cannot decide {', '.join(no)}" if no else ""]
    return line + ("; it " + " and ".join(v for v in verdicts if v) if yes or no else "")
