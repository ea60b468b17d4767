"""Loss vs knowledge (DESIGN.md): accuracy curves, Spearman, AUROC of NLL, loss- vs knowledge-optimal.

- curves.parquet: per group and checkpoint, accuracy with its CI (Wilson), chance-adjusted accuracy
  (multiple choice; with one k the same transform of A's interval, else a bootstrap CI), the loss curves
  (eval_loss: the training-set loss measured at the checkpoint; train_loss: the train log's since the
  previous one), the group's mean per-fact NLL, and the AUROC of per-fact NLL predicting correctness
  (lower NLL ranked as correct; 0.5 = uninformative).
  Compositional probes are left out of the NLL and the AUROC (with a reason): their fact_id is the first
  hop, whose NLL says nothing about the composed fact, and no fact of the benchmark states the composition.
- loss_knowledge.parquet: per group, Spearman rho between −loss and accuracy over the checkpoints where
  the loss is defined (with a CI from resampling items or entities; an interval defined in under 95% of the
  replicates is null, with the count and the reason), the same against the group's mean fact NLL (which
  includes the base), the checkpoints where loss fell while accuracy fell (consecutive checkpoints),
  and the checkpoint a loss-based stopping rule picks (lowest loss) against the best-accuracy one.
The loss curve (`loss_source`) is the training-set loss at every checkpoint, the base included
(eval_loss.parquet); for runs without it, the training loss (load.py: mean over the logging steps since
the previous checkpoint, NaN at the base); without a train log either, the group's mean fact NLL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdyn.analysis.results import Group, Results
from kdyn.analysis.stats import Bootstrap, auroc, spearman_rows

CURVE_COLUMNS = ["kind", "probe_type", "step", "epoch", "n", "acc", "acc_lo", "acc_hi", "acc_adj", "acc_adj_lo",
                 "acc_adj_hi", "eval_loss", "train_loss", "fact_nll", "auroc_nll", "auroc_reason"]  # fmt: skip
LK_COLUMNS = ["kind", "probe_type", "loss_source", "n_checkpoints", "spearman", "spearman_lo", "spearman_hi",
              "spearman_n_boot", "spearman_ci_reason", "spearman_fact_nll", "spearman_fact_nll_lo",
              "spearman_fact_nll_hi", "n_loss_fell_acc_fell",
              "loss_fell_acc_fell_steps", "loss_optimal_step", "knowledge_optimal_step", "acc_at_loss_optimal",
              "acc_at_knowledge_optimal", "acc_lost_by_loss_stopping", "acc_lost_lo", "acc_lost_hi",
              "reason"]  # fmt: skip


COMPOSITIONAL_NLL = ("compositional probes: their fact_id is the first hop, whose NLL is not the composed fact's; "
                     "left out of the NLL and the AUROC")  # fmt: skip


def group_accuracy(res: Results, g: Group, boot: Bootstrap) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(acc, acc replicates, adjusted acc, adjusted replicates) over checkpoints; adjusted is NaN unless MCQ."""
    c = res.correct[g.rows].astype(np.float64)
    k = res.items["k"].to_numpy()[g.rows].astype(np.float64)
    units = res.units(g.rows)
    if not (k >= 2).all():
        reps = boot.means(c, g.key, units)
        nan = np.full(res.n_steps, np.nan)
        return c.mean(axis=0), reps, nan, np.full_like(reps, np.nan)
    x = np.concatenate([c, (1.0 / (k - 1.0))[:, None], c * (k / (k - 1.0))[:, None]], axis=1)
    reps = boot.means(x, g.key, units)
    s = res.n_steps
    adj = np.maximum(0.0, x.mean(axis=0)[s + 1 :] - x.mean(axis=0)[s])
    adj_b = np.maximum(0.0, reps[:, s + 1 :] - reps[:, [s]])
    return c.mean(axis=0), reps[:, :s], adj, adj_b


