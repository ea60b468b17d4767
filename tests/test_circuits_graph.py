"""The circuit graph: sizes, names, selection and pruning on hand-made circuits."""

from __future__ import annotations

import numpy as np

from kdyn.circuits.adapters import Shape
from kdyn.circuits.graph import build_graph, circuit_nodes, prune, threshold, top_fraction, top_k

SMOLLM2 = Shape(n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, d_model=576)
TINY = Shape(n_layers=2, n_heads=2, n_kv_heads=1, head_dim=4, d_model=8)


def test_smollm2_graph_has_the_edge_count_of_design_md() -> None:
    g = build_graph(SMOLLM2, "query")
    assert (len(g.writers), len(g.readers)) == (301, 841)
    assert g.n_edges == 123_211  # DESIGN.md: ≈123k (L²H² growth)
    kv = build_graph(SMOLLM2, "kv")
    assert (len(kv.writers), len(kv.readers), kv.n_edges) == (301, 481, 70_651)


def test_names_order_and_upstream_writers() -> None:
    g = build_graph(TINY, "query")
    assert g.writers == ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1"]
    assert g.readers[:7] == ["a0.h0<q>", "a0.h1<q>", "a0.h0<k>", "a0.h1<k>", "a0.h0<v>", "a0.h1<v>", "m0"]
    assert g.readers[-1] == "logits"
    col = {name: i for i, name in enumerate(g.readers)}
    # a head reads everything before its layer; an MLP also reads its own layer's heads; logits read all
    assert g.valid[:, col["a1.h0<k>"]].tolist() == [True, True, True, True, False, False, False]
    assert g.valid[:, col["m1"]].tolist() == [True] * 6 + [False]
    assert g.valid[:, col["logits"]].all()
    kv = build_graph(TINY, "kv")
    k = kv.readers.index("a0.g0<k>")
    assert kv.membership[k, [1, 2]].all()  # both query heads of the group read the shared k


def test_top_k_fraction_and_threshold() -> None:
    g = build_graph(TINY)
    scores = np.zeros(g.valid.shape)
    flat = np.flatnonzero(g.valid)
    scores.ravel()[flat[:5]] = [0.5, -3.0, 2.0, -2.0, 1.0]
    scores[~g.valid] = 100.0  # never selected: not an edge
    keep = top_k(g, scores, 3)
    assert keep.sum() == 3 and set(np.flatnonzero(keep)) == {flat[1], flat[2], flat[3]}  # |−3|, |2|, |−2| (tie: order)
    assert top_fraction(g, scores, 3 / g.n_edges).sum() == 3
    assert top_fraction(g, scores, 1e-9).sum() == 1  # at least one edge
    assert set(np.flatnonzero(threshold(g, scores, 1.0))) == {flat[1], flat[2], flat[3], flat[4]}


def test_prune_drops_dangling_edges_and_keeps_paths() -> None:
    g = build_graph(TINY)
    w = {name: i for i, name in enumerate(g.writers)}
    r = {name: i for i, name in enumerate(g.readers)}
    keep = np.zeros(g.valid.shape, dtype=bool)
    for src, dst in [("input", "a0.h0<q>"), ("a0.h0", "m0"), ("m0", "logits"),  # a path input → logits
                     ("input", "a1.h1<v>"),  # a1.h1 writes nowhere: dangling
                     ("a0.h1", "a1.h0<k>"), ("a1.h0", "logits")]:  # a0.h1 reads nothing: dangling  # fmt: skip
        keep[w[src], r[dst]] = True
    pruned = prune(g, keep)
    kept = {(g.writers[u], g.readers[v]) for u, v in zip(*np.nonzero(pruned))}
    assert kept == {("input", "a0.h0<q>"), ("a0.h0", "m0"), ("m0", "logits")}
    assert [g.writers[i] for i in np.flatnonzero(circuit_nodes(pruned))] == ["a0.h0", "m0"]
    assert not prune(g, np.zeros_like(keep)).any()
    assert (prune(g, g.valid) == g.valid).all()  # the full graph is one circuit


def test_prune_with_shared_kv_inputs() -> None:
    """A k input shared by a group feeds every head of the group: one useful head keeps it."""
    g = build_graph(TINY, "kv")
    w = {name: i for i, name in enumerate(g.writers)}
    r = {name: i for i, name in enumerate(g.readers)}
    keep = np.zeros(g.valid.shape, dtype=bool)
    keep[w["input"], r["a0.g0<k>"]] = True
    keep[w["a0.h1"], r["logits"]] = True
    pruned = prune(g, keep)
    assert pruned[w["input"], r["a0.g0<k>"]] and pruned[w["a0.h1"], r["logits"]]
