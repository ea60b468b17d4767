"""Sections 4 and 5: when facts were acquired and how long they stayed; what training broke.

4. The acquisition raster (probes x checkpoints, sorted by first acquisition, coloured by kind) from
   probes.parquet and trajectories.parquet; window lengths and consolidation rates (consolidation.parquet);
   entity-level counts per epoch (epoch_counts.parquet).
5. Forgetting on `known` facts the base model got right, the list of those forgotten (with the model's
   answer), and arithmetic skill over checkpoints, from curves.parquet and transitions.parquet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from kdyn.analysis.results import KIND_ORDER, KNOWN_WRONG_AT_BASE, TYPE_ORDER
from kdyn.report.data import RunData
from kdyn.report.figures import TYPE_STYLES, Canvas, ci_line, kind_color, new_figure, step_axis, styled
from kdyn.report.html import Section, details, table, tag
from kdyn.report.knowledge import base_final
from kdyn.report.text import (LEARNED_KINDS, arrow, ci_of, count, group_label, is_num, learning_rows, learning_words, num,
                              ordered_kinds, pct, plural, step_label)  # fmt: skip

WRONG = (0.95, 0.96, 0.97)
MAX_LISTED = 25  # forgotten known facts listed
MAX_ENTITIES = 300  # rows of the entity table


def knowledge_probes(run: RunData) -> pd.DataFrame:
    """Trajectory rows of knowledge probes (not skills), with their ordering keys."""
    traj = run.tables["trajectories"]
    traj = traj[traj["kind"] != "skill"].copy()
    first = pd.to_numeric(traj["first_acquired_step"], errors="coerce")
    traj["_first"] = first.fillna(np.inf)
    traj["_kind"] = [(KIND_ORDER + (k,)).index(k) for k in traj["kind"]]
    return traj.sort_values(["_first", "n_correct", "_kind", "probe_id"], ascending=[True, False, True, True],
                            kind="stable")  # fmt: skip


@styled
def raster_figure(run: RunData, traj: pd.DataFrame) -> Any:
    types = sorted(dict.fromkeys(traj["probe_type"]), key=lambda t: (TYPE_ORDER + (t,)).index(t))
    fig, axes = new_figure(len(types), ncols=4, height=4.2)
    steps = list(run.correct.columns)
    for ax, ptype in zip(axes, types):
        part = traj[traj["probe_type"] == ptype]
        c = run.correct.loc[part["probe_id"]].to_numpy(dtype=bool)  # (probes, checkpoints)
        colors = np.array([to_rgb(kind_color(k)) for k in part["kind"]])  # (probes, 3)
        img = np.where(c[:, :, None], colors[:, None, :], np.array(WRONG)[None, None, :])
        ax.imshow(img, aspect="auto", interpolation="nearest", extent=(-0.5, len(steps) - 0.5, len(part) - 0.5, -0.5))
        ax.set_xticks(range(len(steps)) if len(steps) <= 12 else range(0, len(steps), int(np.ceil(len(steps) / 12))))
        ax.set_xticklabels([step_label(steps[i]) for i in ax.get_xticks().astype(int)])
        ax.set_title(f"{ptype} ({len(part)} probes)")
        ax.set_xlabel("checkpoint (step)")
        ax.grid(False)
    axes[0].set_ylabel("probes, sorted by first acquisition")
    kinds = ordered_kinds(traj["kind"])
    fig.legend(handles=[Patch(color=kind_color(k), label=k.replace("_", " ")) for k in kinds] +
               [Patch(facecolor=WRONG, edgecolor="#9ca3af", label="wrong")], loc="outside lower center",
               ncol=len(kinds) + 1, frameon=False)  # fmt: skip
    return fig


def followed(traj: pd.DataFrame) -> pd.Series:
    """Probes acquired before the last checkpoint (a later one shows whether they stayed); older analyses lack
    the column, and then every acquisition counts."""
    col = traj["followed"] if "followed" in traj else traj["n_correct"] > 0
    return col.fillna(False).astype(bool)


def raster_caption(run: RunData, traj: pd.DataFrame) -> str:
    ever = traj["n_correct"] > 0
    at_base = traj["correct_at_base"].astype(bool)
    in_training = ever & ~at_base
    later = in_training & followed(traj)
    kept = later & traj["consolidated"].fillna(False).astype(bool)
    firsts = pd.to_numeric(traj.loc[in_training, "first_acquired_step"])
    when = f", at median step {num(float(firsts.median()), 0)}" if len(firsts) else ""
    text = (f"{len(traj)} knowledge probes × {len(run.steps)} checkpoints: {int(ever.sum())} were right at some "
            f"checkpoint ({int(at_base.sum())} already at the base); {int(in_training.sum())} were first acquired "
            f"during training{when}")  # fmt: skip
    if in_training.any():
        last = int((in_training & ~later).sum())
        text += f"; of the {int(later.sum())} of those with a later checkpoint, {int(kept.sum())} stayed right from then on"
        text += f" ({last} first right at the last checkpoint cannot show it yet)" if last else ""
    return text + ". Coloured cell = right (colour = kind), grey = wrong."


def window_lengths(run: RunData, traj: pd.DataFrame) -> pd.DataFrame:
    """One row per acquisition window: kind, length in checkpoints, still open at the final checkpoint."""
    index = {s: i for i, s in enumerate(run.steps)}
    rows = []
    for kind, windows in zip(traj["kind"], traj["windows"]):
        for w in windows if windows is not None else []:
            start, end = index[w["start_step"]], index[w["end_step"]]
            rows.append({"kind": kind, "length": end - start + 1, "open": end == len(run.steps) - 1,
                         "from_base": start == 0})  # fmt: skip
    return pd.DataFrame(rows, columns=["kind", "length", "open", "from_base"])


@styled
def windows_figure(run: RunData, windows: pd.DataFrame) -> Any:
    fig, (ax1, ax2) = new_figure(2, ncols=2, height=3.0)
    trained = windows[~windows["from_base"]]
    bins = np.arange(1, len(run.steps) + 1) - 0.5
    kinds = ordered_kinds(trained["kind"])
    if kinds:
        ax1.hist([trained.loc[trained["kind"] == k, "length"] for k in kinds], bins=np.append(bins, bins[-1] + 1),
                 stacked=True, color=[kind_color(k) for k in kinds], label=[k.replace("_", " ") for k in kinds])  # fmt: skip
        ax1.legend(frameon=False)
    else:
        ax1.text(0.5, 0.5, "no probe became right during training", ha="center", va="center", transform=ax1.transAxes)
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_xlabel("window length (consecutive checkpoints right)")
    ax1.set_ylabel("acquisition windows")
    ax1.set_title("acquisition windows begun during training")
    cons = run.tables["consolidation"]
    cons = cons[~cons["kind"].isin((KNOWN_WRONG_AT_BASE, "skill"))].reset_index(drop=True)
    y = np.arange(len(cons))[::-1]
    rate = cons["consolidation_rate"].to_numpy(dtype=float)
    err = np.vstack([rate - cons["consolidation_rate_lo"].to_numpy(dtype=float),
                     cons["consolidation_rate_hi"].to_numpy(dtype=float) - rate])  # fmt: skip
    ax2.barh(y, np.nan_to_num(rate), xerr=np.nan_to_num(err), color=[kind_color(k) for k in cons["kind"]],
             alpha=0.85, error_kw={"ecolor": "#374151", "capsize": 2, "linewidth": 0.8})  # fmt: skip
    for yi, n_cons, n_acq, n_fol in zip(y, cons["n_consolidated"], cons["n_ever_acquired"], n_followed(cons)):
        text = f"{n_cons}/{n_fol}" if n_fol else "right only at the last step" if n_acq else "never right"
        ax2.text(1.02, yi, text, va="center", fontsize=7.5, color="#374151")
    ax2.set_ylim(-0.6, max(len(cons), 4) - 0.4)  # a few groups keep bars of a normal height
    ax2.set_yticks(y)
    ax2.set_yticklabels([group_label(k, t) for k, t in zip(cons["kind"], cons["probe_type"])])
    ax2.set_xlim(0, 1.18)
    ax2.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax2.set_xlabel("consolidation rate (kept / right before the last step), 95% CI")
    ax2.set_title("consolidation")
    return fig


def n_followed(cons: pd.DataFrame) -> pd.Series:
    """Acquisitions with a later checkpoint per group (the consolidation rate's n); older analyses: every one."""
    return (cons["n_followed"] if "n_followed" in cons else cons["n_ever_acquired"]).astype(int)


def windows_caption(run: RunData, windows: pd.DataFrame) -> str:
    trained = windows[~windows["from_base"]]
    cons = run.tables["consolidation"]
    learned = learning_rows(cons).assign(n_followed=lambda d: n_followed(d))
    n_acq, n_fol = int(learned["n_ever_acquired"].sum()), int(learned["n_followed"].sum())
    n_cons = int(learned["n_consolidated"].sum())
    best = learned.dropna(subset=["consolidation_rate"]).sort_values("n_followed", ascending=False).head(1)
    example = "".join(f" ({group_label(r['kind'], r['probe_type'])}: {ci_of(r, 'consolidation_rate')}, "
                      f"n={int(r['n_followed'])})" for _, r in best.iterrows())  # fmt: skip
    if len(trained):
        w = (f"{plural(len(trained), 'acquisition window')} began during training, median length "
             f"{num(float(trained['length'].median()), 0)} checkpoint(s), {pct(trained['open'].mean())} still open at "
             f"the final step")  # fmt: skip
    else:
        w = "no acquisition window began during training"
    what = learning_words(learned)
    last = f"; the {n_acq - n_fol} first right at the last checkpoint cannot show it yet" if n_acq > n_fol else ""
    if n_fol:
        c = (f"{n_cons} of the {n_fol} {what} probes right before the last checkpoint ({pct(n_cons / n_fol)}) were "
             f"consolidated, right at every checkpoint from then on{example}{last}")  # fmt: skip
    elif n_acq:
        c = f"every {what} probe ever right was first right at the last checkpoint, so consolidation is undefined"
    else:
        c = f"no {what} probe was ever right, so consolidation is undefined"
    return f"{w}; {c}."


def entity_table(run: RunData) -> Any:
    """Per epoch (rows) and kind (columns): entities learned, and how many were acquired / retained / forgotten."""
    ec = run.tables["epoch_counts"]
    ec = ec[(ec["level"] == "entity") & (ec["probe_type"] == "all") & ec["kind"].isin(LEARNED_KINDS)]
    if not len(ec):
        return tag("p", "Entity-level counts are not available for this run (no ROUGE-1 or no entity ids).",
                   class_="lead")  # fmt: skip
    kinds = list(dict.fromkeys(ec["kind"]))
    rows = []
    for (epoch, step), part in ec.groupby(["epoch", "step"], sort=True):
        by = part.set_index("kind")
        rows.append([num(epoch, 0), step_label(step)] + [
            f"{int(by.at[k, 'n_learned'])} / {int(by.at[k, 'n'])}" + (
                f"  (+{count(by.at[k, 'n_acquired'])} ={count(by.at[k, 'n_retained'])} "
                f"−{count(by.at[k, 'n_forgotten'])})" if is_num(by.at[k, "n_acquired"]) else "") if k in by.index else "—"
            for k in kinds])  # fmt: skip
    return table(["epoch", "step", *[f"{k}: learned / entities (+acquired =retained −forgotten)" for k in kinds]],
                 rows, numeric_from=1, caption="Entities (Mousavi et al.: an entity is learned when the mean ROUGE-1 "
                                               "recall of its probes is ≥ 0.6, counting the words that name the "
                                               "object, not those it shares with the relation's other values), "
                                               "per epoch")  # fmt: skip


def entity_rows(run: RunData) -> pd.DataFrame:
    """Per trained entity: its name and kind, facts, probes, and how many were right at the base / final / ever."""
    traj = run.tables["trajectories"][["probe_id", "first_acquired_step", "correct_at_base", "n_correct",
                                       "final_correct"]]  # fmt: skip
    p = run.probes[run.probes["kind"].isin(LEARNED_KINDS)][["probe_id", "fact_id"]].merge(traj, on="probe_id")
    p = p.merge(run.facts[["fact_id", "entity_id", "subject", "kind"]].drop_duplicates("fact_id"), on="fact_id")
    p["trained_first"] = pd.to_numeric(p["first_acquired_step"]).where(~p["correct_at_base"].astype(bool))
    out = p.groupby("entity_id", sort=True).agg(
        subject=("subject", "first"), kind=("kind", "first"), facts=("fact_id", "nunique"), probes=("probe_id", "size"),
        base=("correct_at_base", "sum"), final=("final_correct", "sum"), ever=("n_correct", lambda x: int((x > 0).sum())),
        first=("trained_first", "min"))  # fmt: skip
    return out.reset_index()


def entity_details(run: RunData) -> Any:
    rows = entity_rows(run)
    if not len(rows):
        return ""
    body = [[r.subject, r.kind, r.facts, r.probes, int(r.base), int(r.final), int(r.ever), step_label(r.first)]
            for r in rows.head(MAX_ENTITIES).itertuples()]  # fmt: skip
    learned = int((rows["final"] > 0).sum())
    shown = f"; the first {MAX_ENTITIES} by id" if len(rows) > MAX_ENTITIES else ""
    return details(f"every trained entity ({len(rows)}; {learned} with a probe right at the final step{shown})",
                   table(["entity", "kind", "facts", "probes", "right at base", "right at final", "ever right",
                          "first right in training (step)"], body, numeric_from=2))  # fmt: skip


def acquisition_section(run: RunData, canvas: Canvas) -> Section:
    traj = knowledge_probes(run)
    sec = Section("acquisition", "4. Acquisition raster",
                  "Each row is one probe (a fact asked one way), each column a checkpoint. Rows are sorted by the "
                  "checkpoint where the probe first became right.")
    sec.add(canvas.figure("acquisition_raster", raster_figure(run, traj), raster_caption(run, traj),
                          "Raster of probes by checkpoints, right or wrong, sorted by first acquisition"))
    windows = window_lengths(run, traj)
    sec.add(canvas.figure("acquisition_windows", windows_figure(run, windows), windows_caption(run, windows),
                          "Histogram of acquisition window lengths and consolidation rates per group"))
    sec.add(entity_table(run), entity_details(run))
    return sec


@styled
def broken_figure(run: RunData, known: pd.DataFrame, skill: pd.DataFrame) -> Any:
    panels = [(p, t) for p, t in ((known, "known facts right at the base"), (skill, "skills")) if len(p)]
    fig, axes = new_figure(len(panels), ncols=2, height=3.0)
    for ax, (part, title) in zip(axes, panels):
        for (kind, ptype), g in part.groupby(["kind", "probe_type"], sort=False):
            ci_line(ax, g["step"], g["acc"], g["acc_lo"], g["acc_hi"], kind_color(kind),
                    f"{ptype} (n={int(g['n'].iloc[0])})", TYPE_STYLES.get(ptype, "-"))  # fmt: skip
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(title)
        step_axis(ax, run.steps, run.epochs())
        ax.set_xlabel("step / epoch")
        ax.legend(frameon=False, loc="best")
    axes[0].set_ylabel("accuracy (95% CI band)")
    return fig


def all_items_phrase(r: Any) -> str:
    """For a known multiple-choice group: its chance-adjusted F over all its items (right and wrong at the base),
    which the selected group (right at the base: A(0) = 1, so no chance term) cannot show; '' otherwise."""
    if not is_num(r.get("n_all_items")):
        return ""
    return (f"; over all {int(r['n_all_items'])} known {r['probe_type']} items, right and wrong at the base, "
            f"chance-adjusted F={ci_of(r, 'forgetting_adj_all_items')}")


def broken_caption(run: RunData) -> str:
    bf = base_final(run)
    parts = []
    for _, r in bf[bf["kind"] == "known"].iterrows():
        parts.append(f"known {r['probe_type']} {arrow(r['acc_from'], r['acc_to'])} (F={ci_of(r, 'forgetting')}, "
                     f"n={int(r['n'])}{all_items_phrase(r)})")  # fmt: skip
    for _, r in bf[bf["kind"] == "skill"].iterrows():
        parts.append(f"{r['probe_type']} {arrow(r['acc_from'], r['acc_to'])} (change {ci_of(r, 'acc_change')}, "
                     f"n={int(r['n'])})")  # fmt: skip
    return f"Base→final (step {step_label(run.final_step)}): " + "; ".join(parts) + "." if parts else ""


def forgotten_known(run: RunData) -> pd.DataFrame:
    """Known probes right at the base and wrong at the final checkpoint, with names and the final answer."""
    p = run.probes[run.probes["analysis_kind"] == "known"]
    c = run.correct.loc[p["probe_id"]]
    lost = p[(c[run.base_step] & ~c[run.final_step]).to_numpy()]
    facts = run.facts.drop(columns=["kind"]).drop_duplicates("fact_id")
    out = lost.merge(facts, on="fact_id", how="left")
    out["answer"] = [run.answers.at[pid, run.final_step] for pid in out["probe_id"]]
    right = c.loc[out["probe_id"]].to_numpy(dtype=bool)
    last_right = [run.steps[int(np.nonzero(row)[0].max())] for row in right[:, : len(run.steps)]]
    out["last_right"] = last_right
    return out.sort_values(["relation", "subject", "probe_type"], kind="stable", na_position="last")


def answer_text(answer: Any, probe_type: str) -> str:
    """The model's answer as shown: the chosen option for multiple choice, '(empty)' for no output."""
    text = answer.strip() if isinstance(answer, str) else ""
    if probe_type == "mcq":
        return f"chose: {text}" if text else "(another option)"
    return text or "(empty)"


def broken_section(run: RunData, canvas: Canvas) -> Section:
    curves = run.tables["curves"]
    known = curves[curves["kind"] == "known"]
    skill = curves[curves["kind"] == "skill"]
    sec = Section("broken", "5. What was broken",
                  "Real facts the base model answered right (never trained on) and general skills, over "
                  "training: anything lost here is collateral damage of the CPT.")
    if len(known) or len(skill):
        sec.add(canvas.figure("what_was_broken", broken_figure(run, known, skill), broken_caption(run),
                              "Accuracy of known facts and of arithmetic over checkpoints"))
    else:
        sec.add(tag("p", "This benchmark has no known facts and no skill probes."))
    wrong_base = run.probes[run.probes["analysis_kind"] == KNOWN_WRONG_AT_BASE]
    if len(wrong_base):
        were = "was" if len(wrong_base) == 1 else "were"
        sec.add(tag("p", f"{plural(len(wrong_base), 'known probe')} {were} already wrong at the base model; "
                         f"{'it is' if len(wrong_base) == 1 else 'they are'} reported apart and "
                         f"{'does' if len(wrong_base) == 1 else 'do'} not count as forgetting.", class_="lead"))  # fmt: skip
    lost = forgotten_known(run)
    if len(lost):
        rows = [[r.subject, r.relation, r.target, answer_text(r.answer, r.probe_type),
                 r.probe_type, step_label(r.last_right)] for r in lost.head(MAX_LISTED).itertuples()]  # fmt: skip
        more = f" (first {MAX_LISTED} of {len(lost)})" if len(lost) > MAX_LISTED else ""
        sec.add(table(["subject", "relation", "expected", f"model's answer at step {step_label(run.final_step)}",
                       "probe", "last right at step"], rows, numeric_from=5,
                      caption=f"Known facts forgotten: right at the base, wrong at the final step{more}"))  # fmt: skip
    elif len(known):
        sec.add(tag("p", "No known probe that was right at the base is wrong at the final step."))
    return sec
