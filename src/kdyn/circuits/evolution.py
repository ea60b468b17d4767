"""How a relation's circuit changes over checkpoints (DESIGN.md "Knowledge circuits", evolution).

Per checkpoint: edge and node Jaccard with the previous, the final and the base (step 0) circuit; entropy
H = −Σ p log p with p = |s| / Σ|s| over the circuit's edges (natural log); share of circuit edges per
source layer (layer −1 is the input embedding) and the mean source depth, (layer + 1) / L with the input
at 0 (1 = the last layer); a split-half noise floor: the mean edge Jaccard between the circuits of two
random halves of the prompts at the same checkpoint (same selection rule), over `noise_splits` splits.
Jaccard of two empty sets is undefined (NaN). Nodes are the circuit's heads and MLPs (input and logits,
in every circuit, are left out).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import select
from kdyn.circuits.graph import Graph, circuit_nodes
from kdyn.circuits.store import CircuitFile

METRIC_COLUMNS = ("step", "relation", "n_prompts", "n_unpaired", "n_edges_total", "n_edges", "n_nodes", "clean_metric",
                  "corrupted_metric", "faithfulness", "faithfulness_random", "faithfulness_flag", "hit10_full",
                  "mrr_full", "hit10_circuit", "mrr_circuit", "hit10_random", "mrr_random", "hit10_corrupted",
                  "faithfulness_auc", "entropy", "jaccard_edges_prev", "jaccard_nodes_prev", "jaccard_edges_final",
                  "jaccard_nodes_final", "jaccard_edges_base", "jaccard_nodes_base", "mean_source_depth",
                  "noise_floor_jaccard", "method", "ig_steps", "kv_readers", "selection")  # fmt: skip


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else math.nan


def entropy(scores: np.ndarray, circuit: np.ndarray) -> float:
    s = np.abs(scores[circuit]).astype(np.float64)
    total = s.sum()
    if total <= 0:
        return math.nan
    p = s[s > 0] / total
    return float(-(p * np.log(p)).sum())


def layer_share(graph: Graph, circuit: np.ndarray) -> np.ndarray:
    """[L + 1]: share of circuit edges whose source is the input (index 0) or in layer l (index l + 1)."""
    per_writer = circuit.sum(1)
    counts = np.bincount(graph.writer_layer + 1, weights=per_writer, minlength=graph.shape.n_layers + 1)
    n = per_writer.sum()
    return counts / n if n else np.full(graph.shape.n_layers + 1, math.nan)


def mean_source_depth(graph: Graph, circuit: np.ndarray) -> float:
    per_writer = circuit.sum(1)
    n = per_writer.sum()
    depth = (graph.writer_layer + 1) / graph.shape.n_layers
    return float((per_writer * depth).sum() / n) if n else math.nan


def circuit_of(graph: Graph, cf: CircuitFile, rows: np.ndarray, cfg: CircuitsConfig) -> np.ndarray:
    """The circuit selected from the mean scores of some prompts (rows of scores_per_prompt)."""
    return select(graph, cf.dense(cf.per_prompt[rows].mean(0)), cfg)


def noise_floor(graph: Graph, cf: CircuitFile, cfg: CircuitsConfig) -> float:
    n = cf.per_prompt.shape[0]
    if n < 4:
        return math.nan
    rng = np.random.default_rng([cfg.seed, cf.step])
    values = []
    for _ in range(cfg.noise_splits):
        perm = rng.permutation(n)
        a, b = np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
        values.append(jaccard(circuit_of(graph, cf, a, cfg), circuit_of(graph, cf, b, cfg)))
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _pair(files: list[CircuitFile], nodes: list[np.ndarray], i: int, j: int | None) -> tuple[float, float]:
    """(edge, node) Jaccard of checkpoints i and j (1 with itself; NaN without a j)."""
    if j is None:
        return math.nan, math.nan
    return jaccard(files[i].circuit, files[j].circuit), jaccard(nodes[i], nodes[j])


def evolution_tables(files: list[CircuitFile], cfg: CircuitsConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(circuit_metrics rows, layer_share rows) for one relation's checkpoints, sorted by step."""
    files = sorted(files, key=lambda f: f.step)
    graph = files[0].graph()
    nodes = [circuit_nodes(f.circuit) for f in files]
    base = next((i for i, f in enumerate(files) if f.step == 0), None)
    rows, shares = [], []
    for i, f in enumerate(files):
        prev, final, first = (_pair(files, nodes, i, j) for j in (i - 1 if i else None, len(files) - 1, base))
        row = {k: math.nan for k in METRIC_COLUMNS} | {"faithfulness_flag": None} | f.settings | f.metrics
        row |= {"step": f.step, "relation": f.relation, "n_prompts": f.per_prompt.shape[0],
                "n_unpaired": f.metrics.get("n_unpaired", 0), "n_edges_total": int(f.valid.sum()),
                "n_edges": int(f.circuit.sum()), "n_nodes": int(nodes[i].sum()), "entropy": entropy(f.scores, f.circuit),
                "jaccard_edges_prev": prev[0], "jaccard_nodes_prev": prev[1], "jaccard_edges_final": final[0],
                "jaccard_nodes_final": final[1], "jaccard_edges_base": first[0], "jaccard_nodes_base": first[1],
                "mean_source_depth": mean_source_depth(graph, f.circuit), "noise_floor_jaccard": noise_floor(graph, f, cfg)}  # fmt: skip
        rows.append({k: row[k] for k in METRIC_COLUMNS})
        for layer, share in enumerate(layer_share(graph, f.circuit), start=-1):
            shares.append({"step": f.step, "relation": f.relation, "layer": layer, "share": float(share)})
    return rows, shares
