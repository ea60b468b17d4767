"""Section 7, knowledge circuits over checkpoints (only when RUN/circuit_metrics.parquet exists).

Reads the circuit output contract: circuit_metrics.parquet (one row per step and relation), and under
RUN/circuits/ layer_share, logit_lens, faithfulness_curve, dynamics (parquet) and change_point.json.
Figures: edge Jaccard (previous / final / base, with the split-half noise floor), entropy with its change
point and bootstrap interval, faithfulness against a random circuit; the layer distribution heatmap; the
faithfulness-vs-fraction curves; the logit-lens rank per layer. A value the circuits stage could not
compute is NaN there and shows as '—' (or a gap in a line) here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps

from kdyn.report.data import RunData, finite
from kdyn.report.figures import PALETTE, Canvas, heatmap, new_figure, step_axis, styled
from kdyn.report.html import Markup, Section, bullets, table, tag
from kdyn.report.text import count, is_num, num, step_label, with_ci

DYNAMICS_GROUPS = ("acquired", "retained", "forgotten", "never")


def relation_colors(relations: list[str]) -> dict[str, str]:
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(relations)}


def change_point(run: RunData, relation: str, series: str) -> dict[str, Any]:
    """The change point entry of one relation and series ({} when absent)."""
    entry = run.circuits.change_point.get(relation, {}) if run.circuits else {}
    value = entry.get(series, {}) if isinstance(entry, dict) else {}
    return value if isinstance(value, dict) else {}


def change_point_text(cp: dict[str, Any]) -> str:
    if is_num(cp.get("step")):
        return f"step {num(cp['step'])} [{num(cp.get('ci_low'))}–{num(cp.get('ci_high'))}]"
    return f"— ({cp.get('reason') or 'not computed'})"


@styled
def evolution_figure(run: RunData) -> Any:
    m = run.circuits.metrics
    relations = list(dict.fromkeys(m["relation"]))
    colors = relation_colors(relations)
    fig, (a1, a2, a3) = new_figure(3, ncols=3, height=3.1)
    for rel, g in m.groupby("relation", sort=False):
        c = colors[rel]
        steps = g["step"].to_numpy(dtype=float)
        a1.plot(steps, g["jaccard_edges_prev"], "-o", color=c, markersize=3, label=rel)
        a1.plot(steps, g["jaccard_edges_final"], "--", color=c, linewidth=1)
        a1.plot(steps, g["jaccard_edges_base"], ":", color=c, linewidth=1)
        floor = finite(g["noise_floor_jaccard"])
        if len(floor):
            a1.axhline(float(np.median(floor)), color=c, linewidth=0.8, alpha=0.5, linestyle=(0, (1, 3)))
        a2.plot(steps, g["entropy"], "-o", color=c, markersize=3, label=rel)
        cp = change_point(run, rel, "entropy")
        if is_num(cp.get("step")):
            a2.axvline(float(cp["step"]), color=c, linestyle="--", linewidth=1)
            if is_num(cp.get("ci_low")) and is_num(cp.get("ci_high")):
                a2.axvspan(float(cp["ci_low"]), float(cp["ci_high"]), color=c, alpha=0.08)
        a3.plot(steps, g["faithfulness"], "-o", color=c, markersize=3, label=rel)
        a3.plot(steps, g["faithfulness_random"], ":", color=c, linewidth=1)
    a1.set_title("edge Jaccard: — previous, -- final, ·· base")
    a1.set_ylim(-0.03, 1.03)
    a2.set_title("edge-score entropy (dashed: change point, band: CI)")
    a3.set_title("faithfulness: — circuit, ·· random circuit")
    for ax in (a1, a2, a3):
        step_axis(ax, sorted(set(m["step"])))
        ax.set_xlabel("step")
    for ax, cols in ((a1, ("jaccard_edges_prev", "jaccard_edges_final", "jaccard_edges_base")), (a2, ("entropy",)),
                     (a3, ("faithfulness", "faithfulness_random"))):  # fmt: skip
        if not any(len(finite(m[c])) for c in cols):
            ax.text(0.5, 0.5, f"undefined at every checkpoint\n({nan_reason(m)})", ha="center", va="center",
                    transform=ax.transAxes, color="#6b7280")  # fmt: skip
    a1.legend(frameon=False, fontsize=7.5)
    return fig


def nan_reason(rows: pd.DataFrame) -> str:
    """Why circuit metrics are NaN, from the rows themselves: no edges selected, or a too small logit gap."""
    if (pd.to_numeric(rows["n_edges"], errors="coerce").fillna(0) == 0).all():
        return "no edge was selected: n_edges = 0"
    flag = rows.get("faithfulness_flag")
    if flag is not None and flag.fillna(False).astype(bool).all():
        return "clean − corrupted gap below the threshold"
    return "see the circuits stage's notes"


def evolution_caption(run: RunData) -> str:
    m = run.circuits.metrics
    parts = []
    for rel, g in m.groupby("relation", sort=False):
        jp, floor = finite(g["jaccard_edges_prev"]), finite(g["noise_floor_jaccard"])
        jac = (f"Jaccard with previous {num(jp.min(), 2)}–{num(jp.max(), 2)}" if len(jp) else "Jaccard undefined")
        jac += f" (noise floor {num(float(np.median(floor)), 2)})" if len(floor) else ""
        last = g.iloc[-1]
        parts.append(f"{rel}: {jac}, entropy change point {change_point_text(change_point(run, rel, 'entropy'))}, "
                     f"final faithfulness {num(last['faithfulness'], 2)} vs random {num(last['faithfulness_random'], 2)}")
    return "; ".join(parts) + "."


@styled
def per_relation_heatmaps(frame: pd.DataFrame, value: str, cmap: str, title: str, label: str) -> Any:
    """One layer x step heatmap per relation, on one colour scale (colour bar on the right)."""
    relations = sorted(dict.fromkeys(frame["relation"]))
    values_all = finite(frame[value])
    top = max(float(values_all.max()), 1e-9) if len(values_all) else 1.0
    fig, axes = new_figure(len(relations), ncols=4, height=3.0)
    for ax, rel in zip(axes, relations):
        wide = frame[frame["relation"] == rel].pivot_table(index="layer", columns="step", values=value, aggfunc="mean")
        im = heatmap(ax, wide.to_numpy(dtype=float), [str(x) for x in wide.index], [step_label(s) for s in wide.columns],
                     cmap, top, f"{rel}: {title}", annotate=False)  # fmt: skip
        ax.invert_yaxis()
        ax.set_xlabel("step")
        ax.set_yticks(ax.get_yticks()[:: max(1, len(wide.index) // 10)])
    axes[0].set_ylabel("layer")
    fig.colorbar(im, ax=axes, shrink=0.85, label=label)
    return fig


def layers_caption(run: RunData) -> str:
    m = run.circuits.metrics
    parts = [f"{rel}: mean source depth {num(g['mean_source_depth'].iloc[0], 2)}→{num(g['mean_source_depth'].iloc[-1], 2)}"
             for rel, g in m.groupby("relation", sort=False) if "mean_source_depth" in g]  # fmt: skip
    return ("Share of circuit edges by source layer (darker = larger share) over checkpoints; "
            + "; ".join(parts) + " (steps " + f"{step_label(m['step'].min())}→{step_label(m['step'].max())}).")


@styled
def faithfulness_curves_figure(curves: pd.DataFrame) -> Any:
    relations = sorted(dict.fromkeys(curves["relation"]))
    fig, axes = new_figure(len(relations), ncols=4, height=2.8, sharey=True)
    steps = sorted(set(curves["step"]))
    cmap = colormaps["viridis"]
    for ax, rel in zip(axes, relations):
        for i, (step, g) in enumerate(curves[curves["relation"] == rel].groupby("step", sort=True)):
            g = g.sort_values("fraction")
            ax.plot(g["fraction"], g["faithfulness"], color=cmap(i / max(1, len(steps) - 1)), linewidth=1.2,
                    label=f"step {step_label(step)}")  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(rel)
        ax.set_xlabel("fraction of edges kept")
    axes[0].set_ylabel("faithfulness")
    axes[0].legend(frameon=False, fontsize=7)
    return fig


def faithfulness_caption(run: RunData) -> str:
    m = run.circuits.metrics
    parts = [f"{rel}: AUC {num(g['faithfulness_auc'].iloc[0], 2)} at step {step_label(g['step'].iloc[0])} → "
             f"{num(g['faithfulness_auc'].iloc[-1], 2)} at step {step_label(g['step'].iloc[-1])}"
             for rel, g in m.groupby("relation", sort=False) if "faithfulness_auc" in g]  # fmt: skip
    return "Faithfulness as more edges are kept (one line per checkpoint, dark = early); " + "; ".join(parts) + "."


def logit_lens_caption(lens: pd.DataFrame) -> str:
    parts = []
    for rel, g in lens.groupby("relation", sort=False):
        first, last = g[g["step"] == g["step"].min()], g[g["step"] == g["step"].max()]
        parts.append(f"{rel}: best median rank {num(first['median_rank'].min(), 0)} at step "
                     f"{step_label(g['step'].min())} → {num(last['median_rank'].min(), 0)} at step "
                     f"{step_label(g['step'].max())}")  # fmt: skip
    return "Logit lens: median rank of the target's first token when decoding each layer (log colour scale, bright = " \
           "better); " + "; ".join(parts) + "."


def metrics_table(run: RunData) -> Any:
    m = run.circuits.metrics
    final = m[m["step"] == m["step"].max()]
    rows, notes = [], {}
    for _, r in final.iterrows():
        rel = r["relation"]
        flag = r.get("faithfulness_flag")
        rows.append([rel, f"{num(r['n_prompts'])}" + (f" ({num(r.get('n_unpaired'))} unpaired)" if is_num(r.get("n_unpaired"))
                                                    and r.get("n_unpaired") else ""),
                     f"{num(r['n_edges'])} / {num(r.get('n_edges_total'))}", num(r.get("n_nodes")),
                     num(r["faithfulness"], 2) + (" (small gap)" if flag is True or flag == 1 else ""),
                     num(r["faithfulness_random"], 2),
                     f"{num(r.get('hit10_circuit'), 2)} / {num(r.get('hit10_full'), 2)} / {num(r.get('hit10_random'), 2)}",
                     f"{num(r.get('mrr_circuit'), 2)} / {num(r.get('mrr_full'), 2)} / {num(r.get('mrr_random'), 2)}",
                     "; ".join(change_cell(run, rel, series, notes) for series in ("entropy", "jaccard_edges_prev"))])
    head = ["relation", "prompts", "edges kept / all", "nodes", "faithfulness", "random", "hit@10 circuit / full / random",
            "MRR circuit / full / random", "change point: entropy; Jaccard with previous"]
    out = table(head, rows, caption=f"At the final checkpoint (step {step_label(m['step'].max())})")
    return Markup(out + bullets([f"{k}: {v}" for k, v in notes.items()], class_="notes")) if notes else out


def change_cell(run: RunData, relation: str, series: str, notes: dict[str, str]) -> str:
    """'step 3 [3–6]', or '—' with the reason kept for a note under the table."""
    cp = change_point(run, relation, series)
    if is_num(cp.get("step")):
        return change_point_text(cp)
    notes[f"{relation}, change point of {series.replace('_', ' ')}"] = cp.get("reason") or "not computed"
    return "—"


def dynamics_table(dyn: pd.DataFrame) -> Any:
    """Rows: checkpoint pair and relation; columns: what happened to the fact (mean change [CI], n facts)."""
    groups = [g for g in DYNAMICS_GROUPS if g in set(dyn["group"])] + sorted(set(dyn["group"]) - set(DYNAMICS_GROUPS))
    rows = []
    for (a, b, rel), part in dyn.groupby(["from_step", "to_step", "relation"], sort=False):
        by = part.set_index("group")
        rows.append([f"{step_label(a)}→{step_label(b)}", rel] + [
            f"{with_ci(by.at[g, 'mean_change'], by.at[g, 'ci_low'], by.at[g, 'ci_high'], 3)} (n={count(by.at[g, 'n_facts'])})"
            if g in by.index else "—" for g in groups])  # fmt: skip
    return table(["checkpoints", "relation", *groups], rows, numeric_from=2,
                 caption="How much per-fact circuits changed between checkpoints (mean [95% CI], n facts), by what "
                         "happened to the fact's probes")  # fmt: skip


def circuits_section(run: RunData, canvas: Canvas) -> Section:
    c = run.circuits
    sec = Section("circuits", "7. Circuits",
                  "Knowledge circuits (EAP-IG edge attributions, top edges) per relation and checkpoint: how much "
                  "they change, how concentrated they are, where they live, and how faithful they are.")
    sec.add(canvas.figure("circuit_evolution", evolution_figure(run), evolution_caption(run),
                          "Circuit Jaccard, entropy and faithfulness over checkpoints"))
    share = c.tables["layer_share"]
    if defined(share, "share"):
        sec.add(canvas.figure("circuit_layers", per_relation_heatmaps(share, "share", "Purples", "edge share",
                                                                      "share of circuit edges"),
                              layers_caption(run), "Heatmaps of circuit edge share per source layer and checkpoint"))
    curves = c.tables["faithfulness_curve"]
    if defined(curves, "faithfulness"):
        sec.add(canvas.figure("circuit_faithfulness_curves", faithfulness_curves_figure(curves),
                              faithfulness_caption(run), "Faithfulness against the fraction of edges kept"))
    missing = [name for name, table, col in (("layer distribution", share, "share"),
                                             ("faithfulness curves", curves, "faithfulness")) if not defined(table, col)]
    if missing:
        sec.add(tag("p", f"No {' and no '.join(missing)}: undefined at every checkpoint ({nan_reason(c.metrics)}).",
                    class_="lead"))  # fmt: skip
    lens = c.tables["logit_lens"]
    if defined(lens, "median_rank"):
        lens = lens.assign(log_rank=np.log10(1.0 + lens["median_rank"].astype(float)))
        fig = per_relation_heatmaps(lens, "log_rank", "magma_r", "logit-lens rank", "log10(1 + median rank); bright = better")
        sec.add(canvas.figure("circuit_logit_lens", fig, logit_lens_caption(lens),
                              "Heatmaps of the logit-lens rank of the target per layer and checkpoint"))
    sec.add(metrics_table(run))
    dyn = c.tables["dynamics"]
    if dyn is not None and len(dyn):
        sec.add(dynamics_table(dyn))
    return sec


def defined(table: pd.DataFrame | None, column: str) -> bool:
    """The table exists and has at least one finite value in `column`."""
    return table is not None and bool(len(finite(table[column])))


def circuit_findings(run: RunData) -> list[str]:
    out = []
    for rel, g in run.circuits.metrics.groupby("relation", sort=False):
        cp = change_point(run, rel, "entropy")
        jp, floor = finite(g["jaccard_edges_prev"]), finite(g["noise_floor_jaccard"])
        sentence = f"Circuit of '{rel}': entropy change point {change_point_text(cp)}"
        if len(jp) and len(floor):
            below = int((jp < np.median(floor)).sum())
            sentence += (f"; edge Jaccard with the previous checkpoint fell below the split-half noise floor "
                         f"({num(float(np.median(floor)), 2)}) at {below} of {len(jp)} checkpoints, i.e. changed more "
                         f"than resampling the prompts would explain")  # fmt: skip
        last = g.iloc[-1]
        if is_num(last["faithfulness"]):
            sentence += (f"; at step {step_label(last['step'])} the circuit ({num(last['n_edges'])} edges) keeps "
                         f"{num(last['faithfulness'], 2)} of the clean−corrupted logit difference, a random circuit of "
                         f"equal size {num(last['faithfulness_random'], 2)}")  # fmt: skip
        else:
            sentence += f"; faithfulness at step {step_label(last['step'])} is undefined ({nan_reason(g.tail(1))})"
        out.append(sentence + ".")
    return out
