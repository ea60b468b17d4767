"""Step-level dynamics (Chang et al.), for runs probed every N steps (DESIGN.md, "Metric definitions").

With ℓ the target log-prob of a probe and an injection step i (by default the base: training starts
there; pass others, e.g. the start of each epoch):
- effectivity = ℓ(peak) − ℓ(i), the peak being the item's highest ℓ at the probed steps in (i, i + 50];
- retainability R(t) = (ℓ(peak + t) − ℓ(i)) / (ℓ(peak) − ℓ(i)) at the probed steps after the peak and
  before the next injection, for items with a positive effectivity;
- decay = −slope of the mean R(t) against log t (least squares), with its R².
Effectivity and decay have bootstrap CIs (over items or entities), each with the number of replicates
where it is defined; an interval defined in under 95% of them is null and `ci_reason` says why. Runs
probed only at epoch ends give no rows (a note says why): these quantities need checkpoints between epochs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdyn.analysis.results import Group, Results
from kdyn.analysis.stats import Bootstrap, log_fit
from kdyn.errors import KdynError

PEAK_WINDOW = 50
STEPWISE_COLUMNS = ["kind", "probe_type", "injection_step", "peak_window", "n", "n_gained", "effectivity",
                    "effectivity_lo", "effectivity_hi", "effectivity_n_boot", "decay", "decay_lo", "decay_hi",
                    "decay_n_boot", "decay_r2", "n_offsets", "reason", "ci_reason"]  # fmt: skip
RETAIN_COLUMNS = ["kind", "probe_type", "injection_step", "offset", "n", "retainability"]


def _group(res: Results, g: Group, a: int, b: int, window: np.ndarray, boot: Bootstrap,
           peak_window: int) -> tuple[dict, list[dict]]:  # fmt: skip
    """One group and one injection (checkpoint index a, next injection index b)."""
    steps = np.asarray(res.steps)
    ell = res.score[g.rows]
    before = ell[:, a]
    win = ell[:, window]
    has = np.isfinite(before) & np.isfinite(win).any(axis=1)
    peak = window[np.argmax(np.where(np.isfinite(win), win, -np.inf), axis=1)]
    eff = np.where(has, ell[np.arange(len(g.rows)), peak] - before, np.nan)
    gained = has & (eff > 0)
    after = np.arange(window[0], b)
    offset = steps[after][None, :] - steps[peak][:, None]  # (items, after)
    valid = gained[:, None] & (offset > 0) & np.isfinite(ell[:, after])
    uniq = np.unique(offset[valid])
    retain = np.full((len(g.rows), len(uniq)), np.nan)
    if len(uniq):
        r = (ell[:, after] - before[:, None]) / np.where(gained, eff, 1.0)[:, None]
        qi, ji = np.nonzero(valid)
        retain[qi, np.searchsorted(uniq, offset[qi, ji])] = r[qi, ji]
    key, units = g.key, res.units(g.rows)  # the group's resamples, shared with its other tables
    eff_b = boot.nanmeans(eff, key, units)[:, 0]
    (elo,), (ehi,), (edef,) = boot.interval(eff_b[:, None])
    curve = np.nanmean(retain, axis=0) if len(uniq) and valid.any() else np.array([])
    row = {"kind": g.kind, "probe_type": g.probe_type, "injection_step": steps[a].item(),
           "peak_window": peak_window, "n": len(g.rows), "n_gained": int(gained.sum()),
           "effectivity": float(np.nanmean(eff)) if has.any() else np.nan, "effectivity_lo": elo,
           "effectivity_hi": ehi, "effectivity_n_boot": int(edef), "n_offsets": len(uniq), "decay": np.nan,
           "decay_lo": np.nan, "decay_hi": np.nan, "decay_n_boot": 0, "decay_r2": np.nan, "reason": None}  # fmt: skip
    why = [("effectivity", boot.ci_reason(edef, row["effectivity"], "no target log-prob in the others"))]
    if not has.any():
        row["reason"] = "no target log-prob at the injection step and in the peak window"
    elif len(uniq) < 3:
        row["reason"] = "fewer than 3 probed offsets after the peak: decay cannot be fitted"
    else:
        slope, r2 = log_fit(uniq, curve[None, :])
        slope_b, _ = log_fit(uniq, boot.nanmeans(retain, key, units))
        lo, hi, defined = boot.interval(-slope_b)
        row |= {"decay": float(-slope[0]), "decay_r2": float(r2[0]), "decay_lo": float(lo), "decay_hi": float(hi),
                "decay_n_boot": int(defined)}  # fmt: skip
        why.append(("decay", boot.ci_reason(defined, row["decay"], "fewer than 3 offsets to fit in the others")))
    row["ci_reason"] = "; ".join(f"{name}: {text}" for name, text in why if text) or None
    counts = np.isfinite(retain).sum(axis=0)
    curve_rows = [{"kind": g.kind, "probe_type": g.probe_type, "injection_step": steps[a].item(),
                   "offset": t.item(), "n": int(n), "retainability": float(v)}
                  for t, n, v in zip(uniq, counts, curve)]  # fmt: skip
    return row, curve_rows


def stepwise_tables(res: Results, boot: Bootstrap, injection_steps: list[int | float] | None = None,
                    peak_window: int = PEAK_WINDOW) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:  # fmt: skip
    """(stepwise, retainability) tables and notes on why they are empty, if they are."""
    empty = (pd.DataFrame(columns=STEPWISE_COLUMNS), pd.DataFrame(columns=RETAIN_COLUMNS))
    if res.score is None:
        return *empty, ["step-level metrics need each probe's target log-prob (logprob / score); none in the input"]
    if res.epochs is not None and not res.step_cadence():
        return *empty, ["step-level metrics (effectivity, retainability, decay) need probing every N steps; "
                        "this run was probed at epoch ends only"]  # fmt: skip
    steps = np.asarray(res.steps)
    injections = sorted(injection_steps) if injection_steps else [steps[0].item()]
    idx = []
    for step in injections:
        hit = np.nonzero(steps == step)[0]
        if not len(hit):
            shown = ", ".join(map(str, steps[:12])) + (" ..." if len(steps) > 12 else "")
            raise KdynError(f"injection step {step} is not a checkpoint of {res.source}; its checkpoints are {shown}")
        idx.append(int(hit[0]))
    rows, curves, notes = [], [], []
    for n, a in enumerate(idx):
        b = idx[n + 1] if n + 1 < len(idx) else res.n_steps
        window = np.nonzero((steps > steps[a]) & (steps <= steps[a] + peak_window))[0]
        window = window[window < b]
        if not len(window):
            notes.append(f"no checkpoint within {peak_window} steps after injection step {steps[a]}: "
                         f"effectivity is not computed there")  # fmt: skip
            continue
        for g in res.groups():
            row, curve = _group(res, g, a, b, window, boot, peak_window)
            rows.append(row)
            curves += curve
    return pd.DataFrame(rows, columns=STEPWISE_COLUMNS), pd.DataFrame(curves, columns=RETAIN_COLUMNS), notes
