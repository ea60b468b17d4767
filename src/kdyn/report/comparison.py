"""Section 6, comparison of several runs (strategies / models / seeds) and its findings.

The numbers are `kdyn.analysis.compare`'s: per-run rows with bootstrap CIs, mean ± t-interval over seeds,
and McNemar tests on shared items. Figures are small multiples, one panel per (kind, probe type).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kdyn.analysis.comparison import Comparison, compare
from kdyn.analysis.results import KNOWN_WRONG_AT_BASE
from kdyn.report.data import RunData
from kdyn.report.figures import PALETTE, Canvas, new_figure, styled
from kdyn.report.html import Section, details, table, tag
from kdyn.report.power import CAPTION as POWER_CAPTION
from kdyn.report.power import detectable, run_power
from kdyn.report.text import ci_of, group_label, is_num, num, p_value, plural, with_ci

ALPHA = 0.05
HEADLINE_KINDS = ("new", "known", "skill")
SHOWN_TESTS = 6  # significant paired tests written out as findings


def run_colors(runs: pd.DataFrame) -> dict[str, str]:
    """One colour per model + strategy, so seeds of one set-up share it."""
    setups = list(dict.fromkeys(f"{m}|{s}" for m, s in zip(runs["model"], runs["strategy"])))
    by_setup = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(setups)}
    return {r: by_setup[f"{m}|{s}"] for r, m, s in zip(runs["run"], runs["model"], runs["strategy"])}


def groups_of(frame: pd.DataFrame) -> list[tuple[str, str]]:
    keys = dict.fromkeys(zip(frame["kind"], frame["probe_type"]))
    return [k for k in keys if k[0] != KNOWN_WRONG_AT_BASE]


@styled
def small_multiples(comp: Comparison, metrics: list[tuple[str, str, str]]) -> Any:
    """Panels per group; in each, every run's value of each metric with its CI (x = runs)."""
    runs = comp.runs
    keys = groups_of(runs)
    labels = list(dict.fromkeys(runs["run"]))
    colors = run_colors(runs.drop_duplicates("run"))
    fig, axes = new_figure(len(keys), ncols=5, height=2.4, sharey=True)
    offsets = np.linspace(-0.18, 0.18, len(metrics)) if len(metrics) > 1 else [0.0]
    for ax, (kind, ptype) in zip(axes, keys):
        part = runs[(runs["kind"] == kind) & (runs["probe_type"] == ptype)].set_index("run")
        for off, (name, marker, _) in zip(offsets, metrics):
            for i, label in enumerate(labels):
                if label not in part.index:
                    continue
                r = part.loc[label]
                v, lo, hi = (float(r[c]) if c in r.index and is_num(r[c]) else np.nan for c in (name, f"{name}_lo", f"{name}_hi"))
                if np.isfinite(lo) and np.isfinite(hi):  # drawn from its ends: a bootstrap interval need not hold v
                    ax.vlines(i + off, lo, hi, color=colors[label], linewidth=1)
                    ax.plot([i + off] * 2, [lo, hi], "_", color=colors[label], markersize=4)
                ax.plot([i + off], [v], marker, color=colors[label], markersize=5,
                        markerfacecolor="white" if name == "acc_base" else colors[label])
        ax.set_title(group_label(kind, ptype), fontsize=9)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7.5)
        ax.set_ylim(-0.03, 1.03)
    handles = [ax.plot([], [], marker, color="#374151", linestyle="none",
                       markerfacecolor="white" if name == "acc_base" else "#374151")[0] for name, marker, _ in metrics]
    fig.legend(handles, [legend for _, _, legend in metrics], loc="outside lower center", ncol=len(metrics),
               frameon=False)  # fmt: skip
    return fig


def spread_caption(comp: Comparison, name: str, what: str) -> str:
    runs = comp.runs[comp.runs["kind"] != KNOWN_WRONG_AT_BASE]
    best = None
    for (kind, ptype), part in runs.groupby(["kind", "probe_type"], sort=False):
        part = part[part[name].map(is_num)]
        if len(part) < 2:
            continue
        lo, hi = part.loc[part[name].idxmin()], part.loc[part[name].idxmax()]
        gap = float(hi[name] - lo[name])
        if best is None or gap > best[0]:
            best = (gap, kind, ptype, lo, hi)
    if best is None or best[0] == 0:
        return f"{what}: the runs do not differ in any group."
    gap, kind, ptype, lo, hi = best
    return (f"{what}: the largest spread between runs is in {group_label(kind, ptype)}, {lo['run']} "
            f"{ci_of(lo, name)} vs {hi['run']} {ci_of(hi, name)} (95% Wilson intervals over items).")  # fmt: skip


