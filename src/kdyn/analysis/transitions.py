"""Sample-wise transitions (DESIGN.md, "Metric definitions"): forgetting, backward transfer, FUAR.

For each (kind, probe_type) group and checkpoint pair s < t, with c(q, t) probe q's correctness and n the
group size: F = #{1 → 0} / n, BT = #{0 → 1} / n, relative forgetting F / A(s); for multiple choice with
each item's own k, E = (1 − A(s))(1 − A(t)) · mean_q 1/(k_q − 1), F_adj = max(0, F − E),
BT_adj = max(0, BT − E), chance-adjusted accuracy max(0, mean_q (k_q c_q − 1)/(k_q − 1)) — with one k
these are exactly the DESIGN formulas. Pairs: base → every checkpoint (from_step = 0) and each checkpoint
→ the next (`consecutive`; the first of these is also the first base pair, so it appears once).
FUAR = #forgotten known / (#acquired new + #acquired updated), per probe type, base → t.
Every rate has a percentile bootstrap CI over the group's items.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdyn.analysis.results import Group, Results
from kdyn.analysis.stats import Bootstrap

RATES = ("acc_to", "forgetting", "backward_transfer", "relative_forgetting", "acc_change",
         "forgetting_adj", "backward_transfer_adj", "acc_to_adj")  # fmt: skip
COLUMNS = ["kind", "probe_type", "from_step", "to_step", "consecutive", "n", "n_1to0", "n_0to1",
           "acc_from", "acc_to", "forgetting", "backward_transfer", "forgetting_adj", "backward_transfer_adj",
           "relative_forgetting", "acc_change", "acc_from_adj", "acc_to_adj", "k_min", "k_max",
           *[f"{r}_{side}" for r in RATES for side in ("lo", "hi")]]  # fmt: skip
NO_GAIN = "no new or updated fact acquired yet (FUAR = x/0)"
Replicates = dict[tuple[str, str], tuple[pd.DataFrame, dict[str, np.ndarray]]]  # group → (rows, F/BT replicates)
FUAR_COLUMNS = ["probe_type", "step", "n_known", "n_forgotten_known", "n_acquired_new", "n_acquired_updated",
                "fuar", "fuar_lo", "fuar_hi", "reason"]  # fmt: skip


def checkpoint_pairs(n_steps: int) -> list[tuple[int, int]]:
    """Index pairs: (0, t) for every later checkpoint, then (t − 1, t) where t − 1 is not the base."""
    return [(0, j) for j in range(1, n_steps)] + [(j - 1, j) for j in range(2, n_steps)]


def derive(m: np.ndarray, n_steps: int, pairs: list[tuple[int, int]], mcq: bool) -> dict[str, np.ndarray]:
    """Every transition metric from column means `m` (..., columns) laid out as in `_columns`."""
    s, p = n_steps, len(pairs)
    i_from = np.array([a for a, _ in pairs])
    i_to = np.array([b for _, b in pairs])
    acc_from, acc_to = m[..., i_from], m[..., i_to]
    out = {"acc_from": acc_from, "acc_to": acc_to, "forgetting": m[..., s : s + p],
           "backward_transfer": m[..., s + p : s + 2 * p], "acc_change": acc_to - acc_from}  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        out["relative_forgetting"] = np.where(acc_from > 0, out["forgetting"] / acc_from, np.nan)
    nan = np.full(acc_to.shape, np.nan)
    if not mcq:
        return out | {k: nan for k in ("forgetting_adj", "backward_transfer_adj", "acc_from_adj", "acc_to_adj")}
    inv_k = m[..., s + 2 * p][..., None]
    scaled = m[..., s + 2 * p + 1 :]  # mean of c · k/(k − 1) per checkpoint
    chance = (1.0 - acc_from) * (1.0 - acc_to) * inv_k
    out["forgetting_adj"] = np.maximum(0.0, out["forgetting"] - chance)
    out["backward_transfer_adj"] = np.maximum(0.0, out["backward_transfer"] - chance)
    out["acc_from_adj"] = np.maximum(0.0, scaled[..., i_from] - inv_k)
    out["acc_to_adj"] = np.maximum(0.0, scaled[..., i_to] - inv_k)
    return out


def _columns(c: np.ndarray, k: np.ndarray, pairs: list[tuple[int, int]], mcq: bool) -> np.ndarray:
    """Per-item columns whose means give every metric: c per checkpoint, 1→0 and 0→1 per pair, k terms."""
    i_from = [a for a, _ in pairs]
    i_to = [b for _, b in pairs]
    cf, ct = c[:, i_from], c[:, i_to]
    parts = [c, cf * (1.0 - ct), (1.0 - cf) * ct]
    if mcq:
        kf = k.astype(np.float64)
        parts += [(1.0 / (kf - 1.0))[:, None], c * (kf / (kf - 1.0))[:, None]]
    return np.concatenate(parts, axis=1)


def group_transitions(res: Results, g: Group, boot: Bootstrap) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One group's transition rows, and the bootstrap replicates of F and BT (for FUAR)."""
    pairs = checkpoint_pairs(res.n_steps)
    c = res.correct[g.rows].astype(np.float64)
    k = res.items["k"].to_numpy()[g.rows]
    mcq = bool(len(k) and (k >= 2).all())
    x = _columns(c, k, pairs, mcq)
    point = derive(x.mean(axis=0), res.n_steps, pairs, mcq)
    reps = derive(boot.means(x, g.key), res.n_steps, pairs, mcq)
    steps = res.steps
    flips = x[:, res.n_steps : res.n_steps + 2 * len(pairs)].sum(axis=0).round().astype(np.int64)
    table = {
        "kind": g.kind, "probe_type": g.probe_type,
        "from_step": steps[[a for a, _ in pairs]], "to_step": steps[[b for _, b in pairs]],
        "consecutive": np.array([b == a + 1 for a, b in pairs]), "n": len(g.rows),
        "n_1to0": flips[: len(pairs)], "n_0to1": flips[len(pairs) :],
        "k_min": int(k.min()) if len(k) else 0, "k_max": int(k.max()) if len(k) else 0,
    }  # fmt: skip
    table |= point
    lo, hi = boot.ci(np.stack([reps[rate] for rate in RATES], axis=1))  # (rates, pairs) each, one sort
    for i, rate in enumerate(RATES):
        table[f"{rate}_lo"], table[f"{rate}_hi"] = lo[i], hi[i]
    return pd.DataFrame(table), {"forgetting": reps["forgetting"], "backward_transfer": reps["backward_transfer"]}


