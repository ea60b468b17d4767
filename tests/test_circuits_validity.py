"""Validity of the circuit numbers: the random baseline is a connected circuit of the circuit's size, a change
point is tested against one straight line, the noise floor compares circuits of equal prompt count, the
prompt pairs used are counted with the reasons for the rest, per-prompt scores survive the file exactly."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from kdyn.circuits.adapters import Shape
from kdyn.circuits.changepoint import assess, change_points
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import Outcome, evaluate, select
from kdyn.circuits.evolution import circuit_of, evolution_tables, half_splits
from kdyn.circuits.graph import build_graph, circuit_nodes, prune
from kdyn.circuits.hooks import HookedLM
from kdyn.circuits.prompts import build_prompts, default_relation, read_bench
from kdyn.circuits.run import analyse, pad_id
from kdyn.circuits.store import CircuitFile, load, mean_scores, save
from kdyn.report.circuits import circuit_findings, metrics_table
from kdyn.report.data import CircuitData

from .test_circuits_evolution import CFG, GRAPH, SHAPE, circuit_file, edges

# ---------------------------------------------------------------------------------------------------------------
# random baseline


class PathCounter:
    """A stand-in Evaluator whose 'metric' is the number of a mask's edges left after pruning, i.e. the edges on
    a path from the input to the logits; clean = the circuit's size, corrupted = 0, so faithfulness = that
    number over the circuit's size."""

    def __init__(self, graph, n_edges: int):
        self.hooked = SimpleNamespace(graph=graph)
        self.clean, self.corrupt, self.small_gap = Outcome(float(n_edges), 1.0, 1.0), Outcome(0.0, 0.0, 0.0), False
        self.masks: list[np.ndarray] = []

    def run(self, keeps):
        self.masks += keeps
        return [Outcome(float(prune(self.hooked.graph, k).sum()), 0.0, 0.0) for k in keeps]

    def faithfulness(self, o: Outcome) -> float:
        return (o.metric - self.corrupt.metric) / (self.clean.metric - self.corrupt.metric)


@pytest.mark.parametrize("kv_readers", ["query", "kv"])
def test_random_baseline_is_connected_circuits_of_the_circuits_size(kv_readers: str) -> None:
    graph = build_graph(Shape(n_layers=3, n_heads=4, n_kv_heads=2, head_dim=4, d_model=16), kv_readers)
    scores = np.zeros(graph.valid.shape, dtype=np.float32)
    scores[graph.valid] = np.random.default_rng(1).normal(size=graph.n_edges)
    cfg = CircuitsConfig(top_k=80, fractions=[1.0], random_draws=6)
    circuit = select(graph, scores, cfg)
    n_edges, n_nodes = int(circuit.sum()), int(circuit_nodes(circuit).sum())
    assert 10 < n_edges < 80
    ev = PathCounter(graph, n_edges)
    _, metrics, _ = evaluate(ev, scores, cfg, "rel")  # type: ignore[arg-type]
    # every edge of every random draw is on an input → logits path: faithfulness exactly 1, no spread
    # (the old baseline, as many random edges, kept a few of them: "random 0.00" measured the corrupted model)
    assert metrics["faithfulness_random"] == 1.0 and metrics["faithfulness_random_sd"] == 0.0
    assert metrics["random_draws"] == 6
    randoms = [m for m in ev.masks[1:] if not (m == circuit).all()]  # the circuit and the curve's full graph first
    randoms = [m for m in randoms if m.sum() == n_edges]
    assert len({m.tobytes() for m in randoms}) == 6  # six different draws
    for m in randoms:
        assert (prune(graph, m) == m).all() and int(circuit_nodes(m).sum()) == n_nodes
    _, again, _ = evaluate(PathCounter(graph, n_edges), scores, cfg, "rel")  # type: ignore[arg-type]
    assert again == metrics  # seeded