def group_fact_nll(res: Results, g: Group) -> np.ndarray:
    """Mean NLL over the group's distinct facts per checkpoint; NaN where none is known (and for compositional
    probes, whose fact is the first hop)."""
    if res.nll is None or res.composed(g.rows).all():
        return np.full(res.n_steps, np.nan)
    facts = res.items["fact_id"].to_numpy(dtype=object)[g.rows]
    keep = pd.Series(facts).notna().to_numpy() & ~pd.Series(facts).duplicated().to_numpy()
    nll = res.nll[g.rows[keep]]
    seen = np.isfinite(nll)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen.any(axis=0), np.where(seen, nll, 0.0).sum(axis=0) / seen.sum(axis=0), np.nan)


def _auroc(res: Results, g: Group, j: int) -> tuple[float, str | None]:
    if res.nll is None:
        return np.nan, "no per-fact NLL (fact_loss.parquet) in the input"
    if res.composed(g.rows).all():
        return np.nan, COMPOSITIONAL_NLL
    nll = np.where(res.composed(g.rows), np.nan, res.nll[g.rows, j])
    if not np.isfinite(nll).any():
        return np.nan, "these probes have no per-fact NLL"
    label = res.correct[g.rows, j]
    if label[np.isfinite(nll)].all() or not label[np.isfinite(nll)].any():
        return np.nan, "all items in one class (all right or all wrong) at this checkpoint"
    return auroc(-nll, label), None


def curves_table(res: Results, boot: Bootstrap) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """curves.parquet, and per group (acc, acc replicates, fact NLL) for `loss_knowledge_table`."""
    frames, cache = [], {}
    epochs = res.epochs if res.epochs is not None else np.full(res.n_steps, np.nan)
    train = res.loss if res.loss is not None else np.full(res.n_steps, np.nan)
    measured = res.eval_loss if res.eval_loss is not None else np.full(res.n_steps, np.nan)
    for g in res.groups():
        acc, acc_b, adj, adj_b = group_accuracy(res, g, boot)
        nll = group_fact_nll(res, g)
        cache[g.key] = (acc, acc_b, nll)
        n = len(g.rows)
        lo, hi = boot.rate_ci(np.round(acc * n), np.full(res.n_steps, n), acc_b, res.units(g.rows))
        ks = np.unique(res.items["k"].to_numpy()[g.rows])
        if len(ks) == 1 and ks[0] >= 2:  # one k: (k A − 1)/(k − 1) of A's interval (transitions.py does the same)
            alo, ahi = (np.maximum(0.0, (ks[0] * b - 1.0) / (ks[0] - 1)) for b in (lo, hi))
        else:
            alo, ahi = boot.ci(adj_b)
        aurocs = [_auroc(res, g, j) for j in range(res.n_steps)]
        frames.append(pd.DataFrame({
            "kind": g.kind, "probe_type": g.probe_type, "step": res.steps, "epoch": epochs, "n": len(g.rows),
            "acc": acc, "acc_lo": lo, "acc_hi": hi, "acc_adj": adj, "acc_adj_lo": alo, "acc_adj_hi": ahi,
            "eval_loss": measured, "train_loss": train, "fact_nll": nll,
            "auroc_nll": [a for a, _ in aurocs], "auroc_reason": [r for _, r in aurocs],
        }))  # fmt: skip
    table = pd.concat(frames, ignore_index=True)[CURVE_COLUMNS] if frames else pd.DataFrame(columns=CURVE_COLUMNS)
    return table, cache


