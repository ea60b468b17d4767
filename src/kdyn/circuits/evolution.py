"""How a relation's circuit changes over checkpoints (DESIGN.md "Knowledge circuits", evolution).

Per checkpoint: edge and node Jaccard with the previous, the final and the base (step 0) circuit; entropy
H = −Σ p log p with p = |s| / Σ|s| over the circuit's edges (natural log); share of circuit edges per
source layer (layer −1 is the input embedding) and the mean source depth, (layer + 1) / L with the input
at 0 (1 = the last layer).

Noise floor, with circuits of equal prompt count throughout: `noise_splits` random splits of the prompts
into two disjoint halves A, B of m = ⌊N/2⌋ prompts each (one left out when N is odd), the same splits at
every checkpoint. `noise_floor_jaccard` is the mean over splits of J(C_t(A), C_t(B)), the edge Jaccard of
two half-prompt circuits at the same checkpoint t: what resampling the prompts alone does. Its like-for-like
counterpart across checkpoints is `jaccard_halves_prev`, the mean over the same splits of
½ [J(C_s(A), C_t(B)) + J(C_s(B), C_t(A))] with s the previous checkpoint: half-prompt circuits on disjoint
prompts, as in the floor, but at different checkpoints. Without a change between s and t both measure the
same thing, so the circuit changed more than resampling explains when jaccard_halves_prev is below the
floor (the report compares it with the mean of the floors at s and t). The full-prompt Jaccard values
(N-prompt circuits, less noisy) are not comparable with the floor.

Jaccard of two empty sets is undefined (NaN). Nodes are the circuit's heads and MLPs (input and logits,
in every circuit, are left out). `prompt_usage` says how many prompt pairs were used and why not more.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import select
from kdyn.circuits.graph import Graph, circuit_nodes
from kdyn.circuits.prompts import usage
from kdyn.circuits.store import CircuitFile, mean_scores

METRIC_COLUMNS = ("step", "relation", "n_prompts", "n_prompts_configured", "n_unpaired", "n_edges_total", "n_edges",
                  "n_nodes", "clean_metric", "corrupted_metric", "faithfulness", "faithfulness_random",
                  "faithfulness_random_sd", "random_draws", "faithfulness_flag", "hit10_full", "mrr_full",
                  "hit10_circuit", "mrr_circuit", "hit10_random", "hit10_random_sd", "mrr_random", "mrr_random_sd",
                  "hit10_corrupted", "faithfulness_auc", "entropy", "jaccard_edges_prev", "jaccard_nodes_prev",
                  "jaccard_edges_final", "jaccard_nodes_final", "jaccard_edges_base", "jaccard_nodes_base",
                  "mean_source_depth", "noise_floor_jaccard", "jaccard_halves_prev", "method", "ig_steps",
                  "kv_readers", "selection", "prompt_usage")  # fmt: skip


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
    return select(graph, cf.dense(mean_scores(cf.per_prompt[rows])), cfg)


def half_splits(n: int, cfg: CircuitsConfig, relation: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """`noise_splits` splits of n prompts into two disjoint halves of ⌊n/2⌋ each ([] for n < 4); the same for
    every checkpoint of a relation, so half-prompt circuits can be compared across checkpoints."""
    if n < 4:
        return []
    rng = np.random.default_rng([cfg.seed, n, zlib.crc32(relation.encode("utf-8"))])
    m = n // 2
    return [(np.sort(p[:m]), np.sort(p[m : 2 * m])) for p in (rng.permutation(n) for _ in range(cfg.noise_splits))]


def finite_mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def half_circuits(graph: Graph, cf: CircuitFile, splits: list[tuple[np.ndarray, np.ndarray]],
                  cfg: CircuitsConfig) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Per split, the circuits (C(A), C(B)) of the two halves at this checkpoint."""
    return [(circuit_of(graph, cf, a, cfg), circuit_of(graph, cf, b, cfg)) for a, b in splits]


def noise_floor(halves: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean J(C_t(A), C_t(B)) over the splits (NaN without splits)."""
    return finite_mean([jaccard(a, b) for a, b in halves])


def halves_jaccard(prev: list[tuple[np.ndarray, np.ndarray]], cur: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over splits of ½ [J(C_s(A), C_t(B)) + J(C_s(B), C_t(A))]: disjoint halves, different checkpoints."""
    return finite_mean([finite_mean([jaccard(sa, tb), jaccard(sb, ta)]) for (sa, sb), (ta, tb) in zip(prev, cur)])


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
    halves = [half_circuits(graph, f, half_splits(f.per_prompt.shape[0], cfg, f.relation), cfg) for f in files]
    rows, shares = [], []
    for i, f in enumerate(files):
        prev, final, first = (_pair(files, nodes, i, j) for j in (i - 1 if i else None, len(files) - 1, base))
        same_prompts = i > 0 and files[i - 1].probe_ids == f.probe_ids
        n_unpaired = int(f.metrics.get("n_unpaired", 0))
        reasons = f.metrics.get("unpaired_reasons") or ({"reason not recorded": n_unpaired} if n_unpaired else {})
        n_used = f.per_prompt.shape[0]
        n_paired = int(f.metrics.get("n_paired", n_used))
        row = {k: math.nan for k in METRIC_COLUMNS} | {"faithfulness_flag": None} | f.settings | f.metrics
        row |= {"step": f.step, "relation": f.relation, "n_prompts": n_used, "n_prompts_configured": cfg.n_prompts,
                "n_unpaired": n_unpaired, "n_edges_total": int(f.valid.sum()),
                "n_edges": int(f.circuit.sum()), "n_nodes": int(nodes[i].sum()), "entropy": entropy(f.scores, f.circuit),
                "jaccard_edges_prev": prev[0], "jaccard_nodes_prev": prev[1], "jaccard_edges_final": final[0],
                "jaccard_nodes_final": final[1], "jaccard_edges_base": first[0], "jaccard_nodes_base": first[1],
                "mean_source_depth": mean_source_depth(graph, f.circuit), "noise_floor_jaccard": noise_floor(halves[i]),
                "jaccard_halves_prev": halves_jaccard(halves[i - 1], halves[i]) if same_prompts else math.nan,
                "random_draws": f.metrics.get("random_draws", 1),
                "prompt_usage": usage(f.relation, n_used, cfg.n_prompts, n_paired, reasons)}  # fmt: skip
        rows.append({k: row[k] for k in METRIC_COLUMNS})
        for layer, share in enumerate(layer_share(graph, f.circuit), start=-1):
            shares.append({"step": f.step, "relation": f.relation, "layer": layer, "share": float(share)})
    return rows, shares
