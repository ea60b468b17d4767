"""The numbers of docs/findings.md, from finished sweeps: python docs/findings_tables.py runs/sweeps [--out FILE]

Reads each run's probes.parquet, analysis/ and circuit tables under SWEEPS/strategies, relevance, models, forgetting
and circuits (whichever exist) and prints markdown tables. Two kinds of interval:
- over seeds: mean and Student-t 95% interval of the per-run value (3 seeds: t = 4.30, wide by design);
- paired by probe: each probe's correctness averaged over the seeds of strategy A and of B, the difference
  averaged over probes, 95% percentile bootstrap over probes (kdyn's `Bootstrap`, 2,000 replicates, seed 0).
  Same benchmark in every run (the suites fix the benchmark seed), so every probe has a partner.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from kdyn.analysis.exposure import buckets
from kdyn.analysis.stats import Bootstrap, seed_mean_ci

LEARNED = ("new", "related", "updated")
BOOTSTRAP = Bootstrap(replicates=2000, seed=0)  # kdyn's own resampler: fixed seed per table, so reruns print the same digits


def load_runs(suite_dir: Path) -> pd.DataFrame:
    """One row per finished run: name, label (grid point), seed, path."""
    rows = []
    for run in sorted(p for p in suite_dir.iterdir() if (p / "manifest.json").exists()):
        manifest = json.loads((run / "manifest.json").read_text())
        if manifest.get("status") != "complete" or not (run / "analysis" / "summary.json").exists():
            continue
        label, _, seed = run.name.rpartition("-s")
        seconds = manifest["seconds"]
        if seconds < manifest.get("train_seconds", 0) + manifest.get("probe_seconds", 0):
            seconds = math.nan  # the last session's time only (resumed before kdyn summed the sessions): not the run's
        rows.append({"name": run.name, "label": label, "seed": int(seed), "path": run, "minutes": seconds / 60})
    return pd.DataFrame(rows)


def tokens_seen(run: Path) -> pd.Series:
    """Training tokens seen by each probed step (cumulative over train_log.parquet), indexed by step."""
    log = pd.read_parquet(run / "train_log.parquet", columns=["step", "tokens"]).sort_values("step")
    steps = pd.read_parquet(run / "probes.parquet", columns=["step"])["step"].drop_duplicates().sort_values()
    cum = log.set_index("step")["tokens"].cumsum()
    return cum.reindex(steps.to_numpy(), method="ffill").fillna(0).astype(int)  # steps before the first log: 0


def final_correct(run: Path, step: int | None = None) -> pd.DataFrame:
    """probe_id, kind, probe_type, correct at the last probed step, or at `step` (known probes wrong at base flagged)."""
    p = pd.read_parquet(run / "probes.parquet")
    last = p[p["step"] == (p["step"].max() if step is None else step)]
    base = p[p["step"] == 0].set_index("probe_id")["correct"]
    return last.assign(base=last["probe_id"].map(base))[["probe_id", "kind", "probe_type", "correct", "base"]]


def seed_ci(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """'mean [lo, hi]': Student-t 95% interval over seeds, clipped to the quantity's range (a rate by default, as
    in kdyn's seed comparison); the mean alone for one seed."""
    mean, lo, hi = seed_mean_ci(np.asarray(values, dtype=float), bounds=bounds)
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.2f}" if not np.isfinite(hi) else f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


def group_mask(df: pd.DataFrame, kinds: tuple[str, ...], ptype: str) -> pd.Series:
    return df["kind"].isin(kinds) & (df["probe_type"] == ptype)


def per_run(finals: dict[str, pd.DataFrame], names: list[str], kinds: tuple[str, ...], ptype: str,
            what: str = "acc") -> list[float]:  # fmt: skip
    """Per run: final accuracy of a group, or forgetting F (right at base → wrong now) / the change in accuracy."""
    out = []
    for n in names:
        f = finals[n][group_mask(finals[n], kinds, ptype)]
        if f.empty:
            continue
        c, b = f["correct"].astype(float), f["base"].astype(float)
        out.append({"acc": c.mean(), "F": ((b == 1) & (c == 0)).mean(), "delta": c.mean() - b.mean()}[what])
    return out


def known_forgetting(finals: dict[str, pd.DataFrame], names: list[str], ptype: str | None, bt: bool = False) -> list[float]:
    """Per run, over the known probes of one type (None: all types): F = share of those right at the base that are
    wrong at the end; with `bt`, BT = share of those wrong at the base that are right at the end. NaN when the
    denominator is empty."""
    out = []
    for n in names:
        f = finals[n][finals[n]["kind"] == "known"]
        f = f if ptype is None else f[f["probe_type"] == ptype]
        start = f["base"] == (0 if bt else 1)
        end = f["correct"] == (1 if bt else 0)
        out.append((start & end).sum() / start.sum() if start.sum() else float("nan"))
    return out