def test_random_circuits_of_every_size_are_exact() -> None:
    from kdyn.circuits.baseline import random_circuit

    for kv in ("query", "kv"):
        graph = build_graph(Shape(n_layers=2, n_heads=2, n_kv_heads=1, head_dim=4, d_model=8), kv)
        for n in range(1, graph.n_edges + 1):
            for seed in range(3):
                c = random_circuit(graph, n, n // 3, np.random.default_rng(seed))
                assert c.sum() == n and (prune(graph, c) == c).all() and (c <= graph.valid).all()


# ---------------------------------------------------------------------------------------------------------------
# change point

STEPS = [0, 10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("values", [[1, 2, 3, 4, 5, 6, 7], [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
                                    [1.0, 2.2, 2.9, 4.1, 5.0, 5.8, 7.1]])  # fmt: skip
def test_a_straight_line_has_no_change_point(values: list[float]) -> None:
    out = assess("entropy", STEPS, np.array(values, dtype=float), seed=0)
    assert out["status"] == "none" and out["step"] is None and out["reason"].startswith("no change point")
    assert out["p_value"] >= 0.05


def test_a_shift_is_significant_and_the_test_is_seeded() -> None:
    y = np.array([3.0, 3.1, 2.9, 3.05, 1.0, 1.1, 0.9])
    out = assess("entropy", STEPS, y, seed=0)
    assert out["status"] == "change point" and out["step"] == 40 and out["p_value"] < 0.05
    assert assess("entropy", STEPS, y, seed=0) == out


def straight_entropy_files(entropies: list[float]) -> list[CircuitFile]:
    """Files whose circuit is always the same five connected edges and whose entropy is the given value:
    one edge of weight a, four of weight 1, a found by bisection."""
    five = edges(("input", "logits"), ("input", "m0"), ("m0", "logits"), ("input", "m1"), ("m1", "logits"))
    files = []
    for i, h in enumerate(entropies):
        lo, hi = 1.0, 1e6
        for _ in range(200):
            a = (lo + hi) / 2
            p = np.array([a, 1, 1, 1, 1]) / (a + 4)
            lo, hi = (a, hi) if -(p * np.log(p)).sum() > h else (lo, a)
        per_prompt = np.zeros((6, GRAPH.n_edges))
        per_prompt[:, five] = [a, 1, 1, 1, 1]
        files.append(circuit_file(10 * i, per_prompt, CircuitsConfig(top_k=5, bootstrap=20, noise_splits=3)))
    return files


def test_change_points_of_steady_series_are_none_and_few_checkpoints_are_not_tested() -> None:
    cfg = CircuitsConfig(top_k=5, bootstrap=20, noise_splits=3)
    files = straight_entropy_files([1.5, 1.4, 1.3, 1.2, 1.1, 1.0])
    assert np.allclose(np.diff(evolution_frame(files, cfg)["entropy"]), -0.1)
    out = change_points(files, cfg)
    assert out["entropy"]["status"] == "none" and out["entropy"]["step"] is None  # a steady fall, no shift
    assert out["jaccard_edges_prev"]["status"] == "none"  # the same circuit throughout: Jaccard 1, 1, 1, …
    assert out["entropy"]["level"] == 0.05 and out["entropy"]["n_boot"] == 0
    few = change_points(files[:4], cfg)["entropy"]
    assert few["status"] == "not tested" and few["reason"] == "not tested: 4 checkpoint(s), needs ≥ 5"
    short = change_points(files[:5], cfg)["jaccard_edges_prev"]  # 5 checkpoints give 4 Jaccard values
    assert short["reason"] == "not tested: the Jaccard-with-previous series has 4 finite point(s), needs ≥ 5"


# ---------------------------------------------------------------------------------------------------------------
# noise floor


def evolution_frame(files: list[CircuitFile], cfg: CircuitsConfig) -> pd.DataFrame:
    return pd.DataFrame(evolution_tables(files, cfg)[0])


def test_noise_floor_compares_halves_of_equal_size_with_their_counterpart_across_checkpoints() -> None:
    splits = half_splits(11, CFG, "rel")
    assert len(splits) == CFG.noise_splits
    assert all((a == a2).all() and (b == b2).all() for (a, b), (a2, b2) in zip(splits, half_splits(11, CFG, "rel")))
    for a, b in splits:  # 5 and 5 of 11 prompts, disjoint (the old floor compared 5 with 6)
        assert len(a) == len(b) == 5 and not set(a) & set(b)
    rng = np.random.default_rng(3)
    per_prompt = rng.normal(size=(11, GRAPH.n_edges))
    paths = edges(("input", "m0"), ("m0", "logits"), ("input", "a0.h0<q>"), ("a0.h0", "logits"), ("input", "logits"))
    per_prompt[:, paths] += 1.5  # five edges compete for the top 4: half-prompt circuits disagree at times
    same = [circuit_file(step, per_prompt) for step in (0, 10, 20)]  # nothing changes but the step
    frame = evolution_frame(same, CFG)
    assert (frame["jaccard_edges_prev"][1:] == 1.0).all()  # full circuits: identical
    floor = frame["noise_floor_jaccard"].to_numpy()
    assert 0 < floor[0] < 1 and (floor == floor[0]).all()
    # half-prompt circuits across checkpoints measure exactly the floor when nothing changed
    assert np.allclose(frame["jaccard_halves_prev"][1:], floor[0]) and math.isnan(frame["jaccard_halves_prev"][0])
    a, b = splits[0]
    assert circuit_of(GRAPH, same[0], a, CFG).sum() > 0


def findings_for(metrics: pd.DataFrame, change: dict | None = None) -> str:
    run = SimpleNamespace(circuits=CircuitData(metrics=metrics, tables={}, change_point={"birth_city": change or {}}))
    return circuit_findings(run)[0]  # type: ignore[arg-type]


def metrics_rows(halves: list[float], floor: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"step": [0, 10, 20, 30], "relation": "birth_city", "n_prompts": 11, "n_prompts_configured": 32,
                         "n_unpaired": 3, "n_edges": 60, "n_edges_total": 1200, "n_nodes": 20, "faithfulness": 0.7,
                         "faithfulness_random": 0.1, "faithfulness_random_sd": 0.04, "random_draws": 10,
                         "jaccard_edges_prev": [math.nan, 0.8, 0.85, 0.9], "jaccard_halves_prev": halves,
                         "noise_floor_jaccard": floor, "faithfulness_flag": False,
                         "prompt_usage": "birth_city: 11 of the configured 32 prompt pairs used: the relation has 14 "
                                         "cloze probes, 3 of which could not be paired (3× no partner)"})  # fmt: skip


def test_noise_sentence_says_what_the_numbers_show() -> None:
    above = findings_for(metrics_rows([math.nan, 0.62, 0.66, 0.70], [0.55, 0.57, 0.56, 0.58]))
    assert ("edge Jaccard of consecutive checkpoints' circuits, each from a disjoint half of the prompts (5 each), "
            "was 0.62–0.70 against a split-half noise floor of 0.56–0.57 (two halves at the same checkpoint): below "
            "the floor at 0 of 3 checkpoint pairs, i.e. no change beyond what resampling the prompts would explain") in above
    assert "changed more than" not in above
    some = findings_for(metrics_rows([math.nan, 0.30, 0.66, 0.40], [0.55, 0.57, 0.56, 0.58]))
    assert ("below the floor at 2 of 3 checkpoint pairs (the pairs ending at steps 10, 30), where the circuit changed "
            "more than resampling the prompts would explain, and no more than that at the other 1") in some
    every = findings_for(metrics_rows([math.nan, 0.30, 0.31, 0.40], [0.55, 0.57, 0.56, 0.58]))
    assert "at 3 of 3 checkpoint pairs, i.e. at every pair the circuit changed more than resampling" in every
    assert "random connected circuits of equal size 0.10 ± 0.04 (mean ± SD over 10 draws)" in every


# ---------------------------------------------------------------------------------------------------------------
# prompt pairs used


def test_prompt_pairs_used_and_why_the_rest_were_dropped(tiny_bench: Path, tiny_lm) -> None:
    facts, cloze = read_bench(tiny_bench)
    relation = default_relation(facts, cloze)
    n_cloze = sum(facts[p["fact_id"]]["relation"] == relation for p in cloze)
    ps = build_prompts(tiny_bench, relation, tiny_lm.tokenizer, 32, 0)
    assert ps.n_paired == len(ps.pairs) and ps.n_paired + len(ps.unpaired) == n_cloze and ps.unpaired
    cfg = CircuitsConfig(top_k=8, bootstrap=5, noise_splits=2, random_draws=2, fractions=[0.1, 1.0])
    cf = analyse(HookedLM(tiny_lm.model), ps, cfg, 0, pad_id(tiny_lm))
    row = evolution_frame([cf], cfg).iloc[0]
    reason = ps.unpaired[0]["reason"]
    assert row["prompt_usage"] == (f"{relation}: {len(ps.pairs)} of the configured 32 prompt pairs used: the relation "
                                   f"has {n_cloze} cloze probes, {len(ps.unpaired)} of which could not be paired "
                                   f"({len(ps.unpaired)}× {reason})")  # fmt: skip
    assert row["n_prompts"] == len(ps.pairs) and row["n_prompts_configured"] == 32
    fewer = build_prompts(tiny_bench, relation, tiny_lm.tokenizer, 1, 0)  # sampled: one of the pairable probes
    assert fewer.n_paired == len(ps.pairs) and len(fewer.pairs) == 1
    html = str(metrics_table(SimpleNamespace(circuits=CircuitData(metrics=evolution_frame([cf], cfg), tables={},
                                                                 change_point={}))))  # fmt: skip
    assert f"{len(ps.pairs)} of 32" in html and "could not be paired" in html


# ---------------------------------------------------------------------------------------------------------------
# per-prompt scores in the file


def test_per_prompt_scores_round_trip_exactly(tmp_path: Path, tiny_bench: Path, tiny_lm) -> None:
    facts, cloze = read_bench(tiny_bench)
    ps = build_prompts(tiny_bench, default_relation(facts, cloze), tiny_lm.tokenizer, 8, 0)
    cfg = CircuitsConfig(top_k=8, bootstrap=5, noise_splits=2, random_draws=2, fractions=[0.1, 1.0])
    cf = analyse(HookedLM(tiny_lm.model), ps, cfg, 0, pad_id(tiny_lm))
    save(tmp_path / "a.safetensors", cf)
    back = load(tmp_path / "a.safetensors")
    assert back.per_prompt.dtype == np.float32 and np.array_equal(back.per_prompt, cf.per_prompt)
    graph = back.graph()
    rebuilt = select(graph, back.dense(mean_scores(back.per_prompt)), cfg)
    assert np.array_equal(rebuilt, cf.circuit) and np.array_equal(back.scores, cf.scores)
    # scores as small as attribution gives on a large graph: float16 made them 0 (and the circuit arbitrary)
    tiny = np.random.default_rng(0).normal(scale=1e-8, size=(4, GRAPH.n_edges))
    small = circuit_file(0, tiny, CircuitsConfig(top_k=6))
    save(tmp_path / "b.safetensors", small)
    again = load(tmp_path / "b.safetensors")
    assert np.array_equal(again.per_prompt, small.per_prompt)
    assert np.array_equal(select(GRAPH, again.dense(mean_scores(again.per_prompt)), CircuitsConfig(top_k=6)),
                          select(GRAPH, small.dense(mean_scores(small.per_prompt)), CircuitsConfig(top_k=6)))  # fmt: skip


def test_the_report_says_no_change_point_or_not_tested() -> None:
    rows = metrics_rows([math.nan, 0.62, 0.66, 0.70], [0.55, 0.57, 0.56, 0.58])
    flat = findings_for(rows, {"entropy": assess("entropy", STEPS, np.arange(7.0), seed=0)})
    assert "Circuit of 'birth_city' (11 of the configured 32 prompt pairs): no entropy change point (one straight " \
           "line fits it exactly);" in flat
    cfg = CircuitsConfig(top_k=5, bootstrap=20, noise_splits=3)
    few = findings_for(rows, change_points(straight_entropy_files([1.5, 1.4, 1.3]), cfg))
    assert ": entropy change point not tested (3 checkpoint(s), needs ≥ 5);" in few
    shift = assess("entropy", STEPS, np.array([3.0, 3.1, 2.9, 3.05, 1.0, 1.1, 0.9]), seed=0)
    found = findings_for(rows, {"entropy": shift | {"ci_low": 40, "ci_high": 50}})
    assert f": entropy change point step 40 [40–50] (p = {shift['p_value']:.4f});" in found