def stacked_ci(row: Any, name: str) -> Any:
    """The value with its CI on a second, smaller line: a wide table of CIs fits a laptop screen this way."""
    text = ci_of(row, name)
    value, _, interval = text.partition(" ")
    return tag("span", value, tag("br"), tag("span", interval, class_="ci")) if interval else text


def headline_table(comp: Comparison, power: dict[str, dict[tuple[str, str], float]] | None = None) -> Any:
    """One row per run: final accuracy of what was taught (new facts, skills) and forgetting of known facts, each
    with the smallest change the run's sizes detect against another run (`power`: run label → report.power)."""
    runs, power = comp.runs, power or {}
    keys = [k for k in groups_of(runs) if k[0] in HEADLINE_KINDS]
    cols = [(k, "forgetting" if k[0] == "known" else "acc_final") for k in keys]
    rows = []
    for label, part in runs.groupby("run", sort=False):
        by = part.set_index(["kind", "probe_type"])
        first = part.iloc[0]
        rows.append([label, num(first["model"]), num(first["strategy"]), num(first["seed"]), num(first["step"])] +
                    [with_power(stacked_ci(by.loc[k], m), power.get(label, {}), k) if k in by.index else "—"
                     for k, m in cols])  # fmt: skip
    head = ["run", "model", "strategy", "seed", "step"] + [
        f"{group_label(*k)} {'F' if m == 'forgetting' else 'A'}" for k, m in cols]
    return table(head, rows, numeric_from=3, caption="Headline per run at its final step: A = accuracy of new facts "
                                                     "and skills, F = forgetting of known facts (base → final), "
                                                     f"95% Wilson intervals over items. {POWER_CAPTION}")  # fmt: skip


def with_power(cell: Any, power: dict[tuple[str, str], float], key: tuple[str, str]) -> Any:
    """The headline cell with its detectable change on a last small line (nothing when the run was not sized)."""
    text = detectable(power, *key)
    return cell if text == "—" else tag("span", cell, tag("br"), tag("span", text, class_="ci"))


def comparison_section(runs: list[RunData], canvas: Canvas) -> tuple[Section, Comparison]:
    comp = compare([r.path for r in runs])
    sec = Section("comparison", "6. Comparison",
                  f"{plural(len(runs), 'run')} at each run's final checkpoint; hollow circles: accuracy at the base; "
                  f"filled: at the final step; colours: model + strategy (seeds share a colour).")
    sec.add(canvas.figure("compare_accuracy", small_multiples(comp, [("acc_base", "o", "accuracy at base"),
                                                                     ("acc_final", "o", "accuracy at final")]),
                          spread_caption(comp, "acc_final", "Final accuracy"),
                          "Small multiples of final accuracy per run and group"))  # fmt: skip
    sec.add(canvas.figure("compare_transitions", small_multiples(comp, [("forgetting", "v", "forgetting F"),
                                                                        ("backward_transfer", "^", "acquisition BT")]),
                          spread_caption(comp, "forgetting", "Forgetting base→final"),
                          "Small multiples of forgetting and acquisition per run and group"))  # fmt: skip
    sec.add(headline_table(comp, {r.label: run_power(r) for r in runs}))
    rows = [[r["run"], group_label(r["kind"], r["probe_type"]), int(r["n"]), num(r["step"]), num(r["acc_base"], 2),
             ci_of(r, "acc_final"), ci_of(r, "forgetting"), ci_of(r, "backward_transfer"),
             ci_of(r, "consolidation_rate")] for _, r in comp.runs.iterrows()]  # fmt: skip
    sec.add(details(f"every run and group ({len(rows)} rows: accuracy, F, BT, consolidation with CIs)",
                    table(["run", "group", "n", "step", "A(base)", "A(final)", "F", "BT", "consolidation"], rows,
                          numeric_from=2, caption="Base → final, 95% Wilson intervals over items")))  # fmt: skip
    seeds = comp.seeds[comp.seeds["n_seeds"] > 1]
    if len(seeds):
        srows = [[f"{r['model']} / {num(r['strategy'])}", group_label(r["kind"], r["probe_type"]), int(r["n_seeds"]),
                  *[ci_of(r.rename(lambda c: c.replace("_mean", "")), m) for m in ("acc_final", "forgetting",
                                                                                   "backward_transfer")]]
                 for _, r in seeds.iterrows()]  # fmt: skip
        sec.add(table(["model / strategy", "group", "seeds", "A(final)", "F", "BT"], srows, numeric_from=2,
                      caption="Over seeds: mean and 95% Student-t interval"))  # fmt: skip
    tests = comp.tests.dropna(subset=["kind"])
    if len(tests):
        trows = [[f"{r['run_a']} vs {r['run_b']}", group_label(r["kind"], r["probe_type"]), int(r["n"]),
                  num(r["acc_a"], 2), num(r["acc_b"], 2), ci_of(r, "diff"), f"{int(r['only_a'])} / {int(r['only_b'])}",
                  p_value(r["p_value"])] for _, r in tests.iterrows()]  # fmt: skip
        t = table(["runs a vs b", "group", "n", "A(a)", "A(b)", "b − a", "right only in a / b", "McNemar p"], trows,
                  numeric_from=2, caption="Paired tests on the probes both runs share, at the final step")  # fmt: skip
        sec.add(t if len(trows) <= 30 else details(f"paired tests ({len(trows)} rows)", t))
    return sec, comp