def interval_cell(diff: float, replicates: np.ndarray) -> str:
    """'+d [lo, hi]' with the 95% percentile interval of the bootstrap replicates, and ' *' when it excludes 0."""
    lo, hi = (float(v[0]) for v in BOOTSTRAP.ci(replicates))
    return f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}"


def seed_mean(finals: dict[str, pd.DataFrame], names: list[str], keep: Callable[[pd.DataFrame], pd.Series]) -> pd.Series:
    """Per probe (indexed by probe_id), final correctness averaged over the runs `names`, on the rows `keep` selects."""
    return pd.concat([finals[n][keep(finals[n])].set_index("probe_id")["correct"].astype(float) for n in names],
                     axis=1).mean(axis=1)  # fmt: skip


def paired_cell(first: pd.Series, second: pd.Series, key: str) -> str:
    """second − first over the probes both have, with a bootstrap CI over probes (`key` seeds it); '—' when none."""
    diff = (second - first).dropna().to_numpy()
    if diff.size == 0:
        return "—"
    return interval_cell(diff.mean(), BOOTSTRAP.means(diff, key))


def paired(finals: dict[str, pd.DataFrame], a: list[str], b: list[str], kinds: tuple[str, ...], ptype: str) -> str:
    """B − A in final accuracy, paired by probe (seeds averaged per probe), bootstrap CI over probes."""
    keep = lambda f: group_mask(f, kinds, ptype)  # noqa: E731
    return paired_cell(seed_mean(finals, a, keep), seed_mean(finals, b, keep), f"paired:{kinds}:{ptype}")


