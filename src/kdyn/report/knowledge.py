"""Sections 2 and 3: loss vs knowledge, and transitions (forgetting F, acquisition BT with CIs).

Every number comes from RUN/analysis/ (curves, loss_knowledge, transitions, fuar); the figures only
draw those tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from kdyn.analysis.results import KNOWN_WRONG_AT_BASE
from kdyn.report.data import RunData, finite
from kdyn.report.figures import (TYPE_STYLES, Canvas, ci_line, group_key_labels, heatmap, kind_color, new_figure,
                                 step_axis, styled)  # fmt: skip
from kdyn.report.html import Section, bullets, table
from kdyn.report.power import CAPTION as POWER_CAPTION
from kdyn.report.power import detectable, run_power
from kdyn.report.text import arrow, ci_of, count, group_label, interval_words, is_num, num, plural, step_label

PANEL_KINDS_SKIP = (KNOWN_WRONG_AT_BASE,)
PANEL_TITLES = {"known": "known facts (right at the base)", "skill": "skills"}
GREY = "#4b5563"
DASHED = (0, (4, 3))


def base_final(run: RunData) -> pd.DataFrame:
    """Transition rows base → final, one per group."""
    tr = run.tables["transitions"]
    return tr[(tr["from_step"] == run.base_step) & (tr["to_step"] == run.final_step)].reset_index(drop=True)


def checkpoint_loss(run: RunData) -> tuple[pd.Series, str]:
    """The per-checkpoint loss the analysis used (the training-set loss measured at each checkpoint, else the
    train log's, else mean fact NLL) and its name."""
    c = run.tables["curves"]
    first = c.drop_duplicates("step").set_index("step")
    if "eval_loss" in first and len(finite(first["eval_loss"])):  # older analyses lack the column
        return first["eval_loss"], "training-set loss"
    if len(finite(first["train_loss"])):
        return first["train_loss"], "training loss"
    nll = c.groupby("step", sort=True)["fact_nll"].mean()
    return nll, "mean per-fact NLL"


def loss_phrase(run: RunData) -> str:
    loss, name = checkpoint_loss(run)
    ok = loss[loss.notna() & np.isfinite(loss.astype(float))]
    if not len(ok):
        return "there is no loss curve (no train_log.parquet and no per-fact NLL)"
    if len(ok) < 2:
        return f"the {name} is defined at {plural(len(ok), 'checkpoint')} only"
    verb = "fell" if ok.iloc[-1] < ok.iloc[0] else "rose"
    return f"{name} {verb} {arrow(ok.iloc[0], ok.iloc[-1])} (steps {step_label(ok.index[0])}→{step_label(ok.index[-1])})"


def biggest_changes(bf: pd.DataFrame, k: int = 4) -> str:
    rows = bf[bf["kind"] != KNOWN_WRONG_AT_BASE].assign(change=lambda d: (d["acc_to"] - d["acc_from"]).abs())
    rows = rows.sort_values("change", ascending=False, kind="stable")
    shown = [f"{group_label(r.kind, r.probe_type)} {arrow(r.acc_from, r.acc_to)}" for r in rows.head(k).itertuples()]
    rest = rows.iloc[k:]
    tail = f"; the other {len(rest)} groups moved by ≤ {rest['change'].max():.2f}" if len(rest) else ""
    return ", ".join(shown) + tail


@styled
def loss_knowledge_figure(run: RunData) -> Any:
    curves = run.tables["curves"]
    lk = run.tables["loss_knowledge"].set_index(["kind", "probe_type"])
    kinds = [k for k in dict.fromkeys(curves["kind"]) if k not in PANEL_KINDS_SKIP]
    fig, axes = new_figure(len(kinds), ncols=3 if len(kinds) > 4 else 4, height=3.1)
    loss, loss_name = checkpoint_loss(run)
    has_loss = bool(len(finite(loss)))
    for ax, kind in zip(axes, kinds):
        part = curves[curves["kind"] == kind]
        for ptype, g in part.groupby("probe_type", sort=False):
            ci_line(ax, g["step"], g["acc"], g["acc_lo"], g["acc_hi"], kind_color(kind), ptype, TYPE_STYLES.get(ptype, "-"))
            x = lk.loc[(kind, ptype)]
            if is_num(x["knowledge_optimal_step"]) and g["acc"].max() > g["acc"].min():  # flat lines have no best
                ax.plot([float(x["knowledge_optimal_step"])], [float(x["acc_at_knowledge_optimal"])], marker="*",
                        markersize=11, color=kind_color(kind), markeredgecolor="black", markeredgewidth=0.5,
                        linestyle="none")  # fmt: skip
        for s in sorted(set(finite(lk.loc[kind]["loss_optimal_step"]))):
            ax.axvline(s, color=GREY, linestyle=DASHED, linewidth=1.0)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(PANEL_TITLES.get(kind, f"{kind} facts"))
        step_axis(ax, run.steps, run.epochs())
        ax.set_xlabel("step / epoch")
        if has_loss:
            twin = draw_loss(ax, run, loss, loss_name)
    axes[0].set_ylabel("accuracy (95% CI band)")
    if has_loss:
        twin.set_ylabel(loss_name, color=GREY)
    fig.legend(handles=legend_handles(run, curves, kinds, loss_name, has_loss), loc="outside lower center", ncol=5,
               frameon=False)  # fmt: skip
    return fig


def draw_loss(ax: Any, run: RunData, loss: pd.Series, loss_name: str) -> Any:
    """The loss on a twin y axis: per logged step (training loss) and per checkpoint (the analysis' value)."""
    twin = ax.twinx()
    if run.train_log is not None and loss_name == "training loss":
        twin.plot(run.train_log["step"], run.train_log["loss"], color="#9ca3af", linewidth=0.8, alpha=0.8)
    twin.plot(loss.index.astype(float), loss.to_numpy(dtype=float), color=GREY, marker="s", markersize=3,
              linestyle="none")  # fmt: skip
    twin.grid(False)
    twin.spines["right"].set_visible(True)
    twin.tick_params(axis="y", colors=GREY)
    return twin


def legend_handles(run: RunData, curves: pd.DataFrame, kinds: list[str], loss_name: str, has_loss: bool) -> list[Any]:
    """Line style = probe type (colour = kind, one per panel), then the loss and checkpoint markers in use."""
    types = list(dict.fromkeys(curves.loc[curves["kind"].isin(kinds), "probe_type"]))
    handles = [Line2D([], [], color="black", linestyle=TYPE_STYLES.get(t, "-"), marker="o", markersize=3, label=t)
               for t in types]  # fmt: skip
    if has_loss and run.train_log is not None and loss_name == "training loss":
        handles.append(Line2D([], [], color="#9ca3af", linewidth=0.8, label="training loss per logged step (right axis)"))
        handles.append(Line2D([], [], color=GREY, marker="s", markersize=3, linestyle="none",
                              label="mean since the previous checkpoint (the analysis' loss)"))  # fmt: skip
    elif has_loss:
        handles.append(Line2D([], [], color=GREY, marker="s", markersize=3, linestyle="none",
                              label=f"{loss_name} at each checkpoint (right axis)"))  # fmt: skip
    if has_loss:
        handles.append(Line2D([], [], color=GREY, linestyle=DASHED, label="lowest-loss checkpoint"))
    handles.append(Line2D([], [], color=GREY, marker="*", markersize=10, linestyle="none", label="best-accuracy checkpoint"))
    return handles


def loss_knowledge_caption(run: RunData) -> str:
    lk = run.tables["loss_knowledge"]
    lk = lk[lk["kind"] != KNOWN_WRONG_AT_BASE]
    opt = finite(lk["loss_optimal_step"])
    better = int((pd.to_numeric(lk["acc_lost_by_loss_stopping"]) > 0).sum())
    where = f" The lowest loss is at step {step_label(opt[0])} (dashed line);" if len(set(opt)) == 1 else ""
    phrase = loss_phrase(run)
    return (f"{phrase[0].upper()}{phrase[1:]}, while accuracy base→final went {biggest_changes(base_final(run))}."
            f"{where} {better} of {len(lk)} groups were more accurate at another checkpoint (stars).")  # fmt: skip


def loss_knowledge_section(run: RunData, canvas: Canvas) -> Section:
    sec = Section("loss-knowledge", "2. Loss vs knowledge",
                  "Does loss going down mean facts going in? Accuracy per kind and probe type at every checkpoint "
                  f"(lines, 95% bands: {interval_words(run.summary)}) against the training loss (grey, right axis).")
    sec.add(canvas.figure("loss_vs_knowledge", loss_knowledge_figure(run), loss_knowledge_caption(run),
                          "Accuracy per kind and probe type over checkpoints, with the training loss on a twin axis"))
    lk = run.tables["loss_knowledge"]
    curves = run.tables["curves"]
    final_auroc = curves[curves["step"] == run.final_step].set_index(["kind", "probe_type"])
    bf = base_final(run).set_index(["kind", "probe_type"])
    rows, reasons = [], {}
    for r in lk.itertuples():
        t = bf.loc[(r.kind, r.probe_type)]
        at_final = final_auroc.loc[(r.kind, r.probe_type)]
        if not is_num(at_final["auroc_nll"]) and isinstance(at_final["auroc_reason"], str):
            reasons.setdefault(("the AUROC of fact NLL", at_final["auroc_reason"]), []).append(
                group_label(r.kind, r.probe_type))  # fmt: skip
        fell = list(r.loss_fell_acc_fell_steps) if r.loss_fell_acc_fell_steps is not None else []
        rows.append([group_label(r.kind, r.probe_type), int(t["n"]), f"{num(t['acc_from'], 2)} → {ci_of(t, 'acc_to')}",
                     _with_reason(r, "spearman", reasons), f"{step_label(r.loss_optimal_step)} / "
                     f"{step_label(r.knowledge_optimal_step)}",
                     _with_reason(r, "acc_lost_by_loss_stopping", reasons, lo="acc_lost_lo", hi="acc_lost_hi"),
                     count(r.n_loss_fell_acc_fell) + (f" (step {', '.join(map(str, fell))})" if fell else ""),
                     num(final_auroc.loc[(r.kind, r.probe_type)]["auroc_nll"], 2)])  # fmt: skip
    head = ["group", "n", "A: base → final", "ρ(−loss, A)", "step: lowest loss / best A",
            "A lost by stopping at lowest loss", "checkpoints where loss fell and A fell",
            f"AUROC of fact NLL at step {step_label(run.final_step)}"]  # fmt: skip
    sec.add(table(head, rows, caption=f"Per group; [a–b] are 95% intervals ({interval_words(run.summary)})"))
    if reasons:
        sec.add(bullets([f"{what[0].upper()}{what[1:]} is undefined for {', '.join(groups)}: {reason}"
                         for (what, reason), groups in reasons.items()], class_="notes"))  # fmt: skip
    return sec


def _with_reason(r: Any, name: str, reasons: dict[tuple[str, str], list[str]], lo: str | None = None,
                 hi: str | None = None) -> str:  # fmt: skip
    """`name` with its CI, or '—' with the analysis' reason collected (grouped by reason) for a note."""
    value = getattr(r, name)
    what = {"spearman": "ρ(−loss, A)"}.get(name, name.replace("_", " "))
    if not is_num(value):
        reason = r.reason if isinstance(r.reason, str) and r.reason else "not computable"
        reasons.setdefault((what, reason), []).append(group_label(r.kind, r.probe_type))
        return "—"
    row = {name: value, f"{name}_lo": getattr(r, lo or f"{name}_lo"), f"{name}_hi": getattr(r, hi or f"{name}_hi")}
    ci_reason = getattr(r, f"{name}_ci_reason", None)  # a value whose bootstrap interval is undefined
    if isinstance(ci_reason, str) and ci_reason:
        reasons.setdefault((f"the interval of {what}", ci_reason.removeprefix("interval undefined: ")), []).append(
            group_label(r.kind, r.probe_type))  # fmt: skip
        return f"{num(value, 2)} (no interval)"
    return ci_of(row, name)


def transition_matrix(rows: pd.DataFrame, metric: str) -> tuple[np.ndarray, list[tuple[str, str]], list[Any], list[bool]]:
    """(groups x pairs) values of F or BT (chance-adjusted for multiple choice), group keys, pairs, adjusted flags."""
    rows = rows[rows["kind"] != KNOWN_WRONG_AT_BASE]
    keys = list(dict.fromkeys(zip(rows["kind"], rows["probe_type"])))
    pairs = list(dict.fromkeys(zip(rows["from_step"], rows["to_step"])))
    values = np.full((len(keys), len(pairs)), np.nan)
    adjusted = []
    for i, key in enumerate(keys):
        g = rows[(rows["kind"] == key[0]) & (rows["probe_type"] == key[1])]
        adj = bool(g["k_min"].iloc[0] >= 2)
        adjusted.append(adj)
        col = f"{metric}_adj" if adj else metric
        for _, r in g.iterrows():
            values[i, pairs.index((r["from_step"], r["to_step"]))] = r[col]
    return values, keys, pairs, adjusted


@styled
def transitions_figure(rows: pd.DataFrame, base: bool) -> Any:
    f, keys, pairs, adj = transition_matrix(rows, "forgetting")
    bt, _, _, _ = transition_matrix(rows, "backward_transfer")
    vmax = float(max(np.nanmax(np.concatenate([f.ravel(), bt.ravel(), [0.05]])), 0.05))
    labels = group_key_labels(keys, adj)
    cols = [f"→{step_label(b)}" if base else f"{step_label(a)}→{step_label(b)}" for a, b in pairs]
    fig, axes = new_figure(2, ncols=2, height=0.3 * len(keys) + 1.3)
    heatmap(axes[0], f, labels, cols, "Reds", vmax, "forgetting F (right → wrong)")
    heatmap(axes[1], bt, labels, cols, "Blues", vmax, "acquisition BT (wrong → right)")
    axes[1].set_yticklabels([])
    for ax in axes:
        ax.set_xlabel("base → step" if base else "checkpoint → next checkpoint")
    return fig


def _extreme(rows: pd.DataFrame, metric: str, base: bool) -> str:
    values, keys, pairs, adj = transition_matrix(rows, metric)
    if not np.isfinite(values).any() or np.nanmax(values) <= 0:
        return f"no group had {'forgetting' if metric == 'forgetting' else 'acquisition'} above 0"
    i, j = np.unravel_index(np.nanargmax(values), values.shape)
    r = rows[(rows["kind"] == keys[i][0]) & (rows["probe_type"] == keys[i][1]) & (rows["from_step"] == pairs[j][0])
             & (rows["to_step"] == pairs[j][1])].iloc[0]  # fmt: skip
    name = f"{metric}_adj" if adj[i] else metric
    short = ("F" if metric == "forgetting" else "BT") + ("_adj" if adj[i] else "")
    when = f"by step {step_label(pairs[j][1])}" if base else f"at {step_label(pairs[j][0])}→{step_label(pairs[j][1])}"
    return f"{group_label(*keys[i])} {short}={ci_of(r, name)} {when} (n={int(r['n'])})"


def all_items_cell(r: Any) -> str:
    """'40 · 0.07 [0.02–0.14] / 0.03 [0.00–0.09]' for a known multiple-choice group, else '—'."""
    if not is_num(r.get("n_all_items")):
        return "—"
    return (f"{int(r['n_all_items'])} · {ci_of(r, 'forgetting_adj_all_items')} / "
            f"{ci_of(r, 'backward_transfer_adj_all_items')}")


def adj_reasons(rows: pd.DataFrame) -> str:
    """' Not chance-adjusted: <group>: <reason>.' for groups with some multiple-choice items left unadjusted, or ''."""
    if "adj_reason" not in rows:
        return ""
    mixed = rows[(rows["k_max"] >= 2) & rows["adj_reason"].notna()]
    parts = [f"{group_label(r.kind, r.probe_type)}: {r.adj_reason}" for r in mixed.itertuples()]
    return f" Not chance-adjusted: {'; '.join(parts)}." if parts else ""


def transitions_section(run: RunData, canvas: Canvas) -> Section:
    tr = run.tables["transitions"]
    base_rows = tr[tr["from_step"] == run.base_step]
    step_rows = tr[tr["consecutive"]]
    sec = Section("transitions", "3. Transitions",
                  "Per probe: did it go right → wrong (forgetting F) or wrong → right (acquisition BT)? Each cell is a "
                  "fraction of the group's probes; multiple-choice rows are chance-adjusted with each item's own k "
                  "(rows marked adj.). A(t) − A(s) = BT − F.")
    flips = base_final(run)
    cap = (f"Base→t. Largest forgetting: {_extreme(base_rows, 'forgetting', True)}; largest acquisition: "
           f"{_extreme(base_rows, 'backward_transfer', True)}. Base→final overall: {int(flips['n_1to0'].sum())} probes "
           f"went right→wrong and {int(flips['n_0to1'].sum())} wrong→right.")  # fmt: skip
    sec.add(canvas.figure("transitions_base", transitions_figure(base_rows, True), cap,
                          "Heatmaps of forgetting and acquisition from the base model to each checkpoint"))
    if len(run.steps) > 2:
        cap = (f"Checkpoint→next. Largest forgetting: {_extreme(step_rows, 'forgetting', False)}; largest "
               f"acquisition: {_extreme(step_rows, 'backward_transfer', False)}.")  # fmt: skip
        sec.add(canvas.figure("transitions_step", transitions_figure(step_rows, False), cap,
                              "Heatmaps of forgetting and acquisition between consecutive checkpoints"))
    rows, power = [], run_power(run)
    for _, r in flips.iterrows():
        mcq = r["k_min"] >= 2
        k = "" if not mcq else (f" (k={r['k_min']})" if r["k_min"] == r["k_max"] else f" (k={r['k_min']}–{r['k_max']})")
        rows.append([group_label(r["kind"], r["probe_type"]) + k, int(r["n"]), f"{int(r['n_1to0'])} / {int(r['n_0to1'])}",
                     f"{num(r['acc_from'], 2)} → {ci_of(r, 'acc_to')}", ci_of(r, "forgetting"), ci_of(r, "backward_transfer"),
                     ci_of(r, "forgetting_adj") if mcq else "—", ci_of(r, "backward_transfer_adj") if mcq else "—",
                     ci_of(r, "relative_forgetting"), all_items_cell(r),
                     detectable(power, r["kind"], r["probe_type"])])  # fmt: skip
    head = ["group", "n", "probes 1→0 / 0→1", "A: base → final", "F", "BT", "F adj.", "BT adj.", "F / A(base)",
            "known MCQ, all items: n · F adj. / BT adj.", "detectable change"]  # fmt: skip
    sec.add(table(head, rows, caption=f"Base (step {step_label(run.base_step)}) → final (step "
                                      f"{step_label(run.final_step)}), 95% intervals ({interval_words(run.summary)}); "
                                      f"F / A(base) is — where nothing was right at the base. A known group holds the "
                                      f"probes right at the base, so its A(0) = 1 and F adj. = F; the column "
                                      f"'known MCQ, all items' adjusts a known multiple-choice group over all its items, right and wrong at "
                                      f"the base (Harmon et al.).{adj_reasons(flips)} {POWER_CAPTION}: of F for a "
                                      f"known group, of A for the others."))  # fmt: skip
    fuar = run.tables["fuar"]
    fuar = fuar[fuar["step"] == run.final_step]
    if len(fuar):
        frows = [[r["probe_type"], int(r["n_known"]), int(r["n_forgotten_known"]), int(r["n_acquired_new"]),
                  int(r["n_acquired_updated"]), ci_of(r, "fuar") if is_num(r["fuar"]) else f"— ({r['reason']})"]
                 for _, r in fuar.iterrows()]  # fmt: skip
        sec.add(table(["probe type", "known (right at base)", "forgotten known", "acquired new", "acquired updated",
                       "FUAR"], frows,
                      caption="FUAR (Jang et al.) at the final step = forgotten known / (acquired new + updated); "
                              "lower is better"))  # fmt: skip
    return sec
