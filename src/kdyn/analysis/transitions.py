"""Sample-wise transitions (DESIGN.md, "Metric definitions"): forgetting, backward transfer, FUAR.

For each (kind, probe_type) group and checkpoint pair s < t, with c(q, t) probe q's correctness and n the
group size: F = #{1 → 0} / n, BT = #{0 → 1} / n, relative forgetting F / A(s). Multiple choice is
chance-adjusted with each item's own k: the items of one k (weight w_k = n_k / n, accuracy A_k) expect
E_k = (1 − A_k(s))(1 − A_k(t)) / (k − 1) chance transitions, E = Σ_k w_k E_k, F_adj = max(0, F − E),
BT_adj = max(0, BT − E), and chance-adjusted accuracy max(0, mean_q (k_q c_q − 1)/(k_q − 1)) — with one
k these are exactly the DESIGN formulas. A group mixing open (k = 0) and multiple-choice items is not
adjusted, and `adj_reason` says why (as it does for open groups).
`known` groups hold only the probes right at the base, so A(0) = 1, E = 0 and F_adj = F: for a
multiple-choice known group the adjusted rates are also computed over all its items, right and wrong
at the base (Harmon et al.), in the `*_all_items` columns beside the selected-group F.
Pairs: base → every checkpoint (from_step = 0) and each checkpoint → the next (`consecutive`; the first
of these is also the first base pair, so it appears once).
FUAR = #forgotten known / (#acquired new + #acquired updated), per probe type, base → t.
Intervals (stats.py): Wilson for the single rates (A(t), F, BT, F / A(s)); F_adj and BT_adj take the Wilson
interval of F or BT less E (E at its estimate; floored at 0), so F = 0 is not [0–0]; chance-adjusted accuracy
with one k is the same transform of A's Wilson interval; the rest (the accuracy change, adjusted accuracy with
mixed k) is bootstrapped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdyn.analysis.results import Group, Results
from kdyn.analysis.stats import Bootstrap

WILSON = ("acc_to", "forgetting", "backward_transfer", "relative_forgetting")  # single rates: Wilson intervals
SHIFTED = ("forgetting_adj", "backward_transfer_adj", "acc_to_adj")  # from the Wilson intervals, or bootstrapped
RATES = WILSON + ("acc_change",) + SHIFTED
ALL_ITEMS = ("forgetting_adj_all_items", "backward_transfer_adj_all_items")  # known MCQ over all its items
COLUMNS = ["kind", "probe_type", "from_step", "to_step", "consecutive", "n", "n_1to0", "n_0to1",
           "acc_from", "acc_to", "forgetting", "backward_transfer", "forgetting_adj", "backward_transfer_adj",
           "relative_forgetting", "acc_change", "acc_from_adj", "acc_to_adj", "k_min", "k_max", "adj_reason",
           *[f"{r}_{side}" for r in RATES for side in ("lo", "hi")],
           "n_all_items", "acc_from_all_items", "forgetting_all_items",
           *[f"{r}{side}" for r in ALL_ITEMS for side in ("", "_lo", "_hi")]]  # fmt: skip
OPEN = "open answers (k = 0): nothing to adjust for chance"
MIXED = ("mixes {open} open (k = 0) and {mcq} multiple-choice item(s): no chance adjustment (it needs every "
         "item's k)")  # fmt: skip
NO_GAIN = "no new or updated fact acquired yet (FUAR = x/0)"
Replicates = dict[tuple[str, str], tuple[pd.DataFrame, dict[str, np.ndarray]]]  # group → (rows, F/BT replicates)
FUAR_COLUMNS = ["probe_type", "step", "n_known", "n_forgotten_known", "n_acquired_new", "n_acquired_updated",
                "fuar", "fuar_lo", "fuar_hi", "fuar_n_boot", "fuar_ci_reason", "reason"]  # fmt: skip


def checkpoint_pairs(n_steps: int) -> list[tuple[int, int]]:
    """Index pairs: (0, t) for every later checkpoint, then (t − 1, t) where t − 1 is not the base."""
    return [(0, j) for j in range(1, n_steps)] + [(j - 1, j) for j in range(2, n_steps)]


def derive(m: np.ndarray, n_steps: int, pairs: list[tuple[int, int]], ks: list[int]) -> dict[str, np.ndarray]:
    """Every transition metric from column means `m` (..., columns) laid out as in `_columns`; `ks` are the
    group's distinct option counts (empty: not adjusted for chance)."""
    s, p = n_steps, len(pairs)
    i_from = np.array([a for a, _ in pairs])
    i_to = np.array([b for _, b in pairs])
    acc_from, acc_to = m[..., i_from], m[..., i_to]
    out = {"acc_from": acc_from, "acc_to": acc_to, "forgetting": m[..., s : s + p],
           "backward_transfer": m[..., s + p : s + 2 * p], "acc_change": acc_to - acc_from}  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        out["relative_forgetting"] = np.where(acc_from > 0, out["forgetting"] / acc_from, np.nan)
    if not ks:
        nan = np.full(acc_to.shape, np.nan)
        return out | {k: nan for k in ("forgetting_adj", "backward_transfer_adj", "acc_from_adj", "acc_to_adj",
                                       "chance")}  # fmt: skip
    chance, adj = np.zeros(acc_to.shape), np.zeros(m[..., :s].shape)
    for i, k in enumerate(ks):  # the items with k options: weight w, mean of c·[k_q = k] per checkpoint
        start = s + 2 * p + i * (s + 1)
        w, a = m[..., start][..., None], m[..., start + 1 : start + 1 + s]
        # w · (1 − A_k(s))(1 − A_k(t)) = (w − a(s))(w − a(t)) / w; w = 0 is a resample without these items
        expected = (w - a[..., i_from]) * (w - a[..., i_to]) / np.where(w > 0, w, 1.0)
        chance += np.where(w > 0, expected, 0.0) / (k - 1)
        adj += (k * a - w) / (k - 1)
    out["chance"] = chance
    out["forgetting_adj"] = np.maximum(0.0, out["forgetting"] - chance)
    out["backward_transfer_adj"] = np.maximum(0.0, out["backward_transfer"] - chance)
    out["acc_from_adj"] = np.maximum(0.0, adj[..., i_from])
    out["acc_to_adj"] = np.maximum(0.0, adj[..., i_to])
    return out