def _spearman(loss: np.ndarray, acc: np.ndarray, acc_b: np.ndarray,
              boot: Bootstrap) -> tuple[float, float, float, str | None, int, str | None]:  # fmt: skip
    """rho(−loss, A) over checkpoints with a loss, its CI from the accuracy replicates, or a reason; then the
    number of replicates where rho is defined (accuracy not constant) and why the CI is undefined, if it is."""
    ok = np.isfinite(loss)
    if ok.sum() < 3:
        return np.nan, np.nan, np.nan, "fewer than 3 checkpoints with a loss value", 0, None
    if np.ptp(acc[ok]) == 0:
        return np.nan, np.nan, np.nan, "accuracy does not change over the checkpoints with a loss value", 0, None
    if np.ptp(loss[ok]) == 0:
        return np.nan, np.nan, np.nan, "the loss does not change over the checkpoints", 0, None
    rho = float(spearman_rows(-loss[ok], acc[ok][None, :])[0])
    lo, hi, defined = boot.interval(spearman_rows(-loss[ok], acc_b[:, ok]))
    reason = boot.ci_reason(defined, rho, "in the others the resampled accuracy is the same at every checkpoint")
    return rho, float(lo), float(hi), None, int(defined), reason


def checkpoint_loss(res: Results, group_nll: np.ndarray) -> tuple[np.ndarray, str]:
    """The loss curve and its name: the measured training-set loss, else the train log's, else the group's NLL."""
    for series, name in ((res.eval_loss, "eval_loss"), (res.loss, "train_loss")):
        if series is not None and np.isfinite(series).any():
            return series, name
    return group_nll, "fact_nll"


def loss_knowledge_table(res: Results, cache: dict[str, tuple], boot: Bootstrap) -> pd.DataFrame:
    """loss_knowledge.parquet: one row per group."""
    rows = []
    for g in res.groups():
        acc, acc_b, nll = cache[g.key]
        loss, source = checkpoint_loss(res, nll)
        row = {"kind": g.kind, "probe_type": g.probe_type, "loss_source": source,
               "n_checkpoints": int(np.isfinite(loss).sum())}  # fmt: skip
        (row["spearman"], row["spearman_lo"], row["spearman_hi"], reason, row["spearman_n_boot"],
         row["spearman_ci_reason"]) = _spearman(loss, acc, acc_b, boot)
        fn = _spearman(nll, acc, acc_b, boot)
        row["spearman_fact_nll"], row["spearman_fact_nll_lo"], row["spearman_fact_nll_hi"] = fn[:3]
        ok = np.nonzero(np.isfinite(loss))[0]
        fell = [int(j) for a, j in zip(ok[:-1], ok[1:]) if j == a + 1 and loss[j] < loss[a] and acc[j] < acc[a]]
        row["n_loss_fell_acc_fell"] = len(fell) if len(ok) >= 2 else np.nan
        row["loss_fell_acc_fell_steps"] = [res.steps[j].item() for j in fell]
        best = int(np.argmax(acc))
        row |= {"knowledge_optimal_step": res.steps[best].item(), "acc_at_knowledge_optimal": acc[best]}
        if len(ok):
            pick = int(ok[np.argmin(loss[ok])])
            lost_b = acc_b[:, best] - acc_b[:, pick]
            lo, hi = boot.ci(lost_b)
            row |= {"loss_optimal_step": res.steps[pick].item(), "acc_at_loss_optimal": acc[pick],
                    "acc_lost_by_loss_stopping": acc[best] - acc[pick], "acc_lost_lo": lo,
                    "acc_lost_hi": hi}  # fmt: skip
        else:
            row |= {"loss_optimal_step": None, "acc_at_loss_optimal": np.nan, "acc_lost_by_loss_stopping": np.nan,
                    "acc_lost_lo": np.nan, "acc_lost_hi": np.nan}  # fmt: skip
            reason = "no loss curve: none of eval_loss.parquet, train_log.parquet or per-fact NLL for this group"
        row["reason"] = reason
        rows.append(row)
    frame = pd.DataFrame(rows, columns=LK_COLUMNS)
    step_dtype = "Float64" if res.steps.dtype.kind == "f" else "Int64"
    frame["loss_optimal_step"] = frame["loss_optimal_step"].astype(step_dtype)
    frame["n_loss_fell_acc_fell"] = frame["n_loss_fell_acc_fell"].astype("Int64")
    return frame
