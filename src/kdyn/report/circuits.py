"""Section 7, knowledge circuits over checkpoints (only when RUN/circuit_metrics.parquet exists).

Reads the circuit output contract: circuit_metrics.parquet (one row per step and relation), and under
RUN/circuits/ layer_share, logit_lens, faithfulness_curve, dynamics (parquet) and change_point.json.
Figures: edge Jaccard (previous / final / base; and, like for like, half-prompt circuits of consecutive
checkpoints against the split-half noise floor), entropy with its change point and bootstrap interval,
faithfulness against random connected circuits of equal size (mean ± SD); the layer distribution heatmap;
the faithfulness-vs-fraction curves; the logit-lens rank per layer. A value the circuits stage could not
compute is NaN there and shows as '—' (or a gap in a line) here. Outputs of older versions (no status in
change_point.json, no half-prompt Jaccard, no random SD) still render, without what they lack.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps

from kdyn.report.data import RunData, finite
from kdyn.report.figures import PALETTE, Canvas, heatmap, new_figure, step_axis, styled
from kdyn.report.html import Markup, Section, bullets, table, tag
from kdyn.report.text import count, is_num, num, p_value, step_label, with_ci

DYNAMICS_GROUPS = ("acquired", "retained", "forgotten", "never")


def relation_colors(relations: list[str]) -> dict[str, str]:
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(relations)}


def change_point(run: RunData, relation: str, series: str) -> dict[str, Any]:
    """The change point entry of one relation and series ({} when absent)."""
    entry = run.circuits.change_point.get(relation, {}) if run.circuits else {}
    value = entry.get(series, {}) if isinstance(entry, dict) else {}
    return value if isinstance(value, dict) else {}


def change_point_text(cp: dict[str, Any]) -> str:
    """'step 3 [2–4] (p = 0.0126)', 'none (two lines fit no better than one …)', 'not tested (4 checkpoint(s), …)'."""
    if is_num(cp.get("step")):
        p = f" ({p_value(cp['p_value'])})" if is_num(cp.get("p_value")) else ""
        return f"step {num(cp['step'])} [{num(cp.get('ci_low'))}–{num(cp.get('ci_high'))}]{p}"
    reason = cp.get("reason") or "not computed"
    for status, prefix in (("none", "no change point: "), ("not tested", "not tested: ")):
        if cp.get("status") == status:
            return f"{status} ({reason.removeprefix(prefix)})"
    return f"— ({reason})"


def change_point_phrase(cp: dict[str, Any], series: str) -> str:
    """'entropy change point step 3 [2–4] (p = …)', 'no entropy change point (…)', '… not tested (…)'."""
    if cp.get("status") == "none":
        return f"no {series} change point ({(cp.get('reason') or '').removeprefix('no change point: ')})"
    return f"{series} change point {change_point_text(cp)}"


def span(values: np.ndarray, digits: int = 2) -> str:
    """'0.41–0.52', or one number when all are equal."""
    lo, hi = num(float(np.min(values)), digits), num(float(np.max(values)), digits)
    return lo if lo == hi else f"{lo}–{hi}"


def random_text(row: Any, digits: int = 2) -> str:
    """Faithfulness of the random connected circuits: '0.05 ± 0.02' (mean ± SD over draws)."""
    mean, sd = row.get("faithfulness_random"), row.get("faithfulness_random_sd")
    return f"{num(mean, digits)} ± {num(sd, digits)}" if is_num(mean) and is_num(sd) else num(mean, digits)


def noise_pairs(g: pd.DataFrame) -> pd.DataFrame:
    """Consecutive checkpoint pairs of one relation: `to_step`, the half-prompt Jaccard `halves` and the noise
    floor of the pair (the mean of the two checkpoints' floors); only pairs where both are defined."""
    if "jaccard_halves_prev" not in g:
        return pd.DataFrame(columns=["to_step", "halves", "floor"])
    floor = pd.to_numeric(g["noise_floor_jaccard"], errors="coerce").to_numpy(dtype=float)
    halves = pd.to_numeric(g["jaccard_halves_prev"], errors="coerce").to_numpy(dtype=float)
    pairs = pd.DataFrame({"to_step": g["step"].to_numpy()[1:], "halves": halves[1:], "floor": (floor[1:] + floor[:-1]) / 2})
    return pairs[np.isfinite(pairs["halves"]) & np.isfinite(pairs["floor"])]


def noise_sentence(g: pd.DataFrame) -> str | None:
    """What the half-prompt Jaccard of consecutive checkpoints shows against the split-half floor (None: n/a)."""
    pairs = noise_pairs(g)
    if not len(pairs):
        return None
    below = pairs[pairs["halves"] < pairs["floor"]]
    text = (f"edge Jaccard of consecutive checkpoints' circuits, each from a disjoint half of the prompts "
            f"({count(int(g['n_prompts'].iloc[-1]) // 2)} each), was {span(pairs['halves'])} against a split-half "
            f"noise floor of {span(pairs['floor'])} (two halves at the same checkpoint): below the floor at "
            f"{len(below)} of {len(pairs)} checkpoint pairs")  # fmt: skip
    if not len(below):
        return text + ", i.e. no change beyond what resampling the prompts would explain"
    if len(below) == len(pairs):
        return text + ", i.e. at every pair the circuit changed more than resampling the prompts would explain"
    steps = ", ".join(step_label(s) for s in below["to_step"])
    return (text + f" (the pair{'s' * (len(below) > 1)} ending at step{'s' * (len(below) > 1)} {steps}), where the "
            f"circuit changed more than resampling the prompts would explain, and no more than that at the other "
            f"{len(pairs) - len(below)}")


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
        if "jaccard_halves_prev" in g:
            a1.plot(steps, g["jaccard_halves_prev"], "-.", color=c, linewidth=1)
            a1.plot(steps, g["noise_floor_jaccard"], "-", color=c, linewidth=0.6, alpha=0.5)
        a2.plot(steps, g["entropy"], "-o", color=c, markersize=3, label=rel)
        cp = change_point(run, rel, "entropy")
        if is_num(cp.get("step")):
            a2.axvline(float(cp["step"]), color=c, linestyle="--", linewidth=1)
            if is_num(cp.get("ci_low")) and is_num(cp.get("ci_high")):
                a2.axvspan(float(cp["ci_low"]), float(cp["ci_high"]), color=c, alpha=0.08)
        a3.plot(steps, g["faithfulness"], "-o", color=c, markersize=3, label=rel)
        a3.plot(steps, g["faithfulness_random"], ":", color=c, linewidth=1)
        if "faithfulness_random_sd" in g:
            mean, sd = (pd.to_numeric(g[k], errors="coerce").to_numpy(dtype=float) for k in ("faithfulness_random",
                                                                                              "faithfulness_random_sd"))
            a3.fill_between(steps, mean - sd, mean + sd, color=c, alpha=0.1, linewidth=0)
    a1.set_title("edge Jaccard: — previous, -- final, ·· base;\nhalf prompts: -· previous, thin: noise floor")
    a1.set_ylim(-0.03, 1.03)
    a2.set_title("edge-score entropy (dashed: change point, band: CI)")
    a3.set_title("faithfulness: — circuit,\n·· random connected circuits, band ± SD")
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
        jp, pairs = finite(g["jaccard_edges_prev"]), noise_pairs(g)
        jac = f"Jaccard with previous {span(jp)}" if len(jp) else "Jaccard undefined"
        if len(pairs):
            jac += f" (half-prompt circuits {span(pairs['halves'])} vs noise floor {span(pairs['floor'])})"
        last = g.iloc[-1]
        parts.append(f"{rel}: {jac}, {change_point_phrase(change_point(run, rel, 'entropy'), 'entropy')}, "
                     f"final faithfulness {num(last['faithfulness'], 2)} vs random {random_text(last)}")
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
    rows, notes, usage = [], {}, []
    for _, r in final.iterrows():
        rel = r["relation"]
        flag = r.get("faithfulness_flag")
        rows.append([rel, prompts_cell(r, usage), f"{num(r['n_edges'])} / {num(r.get('n_edges_total'))}",
                     num(r.get("n_nodes")), num(r["faithfulness"], 2) + (" (small gap)" if flag is True or flag == 1 else ""),
                     random_text(r),
                     f"{num(r.get('hit10_circuit'), 2)} / {num(r.get('hit10_full'), 2)} / {num(r.get('hit10_random'), 2)}",
                     f"{num(r.get('mrr_circuit'), 2)} / {num(r.get('mrr_full'), 2)} / {num(r.get('mrr_random'), 2)}",
                     "; ".join(change_cell(run, rel, series, notes) for series in ("entropy", "jaccard_edges_prev"))])
    head = ["relation", "prompt pairs used", "edges kept / all", "nodes", "faithfulness",
            "random (mean ± SD)", "hit@10 circuit / full / random", "MRR circuit / full / random",
            "change point: entropy; Jaccard with previous"]  # fmt: skip
    out = table(head, rows, caption=f"At the final checkpoint (step {step_label(m['step'].max())}); random: connected "
                                    "circuits of the circuit's size after pruning")  # fmt: skip
    items = usage + [f"{k}: {v}" for k, v in notes.items()]
    return Markup(out + bullets(items, class_="notes")) if items else out


def prompts_cell(r: Any, usage: list[str]) -> str:
    """'11 of 32' (used of configured; the reason goes to `usage`, a note under the table), or the count
    and '(3 unpaired)' for outputs without the configured number."""
    if is_num(r.get("n_prompts_configured")):
        if isinstance(r.get("prompt_usage"), str) and (r["n_prompts"] < r["n_prompts_configured"] or r.get("n_unpaired")):
            usage.append(r["prompt_usage"])
        return f"{num(r['n_prompts'])} of {num(r['n_prompts_configured'])}"
    unpaired = r.get("n_unpaired")
    return f"{num(r['n_prompts'])}" + (f" ({num(unpaired)} unpaired)" if is_num(unpaired) and unpaired else "")


def change_cell(run: RunData, relation: str, series: str, notes: dict[str, str]) -> str:
    """'step 3 [3–6] (p = …)', 'none (p = …)', or 'not tested' / '—' with the reason in a note under the table."""
    cp = change_point(run, relation, series)
    if is_num(cp.get("step")):
        return change_point_text(cp)
    if cp.get("status") == "none" and is_num(cp.get("p_value")):
        return f"none ({p_value(cp['p_value'])})"
    notes[f"{relation}, change point of {series.replace('_', ' ')}"] = cp.get("reason") or "not computed"
    return "not tested" if cp.get("status") == "not tested" else "—"


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
        last = g.iloc[-1]
        used = (f" ({num(last['n_prompts'])} of the configured {num(last['n_prompts_configured'])} prompt pairs)"
                if is_num(last.get("n_prompts_configured")) else "")  # fmt: skip
        sentence = f"Circuit of '{rel}'{used}: " + change_point_phrase(cp, "entropy")
        noise = noise_sentence(g)
        sentence += f"; {noise}" if noise else ""
        if is_num(last["faithfulness"]):
            baseline = (f"random connected circuits of equal size {random_text(last)} (mean ± SD over "
                        f"{count(last.get('random_draws'))} draws)" if "faithfulness_random_sd" in last else
                        f"a random set of as many edges {num(last['faithfulness_random'], 2)} (an older output: rerun "
                        f"`kdyn circuits` for connected random circuits)")  # fmt: skip
            sentence += (f"; at step {step_label(last['step'])} the circuit ({num(last['n_edges'])} edges) keeps "
                         f"{num(last['faithfulness'], 2)} of the clean−corrupted logit difference, {baseline}")  # fmt: skip
        else:
            sentence += f"; faithfulness at step {step_label(last['step'])} is undefined ({nan_reason(g.tail(1))})"
        out.append(sentence + ".")
    return out