def _columns(c: np.ndarray, k: np.ndarray, pairs: list[tuple[int, int]], ks: list[int]) -> np.ndarray:
    """Per-item columns whose means give every metric: c per checkpoint, 1→0 and 0→1 per pair, then for each
    option count in `ks` its indicator and c times it per checkpoint."""
    i_from = [a for a, _ in pairs]
    i_to = [b for _, b in pairs]
    cf, ct = c[:, i_from], c[:, i_to]
    parts = [c, cf * (1.0 - ct), (1.0 - cf) * ct]
    for value in ks:
        w = (k == value).astype(np.float64)[:, None]
        parts += [w, c * w]
    return np.concatenate(parts, axis=1)


def adjustment(k: np.ndarray) -> tuple[list[int], str | None]:
    """(distinct option counts to adjust with, or [] with the reason there is no chance adjustment)."""
    mcq = int((k >= 2).sum())
    if len(k) and mcq == len(k):
        return sorted(int(v) for v in np.unique(k)), None
    return [], OPEN if mcq == 0 else MIXED.format(open=len(k) - mcq, mcq=mcq)


def group_transitions(res: Results, g: Group, boot: Bootstrap) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One group's transition rows, and the bootstrap replicates of F and BT (for FUAR)."""
    pairs = checkpoint_pairs(res.n_steps)
    c = res.correct[g.rows].astype(np.float64)
    k = res.items["k"].to_numpy()[g.rows]
    ks, reason = adjustment(k)
    x = _columns(c, k, pairs, ks)
    units = res.units(g.rows)
    point = derive(x.mean(axis=0), res.n_steps, pairs, ks)
    reps = derive(boot.means(x, g.key, units), res.n_steps, pairs, ks)
    steps = res.steps
    n = len(g.rows)
    flips = x[:, res.n_steps : res.n_steps + 2 * len(pairs)].sum(axis=0).round().astype(np.int64)
    n_1to0, n_0to1 = flips[: len(pairs)], flips[len(pairs) :]
    table = {
        "kind": g.kind, "probe_type": g.probe_type,
        "from_step": steps[[a for a, _ in pairs]], "to_step": steps[[b for _, b in pairs]],
        "consecutive": np.array([b == a + 1 for a, b in pairs]), "n": n, "n_1to0": n_1to0, "n_0to1": n_0to1,
        "k_min": int(k.min()) if len(k) else 0, "k_max": int(k.max()) if len(k) else 0, "adj_reason": reason,
    }  # fmt: skip
    table |= {name: v for name, v in point.items() if name != "chance"}
    n_right = np.round(point["acc_from"] * n)
    counts = {"acc_to": (np.round(point["acc_to"] * n), n), "forgetting": (n_1to0, n), "backward_transfer": (n_0to1, n),
              "relative_forgetting": (n_1to0, n_right)}  # fmt: skip
    for rate, (hits, total) in counts.items():
        table[f"{rate}_lo"], table[f"{rate}_hi"] = boot.rate_ci(hits, np.broadcast_to(total, n_1to0.shape), reps[rate],
                                                                units)  # fmt: skip
    lo, hi = boot.ci(np.stack([reps[rate] for rate in ("acc_change", "acc_to_adj")], axis=1))  # one sort
    for i, rate in enumerate(("acc_change", "acc_to_adj")):
        table[f"{rate}_lo"], table[f"{rate}_hi"] = lo[i], hi[i]
    for rate in ("forgetting", "backward_transfer"):  # F − E with E at its estimate: F's interval, shifted
        for side in ("_lo", "_hi"):
            table[f"{rate}_adj{side}"] = np.maximum(0.0, table[f"{rate}{side}"] - point["chance"])
    if len(ks) == 1:  # (k A − 1)/(k − 1) is increasing in A: the transform of A's interval
        for side in ("_lo", "_hi"):
            table[f"acc_to_adj{side}"] = np.maximum(0.0, (ks[0] * table[f"acc_to{side}"] - 1.0) / (ks[0] - 1))
    return pd.DataFrame(table), {"forgetting": reps["forgetting"], "backward_transfer": reps["backward_transfer"]}


