"""Evolution measures, the change point and the dynamics link, on synthetic circuit files with known answers."""

from __future__ import annotations

import math

import numpy as np

from kdyn.circuits.adapters import Shape
from kdyn.circuits.changepoint import best_split, change_points
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.dynamics import dynamics_table
from kdyn.circuits.evaluate import curve_area, select
from kdyn.circuits.evolution import entropy, evolution_tables, jaccard, layer_share, mean_source_depth
from kdyn.circuits.graph import build_graph
from kdyn.circuits.store import CircuitFile

SHAPE = Shape(n_layers=2, n_heads=2, n_kv_heads=2, head_dim=4, d_model=8)
GRAPH = build_graph(SHAPE)
E = GRAPH.n_edges
CFG = CircuitsConfig(top_k=4, bootstrap=50, noise_splits=4)


def circuit_file(step: int, per_prompt: np.ndarray, cfg: CircuitsConfig = CFG) -> CircuitFile:
    scores = np.zeros(GRAPH.valid.shape, dtype=np.float32)
    scores[GRAPH.valid] = per_prompt.mean(0)
    n = per_prompt.shape[0]
    return CircuitFile(step=step, relation="rel", shape=SHAPE, kv_readers="query", writers=GRAPH.writers,
                       readers=GRAPH.readers, valid=GRAPH.valid, scores=scores, circuit=select(GRAPH, scores, cfg),
                       per_prompt=per_prompt.astype(np.float32), probe_ids=[f"q{i}" for i in range(n)],
                       fact_ids=[f"f{i}" for i in range(n)],
                       settings={"method": "eap-ig", "ig_steps": 5, "kv_readers": "query", "selection": cfg.selection()},
                       metrics={"faithfulness": 0.5, "n_unpaired": 1}, curve=[], lens=[])  # fmt: skip


def edges(*pairs: tuple[str, str]) -> list[int]:
    """Indices into the flat valid-edge vector of (writer, reader) pairs."""
    flat = {(u, v): i for i, (u, v) in enumerate(zip(*np.nonzero(GRAPH.valid)))}
    return [flat[(GRAPH.writers.index(w), GRAPH.readers.index(r))] for w, r in pairs]


FORMATION = [  # three disjoint circuits, each two complete paths input → logits
    edges(("input", "a0.h0<q>"), ("a0.h0", "logits"), ("input", "m1"), ("m1", "logits")),
    edges(("input", "a0.h1<k>"), ("a0.h1", "logits"), ("input", "m0"), ("m0", "logits")),
    edges(("input", "a1.h0<v>"), ("a1.h0", "logits"), ("input", "a1.h1<q>"), ("a1.h1", "logits")),
]
STABLE = edges(("input", "logits"), ("input", "m0"), ("m0", "logits"))


def test_basic_measures() -> None:
    a = np.array([True, True, False, False])
    assert jaccard(a, np.array([True, False, True, False])) == 1 / 3
    assert math.isnan(jaccard(np.zeros(4, bool), np.zeros(4, bool)))
    circuit = np.zeros(GRAPH.valid.shape, dtype=bool)
    circuit[0, -1] = circuit[GRAPH.writers.index("m1"), -1] = True
    scores = np.where(circuit, 2.0, 0.0)
    assert math.isclose(entropy(scores, circuit), math.log(2))
    assert math.isnan(entropy(scores, np.zeros_like(circuit)))
    share = layer_share(GRAPH, circuit)
    assert share.tolist() == [0.5, 0.0, 0.5]  # input (layer −1), layer 0, layer 1
    assert mean_source_depth(GRAPH, circuit) == 0.5  # input at 0, layer 1 at (1 + 1) / 2
    assert curve_area([[0.01, 5, 0.0], [0.1, 50, 1.0], [1.0, 500, 1.0]]) == 0.75
    assert math.isnan(curve_area([[0.01, 5, math.nan], [1.0, 500, 1.0]]))


def test_best_split_finds_the_level_change() -> None:
    # two lines (segments of >= 2 points) instead of two constants: the split, R = 1 - SSE_two / SSE_one
    k, r = best_split([0, 10, 20, 30, 40], np.array([5.0, 5.1, 4.9, 1.0, 1.1]))
    assert k == 3 and 0.99 < r < 1
    assert best_split([0, 10], np.array([1.0, 2.0]))[0] is None


def test_change_point_needs_five_checkpoints_and_finds_the_shift() -> None:
    rng = np.random.default_rng(0)
    few = [circuit_file(s, rng.normal(size=(8, E))) for s in (0, 10, 20, 30)]
    out = change_points(few, CFG)
    assert out["entropy"]["step"] is None and out["entropy"]["reason"] == "not tested: 4 checkpoint(s), needs ≥ 5"
    # formation: every checkpoint a different circuit with evenly spread scores; from step 30 on one stable
    # circuit dominated by a single edge (low entropy, high Jaccard with the previous one)
    files = []
    for i, step in enumerate((0, 10, 20, 30, 40, 50)):
        scores = rng.normal(scale=0.01, size=(8, E))
        if i < 3:
            scores[:, FORMATION[i]] += 1.0
        else:
            scores[:, STABLE] += [5.0, 0.3, 0.3]
        files.append(circuit_file(step, scores))
    out = change_points(files, CFG)
    assert out["entropy"]["step"] == 30 and out["entropy"]["ci_low"] <= 30 <= out["entropy"]["ci_high"]
    assert out["jaccard_edges_prev"]["step"] == 40  # J(30, 40) is the first high value
    assert out["entropy"]["n_boot"] == CFG.bootstrap and out["entropy"]["reason"] is None
    rows, shares = evolution_tables(files, CFG)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40, 50]
    assert math.isnan(rows[0]["jaccard_edges_prev"]) and rows[-1]["jaccard_edges_final"] == 1.0
    assert rows[0]["jaccard_edges_base"] == 1.0 and rows[4]["jaccard_edges_prev"] == 1.0
    assert all(math.isclose(sum(s["share"] for s in shares if s["step"] == f.step), 1.0) for f in files)
    assert rows[3]["noise_floor_jaccard"] == 1.0  # halves of identical prompts agree


def test_dynamics_groups_facts_by_what_their_probes_did() -> None:
    stable, moved = np.zeros((4, E)), np.zeros((4, E))
    a, b = np.arange(0, 4), np.arange(10, 14)
    stable[:, a] = moved[:, a] = 1.0
    moved[2:, a] = 0.0
    moved[2:, b] = 1.0  # prompts 2 and 3 change every one of their top edges
    files = [circuit_file(0, stable), circuit_file(10, moved)]
    correct = {("q0", 0): True, ("q0", 10): True, ("q1", 0): False, ("q1", 10): False,
               ("q2", 0): True, ("q2", 10): False, ("q3", 0): False, ("q3", 10): True}  # fmt: skip
    notes: list[str] = []
    rows = {r["group"]: r for r in dynamics_table(files, correct, CFG, notes)}
    assert {g: (r["n_facts"], r["mean_change"]) for g, r in rows.items()} == {
        "retained": (1, 0.0), "never": (1, 0.0), "forgotten": (1, 1.0), "acquired": (1, 1.0)}  # fmt: skip
    assert not notes
    assert dynamics_table(files, {}, CFG, notes) == [] and "not probed" in notes[0]
