"""Every generated sentence of the report's acquisition, transitions, loss and "what was broken" sections,
checked against numbers recomputed here from the run's per-probe correctness (not from the analysis tables).

The run is synthetic (kdyn.analysis.synthetic: 240 probes, 5 checkpoints, every kind and probe type) and
analysed once; captions are built without drawing (a canvas that keeps captions only where a section needs one).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from kdyn.analysis import analyze
from kdyn.analysis.results import KNOWN_WRONG_AT_BASE
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.io import read_jsonl
from kdyn.report.acquisition import (broken_caption, broken_section, entity_details, knowledge_probes,
                                     raster_caption, window_lengths, windows_caption)  # fmt: skip
from kdyn.report.data import RunData, load_run_data
from kdyn.report.knowledge import (base_final, biggest_changes, checkpoint_loss, loss_knowledge_caption,
                                   loss_knowledge_section, transitions_section)  # fmt: skip
from kdyn.report.text import group_label


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> RunData:
    path = write_synthetic_run(tmp_path_factory.mktemp("sentences") / "run", n_items=240, n_checkpoints=4, seed=2)
    analyze(path, bootstrap=200)
    return load_run_data(path)


class Captions:
    """A stand-in for report.figures.Canvas: keeps each figure's caption, draws nothing."""

    def __init__(self) -> None:
        self.captions: dict[str, str] = {}

    def figure(self, name: str, fig, caption: str, alt: str) -> str:
        plt.close(fig)
        self.captions[name] = caption
        return ""


def matrix(run: RunData, kinds: tuple[str, ...] | None = None, ptype: str | None = None,
           bench_kind: bool = False) -> np.ndarray:  # fmt: skip
    """Correctness (probes x checkpoints) of the probes of `kinds` (analysis kinds, or bench kinds)."""
    p = run.probes
    col = "kind" if bench_kind else "analysis_kind"
    sel = p[col].isin(kinds) if kinds is not None else p["analysis_kind"] != "skill"
    if ptype is not None:
        sel &= p["probe_type"] == ptype
    return run.correct.loc[p.loc[sel, "probe_id"]].to_numpy(dtype=bool)