def setup_name(row: Any, one_model: bool) -> str:
    return num(row["strategy"]) if one_model else f"{row['model']} / {num(row['strategy'])}"


def setup_findings(comp: Comparison) -> list[str]:
    """With seeds, what differs between set-ups (model + strategy), over seeds: per headline group, the set-ups
    with the lowest and highest mean (final accuracy; forgetting for known facts) and whether their t-intervals
    over seeds are apart. Groups whose extremes are apart come first, largest gap first."""
    seeds = comp.seeds[(comp.seeds["n_seeds"] > 1) & comp.seeds["kind"].isin(HEADLINE_KINDS)]
    if seeds[["model", "strategy"]].drop_duplicates().shape[0] < 2:
        return []
    one_model = seeds["model"].nunique() == 1
    found = []
    for (kind, ptype), part in seeds.groupby(["kind", "probe_type"], sort=False):
        metric, word = ("forgetting", "forgetting F") if kind == "known" else ("acc_final", "final accuracy")
        part = part[part[f"{metric}_mean"].map(is_num)]
        if len(part) < 2:
            continue
        lo, hi = part.loc[part[f"{metric}_mean"].idxmin()], part.loc[part[f"{metric}_mean"].idxmax()]
        gap = float(hi[f"{metric}_mean"] - lo[f"{metric}_mean"])
        if gap == 0:
            continue
        apart = is_num(hi[f"{metric}_lo"]) and is_num(lo[f"{metric}_hi"]) and hi[f"{metric}_lo"] > lo[f"{metric}_hi"]
        ci = lambda r: with_ci(r[f"{metric}_mean"], r[f"{metric}_lo"], r[f"{metric}_hi"])  # noqa: E731
        items, unsupported = item_evidence(comp, kind, ptype, hi, lo)
        found.append((not apart or unsupported, unsupported, not apart, -gap,
                      f"{group_label(kind, ptype)}, {word} over {int(hi['n_seeds'])} seeds: "
                      f"highest {setup_name(hi, one_model)} {ci(hi)}, lowest {setup_name(lo, one_model)} {ci(lo)}; "
                      f"the t-intervals over seeds {'are apart' if apart else 'overlap'}.{items}"))  # fmt: skip
    return [text for *_, text in sorted(found, key=lambda f: f[:4])]


def item_evidence(comp: Comparison, kind: str, ptype: str, hi: Any, lo: Any) -> tuple[str, bool]:
    """What the items say beside the seeds (every seed scores the same probes, so a t-interval over seeds holds no
    item sampling: 2 of 6 probes right in every seed is [0.33, 0.33]): the paired tests of final accuracy between
    the two set-ups' runs (for known facts, also how many probes F is over), and whether the seeds' "apart" lacks
    that support (no run pair differs), which puts the group after those it has."""
    of = comp.runs.drop_duplicates("run")
    runs_of = lambda r: set(of["run"][(of["model"] == r["model"]) & (of["strategy"] == r["strategy"])])  # noqa: E731
    hi_runs, lo_runs = runs_of(hi), runs_of(lo)
    said = ""
    if kind == "known":
        n = comp.runs[(comp.runs["kind"] == kind) & (comp.runs["probe_type"] == ptype)].groupby("run")["n"].first()
        sizes = sorted({int(n[r]) for r in hi_runs | lo_runs if r in n.index})
        said = f" F is over {' and '.join(map(str, sizes))} probes right at the base." if sizes else ""
    t = comp.tests[(comp.tests["kind"] == kind) & (comp.tests["probe_type"] == ptype)]
    between = t[(t["run_a"].isin(hi_runs) & t["run_b"].isin(lo_runs)) | (t["run_a"].isin(lo_runs) & t["run_b"].isin(hi_runs))]
    if between.empty:
        return said, False
    k = int((between["p_value"] < ALPHA).sum())
    return (f"{said} Final accuracy paired over their {int(between['n'].max())} shared probes: {k} of {len(between)} run "
            f"pairs differ at p < {ALPHA} (McNemar).", k == 0)  # fmt: skip


