"""Section 8, findings in words: sentences generated from the analysis numbers and their CIs.

Each finding states its numbers (value, 95% CI, n) and only claims what they support: a change is
called detectable when its CI excludes 0; a metric that could not be computed says why (the analysis's
`reason`), never 0. Order: what was learnt, how it relates to the loss, what was broken.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kdyn.analysis.results import KNOWN_WRONG_AT_BASE
from kdyn.report.acquisition import all_items_phrase, n_followed
from kdyn.report.data import RunData
from kdyn.report.knowledge import base_final, checkpoint_loss
from kdyn.report.text import (LEARNED_KINDS, arrow, ci_of, group_label, is_num, learning_rows, learning_words, num,
                              pct, plural, step_label, with_ci)  # fmt: skip

LISTED = 4  # groups named in one sentence before "and N more"


def sign_of_ci(row: Any, name: str, lo: str | None = None, hi: str | None = None) -> int:
    """+1 / −1 when the CI of `name` lies above / below 0, else 0."""
    low, high = row[lo or f"{name}_lo"], row[hi or f"{name}_hi"]
    if is_num(low) and low > 0:
        return 1
    if is_num(high) and high < 0:
        return -1
    return 0


def listing(parts: list[str], limit: int = LISTED) -> str:
    """'a, b, c and 2 more'."""
    shown = ", ".join(parts[:limit])
    return shown + (f" and {len(parts) - limit} more" if len(parts) > limit else "")


def new_fact_findings(run: RunData) -> list[str]:
    bf = base_final(run).set_index(["kind", "probe_type"])
    out, gap_said = [], False
    for kind in LEARNED_KINDS:
        if kind not in bf.index.get_level_values(0):
            continue
        part = bf.loc[kind]
        if (part["acc_to"] == 0).all() and (part["acc_from"] == 0).all():
            out.append(f"No {kind} fact was answered right in any probe form, at the base or at step "
                       f"{step_label(run.final_step)} (n={int(part['n'].max())} per probe type).")  # fmt: skip
            continue
        bits = []
        for ptype, r in part.iterrows():
            adj = f"; chance-adjusted {ci_of(r, 'acc_to_adj')}" if r["k_min"] >= 2 else ""
            bits.append(f"{ptype} {num(r['acc_from'], 2)}→{ci_of(r, 'acc_to')} (n={int(r['n'])}{adj})")
        sentence = f"{kind.capitalize()} facts, accuracy base→step {step_label(run.final_step)}: " + ", ".join(bits) + "."
        if "cloze" in part.index and "qa" in part.index:
            cz, qa = part.loc["cloze"], part.loc["qa"]
            if is_num(cz["acc_to_lo"]) and is_num(qa["acc_to_hi"]) and cz["acc_to_lo"] > qa["acc_to_hi"]:
                sentence += (f" Cloze above QA again ({num(cz['acc_to'], 2)} vs {num(qa['acc_to'], 2)}, intervals "
                             f"apart)." if gap_said else
                             f" The training sentence is completed more often than a held-out question is answered "
                             f"({num(cz['acc_to'], 2)} vs {num(qa['acc_to'], 2)}, intervals apart): memorised more "
                             f"than extractable.")  # fmt: skip
                gap_said = True
        out.append(sentence)
    cons = run.tables["consolidation"]
    learned = learning_rows(cons).assign(n_followed=lambda d: n_followed(d))
    n_acq, n_fol = int(learned["n_ever_acquired"].sum()), int(learned["n_followed"].sum())
    n_cons = int(learned["n_consolidated"].sum())
    what = learning_words(learned)
    if n_fol:
        top = learned[learned["n_followed"] > 0].sort_values("n_followed", ascending=False, kind="stable")
        per = [f"{group_label(r['kind'], r['probe_type'])} {ci_of(r, 'consolidation_rate')} (n={int(r['n_followed'])})"
               for _, r in top.iterrows()]  # fmt: skip
        last = (f"; the {n_acq - n_fol} first right at the last checkpoint are not counted, as nothing shows yet "
                f"whether they stay" if n_acq > n_fol else "")  # fmt: skip
        out.append(f"{pct(n_cons / n_fol)} of the {what} probes answered right before the last checkpoint were "
                   f"consolidated ({n_cons} of {n_fol}: right at every checkpoint from then on{last}); by group "
                   f"{listing(per, 3)}.")  # fmt: skip
    elif n_acq:
        out.append(f"Every {what} probe ever answered right was first right at the last checkpoint, so the "
                   f"consolidation rate is undefined (nothing shows yet whether they stay).")  # fmt: skip
    elif len(learned):
        out.append(f"No {what} probe was ever answered right, so the consolidation rate is undefined (0 of 0).")
    return out


def loss_findings(run: RunData) -> list[str]:
    loss, name = checkpoint_loss(run)
    values = loss.to_numpy(dtype=float)
    pairs = [(a, a + 1) for a in range(len(values) - 1) if np.isfinite(values[a]) and np.isfinite(values[a + 1])]
    if not np.isfinite(values).any():
        return ["There is no loss curve in this input (no train_log.parquet and no per-fact NLL), so loss and "
                "knowledge cannot be compared."]  # fmt: skip
    if not pairs:
        return [f"The {name} is defined at fewer than two consecutive checkpoints, so loss and accuracy cannot be "
                f"compared between checkpoints."]  # fmt: skip
    fell = sum(values[b] < values[a] for a, b in pairs)
    lk = run.tables["loss_knowledge"]
    lk = lk[lk["kind"] != KNOWN_WRONG_AT_BASE]
    hit = lk[lk["n_loss_fell_acc_fell"].fillna(0) > 0]
    hit = hit.assign(_new=hit["kind"] != "new").sort_values(["_new", "n_loss_fell_acc_fell"], ascending=[True, False],
                                                           kind="stable")  # new facts first, then the most often
    parts = [f"{group_label(r.kind, r.probe_type)} at {int(r.n_loss_fell_acc_fell)}" for r in hit.itertuples()]
    ok = values[np.isfinite(values)]
    sentence = f"The {name} fell at {fell} of {len(pairs)} checkpoints ({arrow(ok[0], ok[-1])}); "
    if len(hit):
        sentence += f"accuracy fell at some of those same checkpoints in {plural(len(hit), 'group')}: {listing(parts)}."
    else:
        sentence += "no group's accuracy fell at any of them."
    out = [sentence]
    rho = []
    for r in lk[lk["kind"].isin(("new", "known"))].itertuples():
        if is_num(r.spearman):
            s = sign_of_ci(r._asdict(), "spearman")
            word = {1: "tracks it", -1: "moves against it", 0: "no clear relation"}[s]
            why = getattr(r, "spearman_ci_reason", None)
            if isinstance(why, str) and why:  # too few defined replicates: no interval, no verdict
                word = why.replace("interval undefined: defined in only", "no interval: ρ is defined in only")
            rho.append(f"{group_label(r.kind, r.probe_type)} {with_ci(r.spearman, r.spearman_lo, r.spearman_hi)} ({word})")
    if rho:
        out.append(f"Spearman ρ between −{name} and accuracy over checkpoints: {', '.join(rho)}.")
    missing = lk[~lk["spearman"].map(is_num)]
    if len(missing):
        reasons = missing["reason"].fillna("not computable").value_counts()
        out.append(f"ρ(−loss, accuracy) is undefined for {plural(len(missing), 'group')}: "
                   + "; ".join(f"{reason} ({n})" for reason, n in reasons.items()) + ".")  # fmt: skip
    out += stopping_findings(lk)
    return out


def stopping_findings(lk: pd.DataFrame) -> list[str]:
    opt = lk["loss_optimal_step"].dropna()
    if not len(opt):
        return []
    stop = f"Stopping at the lowest-loss checkpoint (step {step_label(opt.iloc[0])})"
    lost = [r for r in lk.itertuples() if is_num(r.acc_lost_lo) and r.acc_lost_lo > 0]
    if not lost:
        return [f"{stop} loses no accuracy detectably in any group (largest point estimate "
                f"{num(lk['acc_lost_by_loss_stopping'].max(), 2)}; every interval includes 0)."]  # fmt: skip
    parts = [f"{group_label(r.kind, r.probe_type)} {num(r.acc_at_loss_optimal, 2)} instead of "
             f"{num(r.acc_at_knowledge_optimal, 2)} at step {step_label(r.knowledge_optimal_step)} (lost "
             f"{with_ci(r.acc_lost_by_loss_stopping, r.acc_lost_lo, r.acc_lost_hi)})" for r in lost]  # fmt: skip
    return [f"{stop} would lose accuracy detectably in {plural(len(lost), 'group')}: {listing(parts, 3)}."]


def broken_findings(run: RunData) -> list[str]:
    bf = base_final(run)
    out = []
    known = bf[bf["kind"] == "known"]
    if len(known):
        detected = [r["probe_type"] for _, r in known.iterrows() if sign_of_ci(r, "forgetting") > 0]
        bits = ", ".join(f"{r['probe_type']} F={ci_of(r, 'forgetting')} (n={int(r['n'])}{all_items_phrase(r)})"
                         for _, r in known.iterrows())  # fmt: skip
        verdict = f"detectable forgetting in {', '.join(detected)}" if detected else "no detectable forgetting"
        out.append(f"Known facts the base model got right, forgotten by step {step_label(run.final_step)}: {bits} — "
                   f"{verdict}.")  # fmt: skip
    fuar = run.tables["fuar"]
    fuar = fuar[fuar["step"] == run.final_step]
    if len(fuar):
        bits = [f"{r['probe_type']} {ci_of(r, 'fuar')} ({int(r['n_forgotten_known'])} forgotten / "
                f"{int(r['n_acquired_new']) + int(r['n_acquired_updated'])} acquired)" if is_num(r["fuar"])
                else f"{r['probe_type']} undefined ({r['reason']})" for _, r in fuar.iterrows()]  # fmt: skip
        out.append(f"FUAR (forgotten known per new or updated fact acquired; lower is better): {', '.join(bits)}.")
    for _, r in bf[bf["kind"] == "skill"].iterrows():
        verdict = {1: "a detectable gain", -1: "a detectable drop", 0: "no detectable change"}[sign_of_ci(r, "acc_change")]
        out.append(f"Skill ({r['probe_type']}): accuracy {arrow(r['acc_from'], r['acc_to'])}, change "
                   f"{ci_of(r, 'acc_change')} (n={int(r['n'])}): {verdict}.")  # fmt: skip
    return out


def run_findings(run: RunData, extra: list[str] | None = None) -> tuple[list[str], list[str]]:
    """All findings of one run in reading order (circuit findings passed in by the caller), and the few for the
    top of the page: what new facts did, what known facts and skills lost, how the loss related to that."""
    new, loss, broken = new_fact_findings(run), loss_findings(run), broken_findings(run)
    glance = new[:1] + [f for f in broken if not f.startswith("FUAR")][:2] + loss[:1]
    return new + loss + broken + list(extra or []), glance