def all_items_columns(res: Results, g: Group, boot: Bootstrap) -> dict[str, np.ndarray] | None:
    """For a multiple-choice `known` group: the chance-adjusted F and BT over all its items (right and wrong at
    the base), so that E > 0; None for other groups."""
    if g.kind != "known":
        return None
    kinds = res.items["kind"].to_numpy(dtype=object)
    rows = np.nonzero((kinds == "known") & (res.items["probe_type"].to_numpy(dtype=object) == g.probe_type))[0]
    if not adjustment(res.items["k"].to_numpy()[rows])[0]:
        return None
    t, _ = group_transitions(res, Group("known", f"{g.probe_type}/all-items", rows), boot)  # its own resamples
    out = {"n_all_items": t["n"].to_numpy(), "acc_from_all_items": t["acc_from"].to_numpy(),
           "forgetting_all_items": t["forgetting"].to_numpy()}  # fmt: skip
    for name in ALL_ITEMS:
        base = name.removesuffix("_all_items")
        for side in ("", "_lo", "_hi"):
            out[f"{name}{side}"] = t[f"{base}{side}"].to_numpy()
    return out


def transition_tables(res: Results, boot: Bootstrap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transitions, fuar) tables for every group of `res`."""
    frames: list[pd.DataFrame] = []
    reps: Replicates = {}
    for g in res.groups():
        frame, rep = group_transitions(res, g, boot)
        frame = frame.assign(**(all_items_columns(res, g, boot) or {}))
        frames.append(frame)
        reps[(g.kind, g.probe_type)] = (frame, rep)
    table = pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS) if frames else pd.DataFrame(columns=COLUMNS)
    table["n_all_items"] = table["n_all_items"].astype("Int64")
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
        lo, hi, defined = boot.interval(value_b)
        for j in range(n_base):
            rows.append({"probe_type": ptype, "step": res.steps[j + 1], "n_known": int(known[0]["n"].iloc[0]),
                         "n_forgotten_known": int(forgot[j]), "n_acquired_new": int(counts[0][j]),
                         "n_acquired_updated": int(counts[1][j]), "fuar": value[j], "fuar_lo": lo[j],
                         "fuar_hi": hi[j], "fuar_n_boot": int(defined[j]),
                         "fuar_ci_reason": boot.ci_reason(defined[j], value[j], "no acquisition in the others"),
                         "reason": None if denom[j] > 0 else NO_GAIN})  # fmt: skip
    return pd.DataFrame(rows, columns=FUAR_COLUMNS)