def transition_tables(res: Results, boot: Bootstrap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transitions, fuar) tables for every group of `res`."""
    frames: list[pd.DataFrame] = []
    reps: Replicates = {}
    for g in res.groups():
        frame, rep = group_transitions(res, g, boot)
        frames.append(frame)
        reps[(g.kind, g.probe_type)] = (frame, rep)
    table = pd.concat(frames, ignore_index=True)[COLUMNS] if frames else pd.DataFrame(columns=COLUMNS)
    return table, fuar_table(res, reps, boot)


def fuar_table(res: Results, reps: Replicates, boot: Bootstrap) -> pd.DataFrame:
    """FUAR (Jang et al.) per probe type and checkpoint, base → t, with a bootstrap CI.

    Forgotten = base-correct `known` probes wrong at t; acquired = `new` and `updated` probes 0 → 1.
    """
    rows = []
    n_base = res.n_steps - 1  # the first n_steps − 1 pairs are base → t
    for ptype in dict.fromkeys(t for _, t in reps):
        known = reps.get(("known", ptype))
        gains = [reps.get((kind, ptype)) for kind in ("new", "updated")]
        if known is None or all(g is None for g in gains):
            continue
        forgot = known[0]["n_1to0"].to_numpy()[:n_base]
        forgot_b = known[1]["forgetting"][:, :n_base] * known[0]["n"].iloc[0]
        counts, counts_b = [], []
        for gain in gains:
            if gain is None:
                counts.append(np.zeros(n_base))
                counts_b.append(np.zeros_like(forgot_b))
            else:
                counts.append(gain[0]["n_0to1"].to_numpy()[:n_base])
                counts_b.append(gain[1]["backward_transfer"][:, :n_base] * gain[0]["n"].iloc[0])
        denom, denom_b = counts[0] + counts[1], counts_b[0] + counts_b[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(denom > 0, forgot / np.where(denom > 0, denom, 1), np.nan)
            value_b = np.where(denom_b > 0, forgot_b / np.where(denom_b > 0, denom_b, 1), np.nan)
        lo, hi = boot.ci(value_b)
        for j in range(n_base):
            rows.append({"probe_type": ptype, "step": res.steps[j + 1], "n_known": int(known[0]["n"].iloc[0]),
                         "n_forgotten_known": int(forgot[j]), "n_acquired_new": int(counts[0][j]),
                         "n_acquired_updated": int(counts[1][j]), "fuar": value[j], "fuar_lo": lo[j],
                         "fuar_hi": hi[j],
                         "reason": None if denom[j] > 0 else NO_GAIN})  # fmt: skip
    return pd.DataFrame(rows, columns=FUAR_COLUMNS)