def strategies_tables(suite: Path) -> str:
    runs = load_runs(suite)
    if runs.empty:
        return "strategies: no finished runs\n"
    finals = {r.name: final_correct(r.path) for r in runs.itertuples()}
    order = [s for s in ["full", "lora", "replay", "kl", "sam", "formats", "sam+formats", "paraphrase"] if s in set(runs["label"])]
    names = {s: runs[runs["label"] == s]["name"].tolist() for s in order}
    out = [f"Strategies ({len(runs)} finished runs; seeds per strategy: "
           + ", ".join(f"{s} {len(names[s])}" for s in order) + ")\n",
           "Final accuracy, mean [t 95% CI over seeds, clipped to the range]:\n",
           "| strategy | new cloze | new qa | learned qa (new+related+updated) | learned mcq | known F: cloze | known F: qa | "
           "known F: mcq | known F: all | known BT: all | arithmetic Δacc | minutes/run (timed whole) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in order:
        n = names[s]
        known = lambda t: seed_ci(known_forgetting(finals, n, t))  # noqa: E731
        out.append(f"| {s} | {seed_ci(per_run(finals, n, ('new',), 'cloze'))} | {seed_ci(per_run(finals, n, ('new',), 'qa'))} | "
                   f"{seed_ci(per_run(finals, n, LEARNED, 'qa'))} | {seed_ci(per_run(finals, n, LEARNED, 'mcq'))} | "
                   f"{known('cloze')} | {known('qa')} | {known('mcq')} | {known(None)} | "
                   f"{seed_ci(known_forgetting(finals, n, None, bt=True))} | "
                   f"{seed_ci(per_run(finals, n, ('skill',), 'arithmetic', 'delta'), (-1.0, 1.0))} | "
                   f"{runs[runs['label'] == s]['minutes'].mean():.1f} |")  # fmt: skip
    out += ["", "Paired by probe against `full` (B − full; seeds averaged per probe; bootstrap 95% CI over probes; * = "
            "interval excludes 0):\n",
            "| strategy | learned qa | learned cloze | learned mcq | known qa | known cloze | arithmetic |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in order[1:]:
        a, b = names["full"], names[s]
        out.append(f"| {s} | {paired(finals, a, b, LEARNED, 'qa')} | {paired(finals, a, b, LEARNED, 'cloze')} | "
                   f"{paired(finals, a, b, LEARNED, 'mcq')} | {paired(finals, a, b, ('known',), 'qa')} | "
                   f"{paired(finals, a, b, ('known',), 'cloze')} | {paired(finals, a, b, ('skill',), 'arithmetic')} |")
    extra = [("sam+formats", "sam"), ("sam+formats", "formats"), ("paraphrase", "formats")]
    out += ["", "Other pairs (B − A, same method):\n", "| A → B | learned qa | learned cloze | learned mcq |", "|---|---|---|---|"]
    for b_, a_ in extra:
        if a_ in names and b_ in names:
            a, b = names[a_], names[b_]
            out.append(f"| {a_} → {b_} | {paired(finals, a, b, LEARNED, 'qa')} | {paired(finals, a, b, LEARNED, 'cloze')} | "
                       f"{paired(finals, a, b, LEARNED, 'mcq')} |")
    out += ["", *(t for t in (equal_tokens_table(runs, names, finals), control_table(suite.parent / "control", names, finals)) if t)]
    out.append(loss_knowledge_table(runs, "strategies"))
    return "\n".join(out) + "\n"


def forgetting_tables(suite: Path) -> str:
    """H3: recipes on the same known probes. Per recipe, F and BT over the known probes right (wrong) at the base;
    against `full`, the difference in F paired by probe over the probes right at the base (the base is one model:
    the same probes in every run); and, for a recipe with two seeds, the seed-to-seed difference it is read against."""
    runs = load_runs(suite)
    if runs.empty:
        return "forgetting: no finished runs\n"
    finals = {r.name: final_correct(r.path) for r in runs.itertuples()}
    order = [s for s in ["full", "lora", "replay", "kl"] if s in set(runs["label"])]
    order += sorted(set(runs["label"]) - set(order))
    names = {s: runs[runs["label"] == s].sort_values("seed")["name"].tolist() for s in order}
    first = finals[runs["name"].iloc[0]]
    known = first[first["kind"] == "known"]
    right = known[known["base"] == 1].groupby("probe_type").size()
    arith = first[first["kind"] == "skill"]
    out = [f"Forgetting ({len(runs)} finished runs; seeds per recipe: " + ", ".join(f"{s} {len(names[s])}" for s in order)
           + "). Known probes right at the base: " + ", ".join(f"{t} {int(right.get(t, 0))} of {int((known['probe_type'] == t).sum())}"
           for t in ("cloze", "qa", "mcq")) + f"; arithmetic {int(arith['base'].sum())} of {len(arith)}.\n",
           "Mean over seeds [t 95% CI; the value alone for one seed]:\n",
           "| recipe | known F: cloze | known F: qa | known F: mcq | known F: all | known BT: all | arithmetic Δacc | "
           "new cloze | new qa | minutes/run (timed whole) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in order:
        n = names[s]
        out.append(f"| {s} | " + " | ".join(seed_ci(known_forgetting(finals, n, t)) for t in ("cloze", "qa", "mcq", None))
                   + f" | {seed_ci(known_forgetting(finals, n, None, bt=True))} | "
                   f"{seed_ci(per_run(finals, n, ('skill',), 'arithmetic', 'delta'), (-1.0, 1.0))} | "
                   f"{seed_ci(per_run(finals, n, ('new',), 'cloze'))} | {seed_ci(per_run(finals, n, ('new',), 'qa'))} | "
                   f"{runs[runs['label'] == s]['minutes'].mean():.1f} |")  # fmt: skip
    pairs = [(f"{s} − full", names["full"], names[s]) for s in order[1:]] if "full" in names else []
    for s in order:  # two seeds of one recipe: the noise a recipe difference is read against
        if len(names[s]) > 1:
            a, b = names[s][:2]
            pairs.append((f"{b} − {a} (seeds of {s}: the noise)", [a], [b]))
    if pairs:
        out += ["", "F(B) − F(A), paired by probe over the known probes right at the base (seeds averaged per probe; "
                "bootstrap 95% CI over probes; * = interval excludes 0); arithmetic: final accuracy B − A over all its probes:\n",
                "| B − A | known F: cloze | known F: qa | known F: mcq | known F: all | arithmetic |", "|---|---|---|---|---|---|"]  # fmt: skip
        for label, a, b in pairs:
            out.append(f"| {label} | " + " | ".join(paired_forgetting(finals, a, b, t) for t in ("cloze", "qa", "mcq", None))
                       + f" | {paired(finals, a, b, ('skill',), 'arithmetic')} |")
    return "\n".join(out) + "\n"


def paired_forgetting(finals: dict[str, pd.DataFrame], a: list[str], b: list[str], ptype: str | None) -> str:
    """F(B) − F(A) over the known probes right at the base (one type, or all for None): per probe, A's final
    correctness minus B's, each averaged over its seeds; bootstrap CI over probes."""
    keep = lambda f: (f["kind"] == "known") & (f["base"] == 1) & ((f["probe_type"] == ptype) if ptype else True)  # noqa: E731
    return paired_cell(seed_mean(finals, b, keep), seed_mean(finals, a, keep), f"forgetting:{ptype}")


def equal_tokens_table(runs: pd.DataFrame, names: dict[str, list[str]], finals: dict[str, pd.DataFrame]) -> str:
    """Data augmentations that train on more tokens than `full` (formats: every document in 3 formats), read at their
    probed step nearest to `full`'s total tokens, against `full` at its end: the comparison at (about) equal training
    tokens. (Replay also trains on more tokens, but they are not the facts' documents, so it is left out.)"""
    if "full" not in names:
        return ""
    path = dict(zip(runs["name"], runs["path"]))
    budget = float(np.mean([tokens_seen(path[n]).iloc[-1] for n in names["full"]]))
    out = [f"At equal training tokens: each strategy at its probed step nearest to `full`'s {budget:,.0f} tokens, B − full "
           "at its end (paired by probe, as above):\n",
           "| strategy | its step (tokens) | learned qa | learned cloze | learned mcq |", "|---|---|---|---|---|"]  # fmt: skip
    early: dict[str, pd.DataFrame] = {}  # run → its correctness at the step nearest the budget
    for s, ns in names.items():
        if not {"formats", "paraphrase"} & set(s.split("+")):
            continue
        seen = {n: tokens_seen(path[n]) for n in ns}
        if seen[ns[0]].iloc[-1] < 1.2 * budget:
            continue
        steps = {n: int((seen[n] - budget).abs().idxmin()) for n in ns}
        if any(abs(seen[n][steps[n]] - budget) > 0.25 * budget for n in ns):  # e.g. one epoch, probed at its end only
            out.append(f"| {s} | no probed step within 25% of {budget:,.0f} tokens | — | — | — |")
            continue
        early |= {n: final_correct(path[n], steps[n]) for n in ns}
        where = [f"{steps[n]} ({seen[n][steps[n]]:,})" for n in ns]
        both = finals | {n: early[n] for n in ns}
        out.append(f"| {s} | {', '.join(sorted(set(where)))} | {paired(both, names['full'], ns, LEARNED, 'qa')} | "
                   f"{paired(both, names['full'], ns, LEARNED, 'cloze')} | {paired(both, names['full'], ns, LEARNED, 'mcq')} |")
    if len(out) == 3:
        return ""
    if "formats" in names and "paraphrase" in names and all(n in early for n in names["formats"]):
        # Z4 at equal tokens, as one paired test: paraphrase trains on full's tokens, so its end against formats early
        a, b, both = names["formats"], names["paraphrase"], finals | early
        out += ["", "| A (at equal tokens) → B (at its end) | learned qa | learned cloze | learned mcq |", "|---|---|---|---|",
                f"| formats → paraphrase | {paired(both, a, b, LEARNED, 'qa')} | {paired(both, a, b, LEARNED, 'cloze')} | "
                f"{paired(both, a, b, LEARNED, 'mcq')} |"]  # fmt: skip
    return "\n".join(out) + "\n"


def control_table(folder: Path, names: dict[str, list[str]], finals: dict[str, pd.DataFrame]) -> str:
    """Runs in SWEEPS/control (e.g. `full8`: full fine-tuning for 8 epochs, about formats' 3-epoch tokens) against
    the strategies at their ends, paired by probe (same benchmark)."""
    runs = load_runs(folder) if folder.is_dir() else pd.DataFrame()
    if runs.empty:
        return ""
    both = finals | {r.name: final_correct(r.path) for r in runs.itertuples()}
    out = [f"Controls ({folder.name}/): B − control at both ends, paired by probe (as above):\n",
           "| control (runs, tokens) | B | learned qa | learned cloze | learned mcq | known qa | known cloze |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, part in runs.groupby("label", sort=False):
        ctl = part["name"].tolist()
        tokens = np.mean([tokens_seen(p).iloc[-1] for p in part["path"]])
        for b in [s for s in ("full", "formats", "sam+formats", "paraphrase") if s in names]:
            out.append(f"| {label} ({len(ctl)}, {tokens:,.0f}) | {b} | " + " | ".join(
                paired(both, ctl, names[b], kinds, t) for kinds, t in
                [(LEARNED, "qa"), (LEARNED, "cloze"), (LEARNED, "mcq"), (("known",), "qa"), (("known",), "cloze")]) + " |")  # fmt: skip
    return "\n".join(out) + "\n"


def models_tables(suite: Path) -> str:
    """The same recipe on two models: base knowledge, what each learnt, what each forgot, gemma3 − smollm2 paired."""
    runs = load_runs(suite)
    if runs.empty:
        return "models: no finished runs\n"
    finals = {r.name: final_correct(r.path) for r in runs.itertuples()}
    order = sorted(set(runs["label"]), key=lambda m: (m != "smollm2", m))
    names = {m: runs[runs["label"] == m]["name"].tolist() for m in order}
    base = lambda n, t: f"{np.mean([finals[x].loc[group_mask(finals[x], ('known',), t), 'base'].astype(float).mean() for x in n]):.2f}"  # noqa: E731  (the base is the same model in every seed)
    out = [f"Models ({len(runs)} finished runs; seeds per model: " + ", ".join(f"{m} {len(names[m])}" for m in order) + ")\n",
           "Mean [t 95% CI over seeds, clipped to the range]; known facts are scored against what each model knew at its base:\n",
           "| model | known right at base: cloze / qa / mcq | learned cloze | learned qa | learned mcq | known F: cloze | "
           "known F: qa | known F: mcq | arithmetic Δacc | minutes/run (timed whole) |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in order:
        n = names[m]
        out.append(f"| {m} | {base(n, 'cloze')} / {base(n, 'qa')} / {base(n, 'mcq')} | "
                   f"{seed_ci(per_run(finals, n, LEARNED, 'cloze'))} | {seed_ci(per_run(finals, n, LEARNED, 'qa'))} | "
                   f"{seed_ci(per_run(finals, n, LEARNED, 'mcq'))} | {seed_ci(known_forgetting(finals, n, 'cloze'))} | "
                   f"{seed_ci(known_forgetting(finals, n, 'qa'))} | {seed_ci(known_forgetting(finals, n, 'mcq'))} | "
                   f"{seed_ci(per_run(finals, n, ('skill',), 'arithmetic', 'delta'), (-1.0, 1.0))} | "
                   f"{runs[runs['label'] == m]['minutes'].mean():.1f} |")  # fmt: skip
    if len(order) == 2:
        a, b = order
        out += ["", f"Paired by probe, {b} − {a} (seeds averaged per probe; bootstrap 95% CI over probes; * = interval "
                "excludes 0):\n", "| learned cloze | learned qa | learned mcq | known cloze | known qa | known mcq | arithmetic |",
                "|---|---|---|---|---|---|---|",
                "| " + " | ".join(paired(finals, names[a], names[b], kinds, t) for kinds, t in
                                 [(LEARNED, "cloze"), (LEARNED, "qa"), (LEARNED, "mcq"), (("known",), "cloze"),
                                  (("known",), "qa"), (("known",), "mcq"), (("skill",), "arithmetic")]) + " |"]  # fmt: skip
    out += ["", loss_knowledge_table(runs, "models")]
    return "\n".join(out) + "\n"


def loss_knowledge_table(runs: pd.DataFrame, suite: str) -> str:
    """M1/M3 over runs: checkpoints where loss fell and accuracy fell, loss- vs knowledge-optimal step, fact-NLL AUROC."""
    rows = []
    for r in runs.itertuples():
        lk = pd.read_parquet(r.path / "analysis" / "loss_knowledge.parquet")
        cons = pd.read_parquet(r.path / "analysis" / "consolidation.parquet").set_index(["kind", "probe_type"])
        curves = pd.read_parquet(r.path / "analysis" / "curves.parquet")
        last = curves[curves["step"] == curves["step"].max()].set_index(["kind", "probe_type"])["auroc_nll"]
        for x in lk.itertuples():
            key = (x.kind, x.probe_type)
            c = cons.reindex([key])
            rows.append({"label": r.label, "kind": x.kind, "probe_type": x.probe_type, "n_ckpt": x.n_checkpoints,
                         "fell": x.n_loss_fell_acc_fell, "differ": (np.isfinite(x.loss_optimal_step) and np.isfinite(x.knowledge_optimal_step)
                                   and x.loss_optimal_step != x.knowledge_optimal_step),
                         "lost": x.acc_lost_by_loss_stopping, "spearman": x.spearman,
                         "flips": float(c["mean_flips"].iloc[0]), "cons": float(c["consolidation_rate"].iloc[0]),
                         "windows": float(c["mean_windows"].iloc[0]), "auroc": float(last.get(key, np.nan))})  # fmt: skip
    d = pd.DataFrame(rows)
    d = d[d["kind"].isin([*LEARNED, "known", "skill"])]
    g = d.groupby(["kind", "probe_type"], sort=False)
    out = [f"Loss vs knowledge over all {len(runs)} {suite} runs (per group: runs, mean over runs):\n",
           "| group | runs | checkpoints where loss fell and accuracy fell (mean) | runs where loss- and knowledge-optimal "
           "checkpoints differ | accuracy lost by stopping at lowest loss (mean) | Spearman ρ(−loss, acc) (mean) | "
           "consolidation rate (mean) | flips per probe (mean) | AUROC of fact NLL at the end (mean) |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (kind, pt), part in g:
        out.append(f"| {kind} {pt} | {len(part)} | {part['fell'].mean():.2f} (max {part['fell'].max():.0f}, of "
                   f"{part['n_ckpt'].iloc[0] - 1}) | {int(part['differ'].sum())} | {part['lost'].mean():.3f} | "
                   f"{part['spearman'].mean():.2f} | {part['cons'].mean():.2f} | {part['flips'].mean():.2f} | "
                   f"{part['auroc'].mean():.2f} |")  # fmt: skip
    return "\n".join(out) + "\n"


def seed_averaged(runs: pd.DataFrame) -> pd.DataFrame:
    """Trained facts' final correctness, each probe averaged over the seeds (same benchmark), with its fact's
    entity and exposure bucket."""
    bench = runs["path"].iloc[0] / "bench"
    facts = pd.read_json(bench / "facts.jsonl", lines=True).set_index("fact_id")
    probes = pd.read_json(bench / "probes.jsonl", lines=True).set_index("probe_id")["fact_id"]
    per = pd.concat([final_correct(r.path).set_index("probe_id") for r in runs.itertuples()])
    per = per[per["kind"].isin(LEARNED)].assign(correct=lambda d: d["correct"].astype(float))
    per = per.groupby(["probe_id", "probe_type", "kind"])["correct"].mean().reset_index()
    fact = per["probe_id"].map(probes)
    per["entity"] = fact.map(facts["entity_id"]).to_numpy()
    per["bucket"] = buckets(fact.map(facts["exposures"]).to_numpy(dtype=np.float64))
    return per


def contrast(per: pd.DataFrame, column: str, ref: str, others: tuple[str, ...], title: str) -> str:
    """Final accuracy of each level of `column` minus that of `ref`, per probe type: the seeds averaged per probe,
    a bootstrap over the entities of each level independently (a person's facts move together), 2,000 replicates."""
    out = [f"{title}\n", f"| probe | n {' / '.join((ref, *others))} (entities) | "
           + " | ".join(f"{o} − {ref}" for o in others) + " |", "|---|---|" + "---|" * len(others)]
    for pt, part in per.groupby("probe_type"):
        x = {b: part[part[column] == b] for b in (ref, *others)}
        boot = {b: BOOTSTRAP.means(d["correct"].to_numpy(), f"{column}:{pt}:{b}", d["entity"].to_numpy())
                for b, d in x.items() if len(d)}  # fmt: skip
        cells = []
        for b in others:
            if b not in boot or ref not in boot:
                cells.append("—")
                continue
            cells.append(interval_cell(x[b]["correct"].mean() - x[ref]["correct"].mean(), boot[b] - boot[ref]))
        sizes = " / ".join(f"{len(d)} ({d['entity'].nunique()})" for d in x.values())
        out.append(f"| {pt} | {sizes} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def exposure_contrast(per: pd.DataFrame) -> str:
    """D2: high and medium exposure against low, trained facts of every kind pooled (`per`: seed_averaged)."""
    return contrast(per, "bucket", "low", ("medium", "high"),
                    "Exposure contrasts (trained facts, seeds averaged per probe, bootstrap over entities within each bucket):")


def kind_contrast(per: pd.DataFrame) -> str:
    """D1: related and updated facts against new ones, as they are and at new facts' exposure (`per`: seed_averaged)."""
    return "\n".join([
        contrast(per, "kind", "new", ("related", "updated"),
                 "Kind contrasts (final accuracy, seeds averaged per probe, bootstrap over entities within each kind):"),
        standardised_contrast(per, ("related", "updated"))])  # fmt: skip


def standardised_contrast(per: pd.DataFrame, others: tuple[str, ...], ref: str = "new") -> str:
    """Each kind's exposure buckets weighted as `ref`'s (a person's facts share one exposure draw, so new facts are
    seen more often than related or updated ones): Σ_b w_b (acc_kind,b − acc_ref,b), w_b = ref's share in bucket b;
    a bootstrap over entities within each kind × bucket cell (cells share no entity)."""
    out = [f"Kind contrasts at {ref} facts' exposure (buckets weighted as {ref}'s; bootstrap over entities per kind × bucket):\n",
           "| probe | " + " | ".join(f"{o} − {ref}" for o in others) + " |", "|---|" + "---|" * len(others)]  # fmt: skip
    for pt, part in per.groupby("probe_type"):
        w = part[part["kind"] == ref]["bucket"].value_counts(normalize=True)
        cells = []
        for o in others:
            diff, boot = 0.0, 0.0
            for b, share in w.items():
                x = {k: part[(part["kind"] == k) & (part["bucket"] == b)] for k in (o, ref)}
                if not all(len(d) for d in x.values()):
                    diff = math.nan
                    break
                means = {k: BOOTSTRAP.means(d["correct"].to_numpy(), f"std:{pt}:{k}:{b}", d["entity"].to_numpy())
                         for k, d in x.items()}  # fmt: skip
                diff += share * (x[o]["correct"].mean() - x[ref]["correct"].mean())
                boot = boot + share * (means[o] - means[ref])
            if math.isnan(diff):
                cells.append("— (an empty bucket)")
                continue
            cells.append(interval_cell(diff, boot))
        out.append(f"| {pt} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def base_to_final(runs: pd.DataFrame) -> str:
    """H1, H2, M5: every known and skill probe, right and wrong at the base, base → final (mean over runs)."""
    rows = []
    for r in runs.itertuples():
        finals = final_correct(r.path)
        for (kind, pt), g in finals[finals["kind"].isin(["known", "skill"])].groupby(["kind", "probe_type"]):
            b, f = g["base"].astype(bool), g["correct"].astype(bool)
            rows.append({"group": f"{kind} {pt}", "n": len(g), "right": int(b.sum()), "base": b.mean(), "final": f.mean(),
                         "lost": int((b & ~f).sum()), "gained": int((~b & f).sum())})  # fmt: skip
    d = pd.DataFrame(rows).groupby("group", sort=False).mean()
    out = ["Known facts and skills, base → final, every probe (right and wrong at the base; mean over runs):\n",
           "| group | probes | right at the base | accuracy base → final | right → wrong (F of those right) | "
           "wrong → right (BT of those wrong) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for g, x in d.iterrows():
        wrong = x["n"] - x["right"]
        out.append(f"| {g} | {x['n']:.0f} | {x['right']:.1f} | {x['base']:.3f} → {x['final']:.3f} | {x['lost']:.1f} "
                   f"({x['lost'] / x['right']:.2f}) | {x['gained']:.1f} ({x['gained'] / wrong if wrong else math.nan:.2f}) |")  # fmt: skip
    return "\n".join(out) + "\n"


def relevance_tables(suite: Path) -> str:
    runs = load_runs(suite)
    if runs.empty:
        return "relevance: no finished runs\n"
    comp = suite / "comparison"
    out = [f"Relevance ({len(runs)} finished runs, {runs['minutes'].mean():.1f} min per run)\n"]
    seeds = pd.read_parquet(comp / "compare_seeds.parquet") if (comp / "compare_seeds.parquet").exists() else None
    if seeds is not None:
        out += ["Per kind, mean over seeds [t 95% CI]:\n",
                "| kind | probe | final accuracy | forgetting F (base → final) | acquisition BT (base → final) | consolidation rate |",
                "|---|---|---|---|---|---|"]
        for r in seeds[seeds["kind"].isin([*LEARNED, "known", "skill"])].itertuples():
            f = lambda m: "—" if not np.isfinite(getattr(r, f"{m}_mean")) else (  # noqa: E731
                f"{getattr(r, f'{m}_mean'):.2f} [{max(0.0, getattr(r, f'{m}_lo')):.2f}, {min(1.0, getattr(r, f'{m}_hi')):.2f}]")
            out.append(f"| {r.kind} | {r.probe_type} | {f('acc_final')} | {f('forgetting')} | {f('backward_transfer')} | "
                       f"{f('consolidation_rate')} |")
    parts = []
    for r in runs.itertuples():  # steps per epoch differ between seeds (packing): first acquisition in epochs
        t = pd.read_parquet(r.path / "analysis" / "trajectories.parquet")
        epoch = pd.read_parquet(r.path / "probes.parquet", columns=["step", "epoch"]).drop_duplicates().set_index("step")["epoch"]
        parts.append(t.assign(first_epoch=t["first_acquired_step"].map(epoch)))
    tr = pd.concat(parts)
    tr = tr[tr["kind"].isin(LEARNED)]
    out += ["", "First acquisition (probes ever right; epoch of the first right answer, pooled over seeds):\n",
            "| kind | probe | ever right / all | median first epoch | mean first epoch |", "|---|---|---|---|---|"]
    for (kind, pt), part in tr.groupby(["kind", "probe_type"]):
        ever = part["first_epoch"].notna()
        out.append(f"| {kind} | {pt} | {int(ever.sum())} / {len(part)} | {part.loc[ever, 'first_epoch'].median():.0f} | "
                   f"{part.loc[ever, 'first_epoch'].mean():.2f} |")
    per = seed_averaged(runs)
    exp = comp / "exposure_seeds.parquet"
    if exp.exists():
        e = pd.read_parquet(exp)
        e = e[e["kind"] == "trained"] if (e["kind"] == "trained").any() else e
        out += ["", "Exposure buckets (copies per epoch: low 1, medium 2–5, high > 5), kinds pooled, mean over seeds [t 95% CI]:\n",
                "| bucket | probe | final accuracy | acquisition BT | consolidation rate |", "|---|---|---|---|---|"]
        for r in e.itertuples():
            f = lambda m: "—" if not np.isfinite(getattr(r, f"{m}_mean")) else (  # noqa: E731
                f"{getattr(r, f'{m}_mean'):.2f} [{max(0.0, getattr(r, f'{m}_lo')):.2f}, {min(1.0, getattr(r, f'{m}_hi')):.2f}]")
            out.append(f"| {r.bucket} | {r.probe_type} | {f('acc_final')} | {f('backward_transfer')} | {f('consolidation_rate')} |")
        out += ["", exposure_contrast(per)]
    out += ["", kind_contrast(per), "", base_to_final(runs), "", loss_knowledge_table(runs, "relevance")]
    return "\n".join(out) + "\n"


ANY = (-np.inf, np.inf)


def circuits_tables(suite: Path) -> str:
    """M7, D3, D4 from the `circuits` suite: per relation and checkpoint, the circuit metrics as mean over seeds [t 95%
    CI]; the change-point tests of every run; and the three contrasts the claims are read from.

    - M7 (reconfiguration): consecutive checkpoints' circuits from disjoint halves of the prompts (`jaccard_halves_prev`)
      against two halves at one checkpoint (`noise_floor_jaccard`, the same prompt count): below the floor = the
      circuit changed more than resampling its prompts changes it.
    - D3 (formation → optimisation): the entropy change point (likelihood-ratio test against one segment, level 0.05).
    - D4 (deep → shallow): mean source depth of circuit edges (0 = embeddings, 1 = last layer), final − base."""
    runs = load_runs(suite)
    if runs.empty:
        return "no finished runs\n"
    frames = []
    for r in runs.itertuples():
        path = r.path / "circuit_metrics.parquet"
        if path.is_file():
            frames.append(pd.read_parquet(path).assign(seed=r.seed, run=r.name))
    if not frames:
        return "no circuit_metrics.parquet in the finished runs\n"
    m = pd.concat(frames, ignore_index=True)
    seeds = sorted(m["seed"].unique())
    out = [f"{len(runs)} runs (seeds {', '.join(map(str, seeds))}), {len(m['step'].unique())} circuit checkpoints; "
           f"training + probing minutes per run (manifest.json; circuits come after): "
           f"{', '.join(f'{x:.0f}' for x in runs['minutes'])}\n"]
    cols = [("jaccard_edges_prev", (0, 1)), ("jaccard_edges_base", (0, 1)), ("jaccard_halves_prev", (0, 1)),
            ("noise_floor_jaccard", (0, 1)),
            ("entropy", (0, np.inf)), ("faithfulness", ANY), ("faithfulness_random", ANY), ("mean_source_depth", (0, 1))]
    for rel, g in m.groupby("relation", sort=False):
        out += [f"### {rel}\n", "| step | prompts | Jaccard with previous | with base | halves, with previous | noise floor (halves, "
                "same step) | entropy | faithfulness | random (connected) | mean source depth |", "|---|---|---|---|---|---|---|---|---|---|"]
        for step, h in g.groupby("step"):
            cells = [f"{int(h['n_prompts'].min())}" if h["n_prompts"].nunique() == 1 else f"{int(h['n_prompts'].min())}–{int(h['n_prompts'].max())}"]
            cells += [seed_ci(h[c].tolist(), b) for c, b in cols]
            out.append(f"| {step} | " + " | ".join(cells) + " |")
        below = g.dropna(subset=["jaccard_halves_prev", "noise_floor_jaccard"])
        gap = below["noise_floor_jaccard"] - below["jaccard_halves_prev"]
        per_seed = gap.groupby(below["seed"]).mean()
        depth = g.sort_values("step").groupby("seed")["mean_source_depth"].agg(lambda x: x.iloc[-1] - x.iloc[0])
        out += ["", f"- M7, {rel}: halves-with-previous below the noise floor at {int((gap > 0).sum())} of {len(gap)} "
                f"checkpoint transitions (all seeds); floor − overlap, mean over transitions per seed, over seeds: "
                f"{seed_ci(per_seed.tolist(), ANY)}",
                f"- D4, {rel}: mean source depth final − base over seeds: {seed_ci(depth.tolist(), ANY)} (negative = toward "
                f"shallower sources, as the claim has it)"]
        cps = []
        for r in runs.itertuples():
            cp_path = r.path / "circuits" / "change_point.json"
            cp = json.loads(cp_path.read_text()).get(rel, {}) if cp_path.is_file() else {}
            for metric in ("entropy", "jaccard_edges_prev"):
                c = cp.get(metric, {})
                if c.get("status") == "change point":
                    cps.append(f"{r.name} {metric}: step {c.get('step')} [{c.get('ci_low')}–{c.get('ci_high')}], p = {c.get('p_value'):.3f}")
                else:
                    p_txt = f", p = {c['p_value']:.3f}" if isinstance(c.get("p_value"), (int, float)) else ""
                    cps.append(f"{r.name} {metric}: {c.get('status', 'missing')}{p_txt}")
        out += [f"- D3, {rel}, change points: " + "; ".join(cps), ""]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", type=Path, help="folder holding strategies/, relevance/, models/, forgetting/ and circuits/")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    args = ap.parse_args(argv)
    text = ""
    for suite, fn in (("strategies", strategies_tables), ("relevance", relevance_tables), ("models", models_tables),
                      ("forgetting", forgetting_tables), ("circuits", circuits_tables)):
        if (args.sweeps / suite).is_dir():
            text += f"## {suite}\n\n" + fn(args.sweeps / suite) + "\n"
    if not text:
        print(f"no strategies/, relevance/, models/, forgetting/ or circuits/ sweep under {args.sweeps}", file=sys.stderr)
        return 1
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
