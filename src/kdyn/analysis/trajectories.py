"""Per-item trajectories over checkpoints 0..T (DESIGN.md, "Metric definitions") and consolidation.

- first acquisition: the first checkpoint with c = 1 (the base, for items already right there);
  null when never acquired;
- acquisition windows: maximal runs of consecutive correct checkpoints, as [start_step, end_step];
- flips: number of t with c(t) != c(t − 1);
- consolidated: correct at every checkpoint from the first acquisition to T (an item first acquired at
  the last checkpoint is therefore consolidated); null when never acquired;
- followed: acquired before the last checkpoint, so that at least one later checkpoint shows whether it
  was kept; null when never acquired;
- consolidation rate of a group: consolidated / acquired, over the followed acquisitions only (an item
  first right at the last checkpoint cannot show whether it stays), with a Wilson interval (stats.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from kdyn.analysis.results import Group, Results
from kdyn.analysis.stats import Bootstrap

CONSOLIDATION_COLUMNS = ["kind", "probe_type", "n", "n_ever_acquired", "n_acquired_in_training",
                         "n_never_acquired", "n_acquired_at_last", "n_followed", "n_consolidated",
                         "consolidation_rate", "consolidation_rate_lo",
                         "consolidation_rate_hi", "mean_flips", "mean_windows", "final_acc", "reason"]  # fmt: skip


class Trajectories:
    """Trajectory features of every item of a correctness matrix (items x checkpoints)."""

    def __init__(self, correct: np.ndarray) -> None:
        c = np.asarray(correct, dtype=bool)
        n, s = c.shape
        self.acquired = c.any(axis=1)
        self.first = np.where(self.acquired, np.argmax(c, axis=1), -1)
        self.flips = (c[:, 1:] != c[:, :-1]).sum(axis=1)
        wrong = ~c
        last_wrong = np.where(wrong.any(axis=1), s - 1 - np.argmax(wrong[:, ::-1], axis=1), -1)
        self.consolidated = self.acquired & (last_wrong < self.first)
        self.followed = self.acquired & (self.first < s - 1)  # a later checkpoint shows whether it was kept
        padded = np.zeros((n, s + 2), dtype=bool)
        padded[:, 1:-1] = c
        starts = padded[:, 1:-1] & ~padded[:, :-2]
        ends = padded[:, 1:-1] & ~padded[:, 2:]
        self.n_windows = starts.sum(axis=1)
        # np.nonzero walks row-major, so the k-th start and k-th end of a row belong to one window
        self.window_start = np.nonzero(starts)[1]
        self.window_end = np.nonzero(ends)[1]
        self.final = c[:, -1]
        self.base = c[:, 0]
        self.n_correct = c.sum(axis=1)


def trajectory_table(res: Results, traj: Trajectories) -> pa.Table:
    """trajectories.parquet: one row per item."""
    steps = np.asarray(res.steps)
    offsets = np.concatenate([[0], np.cumsum(traj.n_windows)]).astype(np.int32)
    windows = pa.ListArray.from_arrays(
        pa.array(offsets),
        pa.StructArray.from_arrays([pa.array(steps[traj.window_start]), pa.array(steps[traj.window_end])],
                                   names=["start_step", "end_step"]),  # fmt: skip
    )
    never = ~traj.acquired
    first_step = steps[np.maximum(traj.first, 0)]
    return pa.table({
        "probe_id": pa.array(res.items["item_id"].to_numpy(dtype=object), pa.string()),
        "kind": pa.array(res.analysis_kinds(), pa.string()),
        "probe_type": pa.array(res.items["probe_type"].to_numpy(dtype=object), pa.string()),
        "correct_at_base": pa.array(traj.base),
        "first_acquired_step": pa.array(first_step, mask=never),
        "windows": windows,
        "n_windows": pa.array(traj.n_windows.astype(np.int64)),
        "flips": pa.array(traj.flips.astype(np.int64)),
        "consolidated": pa.array(traj.consolidated, mask=never),
        "followed": pa.array(traj.followed, mask=never),
        "final_correct": pa.array(traj.final),
        "n_correct": pa.array(traj.n_correct.astype(np.int64)),
    })  # fmt: skip


def consolidation_table(res: Results, traj: Trajectories, boot: Bootstrap,
                        groups: list[Group] | None = None) -> pd.DataFrame:  # fmt: skip
    """Per group (default: every kind x probe type): how many items were ever acquired, how many of the followed
    acquisitions (a later checkpoint exists) stayed, and the consolidation rate."""
    rows = []
    for g in res.groups() if groups is None else groups:
        acq = traj.acquired[g.rows]
        followed = traj.followed[g.rows]
        cons = traj.consolidated[g.rows] & followed
        units = res.units(g.rows)
        reps = boot.means(np.stack([followed, cons], axis=1).astype(np.float64), g.key, units)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate_b = np.where(reps[:, 0] > 0, reps[:, 1] / reps[:, 0], np.nan)
        n_acq, n_fol, n_cons = int(acq.sum()), int(followed.sum()), int(cons.sum())
        lo, hi = boot.rate_ci(np.array([n_cons]), np.array([n_fol]), rate_b[:, None], units)
        reason = None
        if not n_acq:
            reason = "no item of this group was ever correct (rate = 0/0)"
        elif not n_fol:
            reason = "every acquisition is at the last checkpoint: nothing shows yet whether it is kept (rate = 0/0)"
        rows.append({
            "kind": g.kind, "probe_type": g.probe_type, "n": len(g.rows), "n_ever_acquired": n_acq,
            "n_acquired_in_training": int((acq & ~traj.base[g.rows]).sum()),
            "n_never_acquired": int((~acq).sum()), "n_acquired_at_last": n_acq - n_fol, "n_followed": n_fol,
            "n_consolidated": n_cons, "consolidation_rate": n_cons / n_fol if n_fol else np.nan,
            "consolidation_rate_lo": lo[0], "consolidation_rate_hi": hi[0],
            "mean_flips": float(traj.flips[g.rows].mean()), "mean_windows": float(traj.n_windows[g.rows].mean()),
            "final_acc": float(traj.final[g.rows].mean()), "reason": reason,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=CONSOLIDATION_COLUMNS)