def first_and_kept(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first right index or -1, acquired before the last checkpoint, right at every checkpoint from then on)."""
    ever = c.any(axis=1)
    first = np.where(ever, c.argmax(axis=1), -1)
    later = ever & (first < c.shape[1] - 1)
    kept = np.array([f >= 0 and row[f:].all() for f, row in zip(first, c)])
    return first, later, kept & later


def chance_adjusted_f(c: np.ndarray, k: np.ndarray) -> float:
    """Harmon et al. per option count: F − Σ_k (n_k / n)(1 − A_k(0))(1 − A_k(T)) / (k − 1), floored at 0."""
    forgot = float((c[:, 0] & ~c[:, -1]).mean())
    expected = sum((k == v).mean() * (1 - c[k == v, 0].mean()) * (1 - c[k == v, -1].mean()) / (v - 1)
                   for v in np.unique(k))  # fmt: skip
    return max(0.0, forgot - expected)


def test_raster_caption_pairs_training_acquisitions_with_those_that_stayed(run):
    c = matrix(run)
    first, later, kept = first_and_kept(c)
    training = (first > 0)
    cap = raster_caption(run, knowledge_probes(run))
    assert cap.startswith(f"{len(c)} knowledge probes × {c.shape[1]} checkpoints: {int(c.any(axis=1).sum())} were "
                          f"right at some checkpoint ({int(c[:, 0].sum())} already at the base); "
                          f"{int(training.sum())} were first acquired during training")  # fmt: skip
    # the count that stayed is over the same acquisitions (made in training, with a later checkpoint), not over
    # every probe ever right (the base-right ones included), as the caption used to say
    assert (f"of the {int((training & later).sum())} of those with a later checkpoint, "
            f"{int((training & kept).sum())} stayed right from then on") in cap
    assert f"({int((training & ~later).sum())} first right at the last checkpoint cannot show it yet)" in cap
    assert int((training & kept).sum()) != int(run.tables["trajectories"]["consolidated"].fillna(False).sum())


def test_windows_caption_counts_consolidation_over_followed_acquisitions(run):
    c = matrix(run, ("new", "related", "updated"))
    _, later, kept = first_and_kept(c)
    cap = windows_caption(run, window_lengths(run, knowledge_probes(run)))
    n_fol, n_cons = int(later.sum()), int(kept.sum())
    assert (f"{n_cons} of the {n_fol} new, related and updated probes right before the last checkpoint "
            f"({100 * n_cons / n_fol:.0f}%) were consolidated") in cap
    assert f"the {int(c.any(axis=1).sum()) - n_fol} first right at the last checkpoint" in cap
    # the example group's n is its followed acquisitions
    label, n = re.search(r"from then on \(([^():]+): [\d.]+ \[[^\]]+\], n=(\d+)\)", cap).groups()
    group = next((k, t) for k, t in run.tables["consolidation"][["kind", "probe_type"]].itertuples(index=False)
                 if group_label(k, t) == label)  # fmt: skip
    _, later_g, _ = first_and_kept(matrix(run, (group[0],), group[1]))
    assert int(n) == int(later_g.sum())


def test_broken_caption_states_known_forgetting_and_the_all_items_adjustment(run):
    cap = broken_caption(run)
    bench = {p["probe_id"]: p for p in read_jsonl(Path(run.path) / "bench" / "probes.jsonl")}
    for ptype in ("cloze", "qa", "mcq", "compositional"):
        c = matrix(run, ("known",), ptype)
        forgot = (c[:, 0] & ~c[:, -1]).mean()
        assert (f"known {ptype} 1.00→{c[:, -1].mean():.2f} (F={forgot:.2f} [") in cap
        assert f"n={len(c)}" in cap
    every = matrix(run, ("known",), "mcq", bench_kind=True)
    ids = run.probes.loc[(run.probes["kind"] == "known") & (run.probes["probe_type"] == "mcq"), "probe_id"]
    k = np.array([bench[i]["k"] for i in ids])
    assert len(every) > len(matrix(run, ("known",), "mcq"))  # some known MCQ items were wrong at the base
    assert (f"over all {len(every)} known mcq items, right and wrong at the base, chance-adjusted "
            f"F={chance_adjusted_f(every, k):.2f} [") in cap
    skill = matrix(run, ("skill",))
    assert f"arithmetic {skill[:, 0].mean():.2f}→{skill[:, -1].mean():.2f}" in cap


def test_known_wrong_at_base_lead_agrees_with_its_count(run):
    probes = run.probes
    wrong = probes[probes["analysis_kind"] == KNOWN_WRONG_AT_BASE]
    one = dataclasses.replace(run, probes=probes.drop(wrong.index[1:]))
    text = str(broken_section(one, Captions()).body)
    assert "1 known probe was already wrong at the base model; it is reported apart and does not count" in text
    text = str(broken_section(run, Captions()).body)
    assert f"{len(wrong)} known probes were already wrong at the base model; they are reported apart" in text


def test_transitions_captions_and_table_match_the_probes(run):
    canvas = Captions()
    section = transitions_section(run, canvas)
    c = run.correct.to_numpy(dtype=bool)
    cap = canvas.captions["transitions_base"]
    assert (f"Base→final overall: {int((c[:, 0] & ~c[:, -1]).sum())} probes went right→wrong and "
            f"{int((~c[:, 0] & c[:, -1]).sum())} wrong→right.") in cap
    # the largest forgetting named is the largest of the heatmap (F, or F adj. for multiple choice)
    tr = run.tables["transitions"]
    base = tr[(tr["from_step"] == run.base_step) & (tr["kind"] != KNOWN_WRONG_AT_BASE)]
    shown = np.where(base["k_min"] >= 2, base["forgetting_adj"], base["forgetting"])
    top = base.iloc[int(np.nanargmax(shown))]
    name = "F_adj" if top["k_min"] >= 2 else "F"
    assert (f"Largest forgetting: {group_label(top['kind'], top['probe_type'])} {name}={np.nanmax(shown):.2f} ["
            f"") in cap and f"by step {int(top['to_step'])} (n={int(top['n'])})" in cap
    every = matrix(run, ("known",), "mcq", bench_kind=True)
    assert f">{len(every)} · " in str(section.body)  # the known MCQ row's all-items column


def test_loss_knowledge_caption_matches_the_curves(run):
    loss, _ = checkpoint_loss(run)
    ok = loss[np.isfinite(loss.astype(float))]
    pick = list(run.steps).index(ok.idxmin())
    better, groups = 0, 0
    for (kind, ptype), _ in base_final(run).groupby(["kind", "probe_type"], sort=False):
        if kind == KNOWN_WRONG_AT_BASE:
            continue
        acc = matrix(run, (kind,), ptype).mean(axis=0) if kind != "skill" else matrix(run, ("skill",)).mean(axis=0)
        groups += 1
        better += bool(acc.max() > acc[pick])
    cap = loss_knowledge_caption(run)
    assert f"{better} of {groups} groups were more accurate at another checkpoint (stars)." in cap
    changes = biggest_changes(base_final(run))
    first = re.match(r"(.+?) (\d\.\d\d)→(\d\.\d\d)", changes).groups()
    kind, ptype = next((k, t) for k, t in base_final(run)[["kind", "probe_type"]].itertuples(index=False)
                       if group_label(k, t) == first[0])  # fmt: skip
    c = matrix(run, (kind,), ptype) if kind != "skill" else matrix(run, ("skill",))
    assert (first[1], first[2]) == (f"{c[:, 0].mean():.2f}", f"{c[:, -1].mean():.2f}")


def test_entity_details_count_entities_right_at_the_final_step(run):
    text = entity_details(run)
    facts = {f["fact_id"]: f["entity_id"] for f in read_jsonl(Path(run.path) / "bench" / "facts.jsonl")}
    learned = run.probes[run.probes["kind"].isin(("new", "related", "updated"))]
    final = run.correct.loc[learned["probe_id"], run.final_step].to_numpy()
    entities = np.array([facts[f] for f in learned["fact_id"]])
    right = {e for e, ok in zip(entities, final) if ok}
    assert f"every trained entity ({len(set(entities))}; {len(right)} with a probe right at the final step)" in text


def test_an_undefined_spearman_interval_is_shown_as_such(run):
    lk = run.tables["loss_knowledge"].copy()
    i = lk.index[lk["spearman"].notna()][0]
    lk.loc[i, ["spearman_lo", "spearman_hi"]] = np.nan
    lk.loc[i, "spearman_ci_reason"] = "interval undefined: defined in only 693 of 1000 bootstrap replicates (x)"
    broken = dataclasses.replace(run, tables={**run.tables, "loss_knowledge": lk})
    text = str(loss_knowledge_section(broken, Captions()).body)
    assert f"{lk.loc[i, 'spearman']:.2f} (no interval)".replace("-", "−") in text
    assert "The interval of ρ(−loss, A) is undefined for " in text and "693 of 1000 bootstrap replicates" in text


def test_time_taken_names_the_sessions_of_a_resumed_run():
    from kdyn.report.setup import time_taken

    m = {"seconds": 738.0, "train_seconds": 540.0, "probe_seconds": 126.0}
    assert time_taken(m) == "12.3 min (training 9.0 min, probing 2.1 min)"
    assert time_taken(m | {"resumed": 1}) == "12.3 min (training 9.0 min, probing 2.1 min, 2 sessions: resumed 1×)"