def comparison_findings(runs: list[RunData], comp: Comparison) -> list[str]:
    """Set-up differences over seeds first (when there are seeds), then paired tests between runs, then per run."""
    out = setup_findings(comp)
    tests = comp.tests.dropna(subset=["kind"])
    tests = tests[tests["kind"] != KNOWN_WRONG_AT_BASE]
    setup = {r["run"]: (r["model"], r["strategy"]) for _, r in comp.runs.iterrows()}
    setups = [(setup.get(a), setup.get(b)) for a, b in zip(tests["run_a"], tests["run_b"])]
    same = pd.Series([sa == sb for sa, sb in setups], index=tests.index, dtype=bool)
    pair = ["|".join(sorted(map(str, both))) for both in setups]
    # differences between set-ups first (what a comparison is for), then those between seeds of one set-up
    sig = tests.assign(_seed_only=same, _pair=pair)[tests["p_value"] < ALPHA].sort_values(["_seed_only", "p_value"],
                                                                                         kind="stable")  # fmt: skip
    # one line per set-up pair and group (its smallest p): seeds of the same two set-ups would repeat it
    shown = sig.drop_duplicates(["_pair", "kind", "probe_type"]).head(SHOWN_TESTS)
    for _, r in shown.iterrows():
        b_better = r["diff"] > 0
        better, worse = (r["run_b"], r["run_a"]) if b_better else (r["run_a"], r["run_b"])
        acc_better, acc_worse = (r["acc_b"], r["acc_a"]) if b_better else (r["acc_a"], r["acc_b"])
        lo, hi = (r["diff_lo"], r["diff_hi"]) if b_better else (-r["diff_hi"], -r["diff_lo"])
        out.append(("Between seeds of one set-up, " if r["_seed_only"] else "") +
                   f"{group_label(r['kind'], r['probe_type'])}: {better} {num(acc_better, 2)} vs {worse} "
                   f"{num(acc_worse, 2)} at the final step, difference {with_ci(abs(r['diff']), lo, hi)}, McNemar "
                   f"{p_value(r['p_value'])} (n={int(r['n'])} shared probes).")  # fmt: skip
    n_undefined = int(tests["p_value"].isna().sum())
    rest = len(tests) - len(sig) - n_undefined
    if len(sig) > len(shown):
        out.append(f"{len(sig) - len(shown)} more pairs differ at p < {ALPHA}; see the paired-tests table.")
    out.append(f"{len(sig)} of {len(tests)} paired comparisons (run pair × group) differ at p < {ALPHA} (McNemar, "
               f"not corrected for multiple comparisons); {rest} do not" +
               (f"; {n_undefined} are undefined (no discordant probes or no shared probes)" if n_undefined else "")
               + ".")  # fmt: skip
    for run in runs:
        part = comp.runs[(comp.runs["run"] == run.label) & comp.runs["kind"].isin(["new", "known"])]
        bits = [f"{group_label(r['kind'], r['probe_type'])} A={ci_of(r, 'acc_final')}"
                + (f", F={ci_of(r, 'forgetting')}" if r["kind"] == "known" else "") for _, r in part.iterrows()]
        if bits:
            out.append(f"{run.label} (final step {num(part['step'].iloc[0])}): " + "; ".join(bits) + ".")
    seeds = comp.seeds[comp.seeds["n_seeds"] > 1]
    for _, r in seeds[seeds["kind"] == "new"].iterrows():
        out.append(f"Over {int(r['n_seeds'])} seeds of {r['model']} / {num(r['strategy'])}: "
                   f"{group_label(r['kind'], r['probe_type'])} final accuracy {num(r['acc_final_mean'], 2)} "
                   f"[{num(r['acc_final_lo'], 2)}–{num(r['acc_final_hi'], 2)}] (t-interval over seeds).")  # fmt: skip
    return out
