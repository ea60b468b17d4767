"""Circuit evaluation with the discovery intervention, and the logit lens (DESIGN.md "Knowledge circuits").

A circuit is evaluated by running the clean prompts with every edge outside it patched: its reader gets the
corrupted writer's activation instead of the current one (hooks.py, as EAP-IG's evaluation). From that run:
- faithfulness = (M_circuit − M_corrupted) / (M_clean − M_corrupted) with M the mean logit difference;
  NaN and flagged when |M_clean − M_corrupted| < min_metric_gap (nothing to explain);
- hit@10 (the object's first token ranks 0..9) and MRR of that token, for the circuit and the full model
  (clean run);
- the random baseline: `random_draws` random circuits that connect the input to the logits with exactly as
  many edges after pruning (and as many heads and MLPs where the edges allow; baseline.py), each evaluated
  like the circuit; faithfulness, hit@10 and MRR as mean and SD (ddof 1) over the draws;
- the faithfulness-vs-fraction curve (top fraction f of edges, pruned) and its area: the trapezoid over
  log10 f, divided by the width of that axis, so 1 means faithful at every size tried.
Logit lens: the residual stream after each layer at the last position, through the final norm and the
unembedding; the target's rank there (0 = top), mean and median over prompts.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from statistics import fmean, stdev

import numpy as np
import torch

from kdyn.circuits.attribution import Batch, BatchResult, logit_diff, run_corrupted
from kdyn.circuits.baseline import random_circuit
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.graph import Graph, circuit_nodes, prune, threshold, top_fraction, top_k
from kdyn.circuits.hooks import HookedLM, RunState


@dataclass
class Outcome:
    metric: float  # mean logit difference over prompts
    hit10: float
    mrr: float


def target_ranks(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., B, vocab], [B] → [..., B]: how many tokens score strictly higher than the target."""
    return (logits > logits.gather(-1, target.expand(*logits.shape[:-1]).unsqueeze(-1))).sum(-1)


def outcome(logits: list[torch.Tensor], batches: list[Batch]) -> Outcome:
    metric = torch.cat([logit_diff(lg, b) for lg, b in zip(logits, batches)])
    ranks = torch.cat([target_ranks(lg, b.target) for lg, b in zip(logits, batches)]).double()
    return Outcome(float(metric.mean()), float((ranks < 10).double().mean()), float((1.0 / (ranks + 1)).mean()))


def patched_logits(hooked: HookedLM, batch: Batch, corrupt_writes: torch.Tensor, coef: torch.Tensor,
                   scratch: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """[B, vocab] logits of the clean prompts with edge u → v carrying coef[u, v] of its corrupted activation
    difference (1: patched, 0: kept); differentiable in coef (call inside `hooked.attached()`). `scratch`, shaped
    as corrupt_writes, takes the differences (reused across runs: no fresh buffer per run)."""
    st = RunState(p0=batch.p0, last=batch.last, corrupt=corrupt_writes, coef=coef,
                  diff=scratch if scratch is not None else torch.empty_like(corrupt_writes),
                  total=torch.zeros(corrupt_writes.shape[1:], device=corrupt_writes.device))  # fmt: skip
    return hooked.forward(hooked.embed(batch.clean), st)


def select(graph: Graph, scores: np.ndarray, cfg: CircuitsConfig) -> np.ndarray:
    """The circuit: [U, V] bool, edges chosen as configured, dangling ones pruned."""
    if cfg.top_k > 0:
        keep = top_k(graph, scores, cfg.top_k)
    elif cfg.threshold > 0:
        keep = threshold(graph, scores, cfg.threshold)
    else:
        keep = top_fraction(graph, scores, cfg.top_fraction)
    return prune(graph, keep)


def random_circuits(graph: Graph, circuit: np.ndarray, draws: int, seed: int, relation: str) -> list[np.ndarray]:
    """`draws` random connected circuits [U, V] of the circuit's size (edges after pruning, nodes), seeded."""
    n_edges, n_nodes = int(circuit.sum()), int(circuit_nodes(circuit).sum())
    rng = np.random.default_rng([seed, n_edges, n_nodes, zlib.crc32(relation.encode("utf-8"))])
    return [random_circuit(graph, n_edges, n_nodes, rng) for _ in range(draws)]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and SD (ddof 1; NaN from one value) of the finite values; (NaN, NaN) when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return fmean(finite), stdev(finite) if len(finite) > 1 else math.nan


class Evaluator:
    """Patched runs over the batches of one checkpoint (call inside `hooked.attached()`)."""

    def __init__(self, hooked: HookedLM, batches: list[Batch], results: list[BatchResult], min_gap: float):
        self.hooked, self.batches = hooked, batches
        self.clean = outcome([r.clean_logits for r in results], batches)
        self.corrupt = outcome([r.corrupt_logits for r in results], batches)
        self.small_gap = not abs(self.clean.metric - self.corrupt.metric) >= min_gap

    def run(self, keeps: list[np.ndarray]) -> list[Outcome]:
        """For each circuit `keep` [U, V]: the clean prompts with every edge outside it carrying its corrupted
        value. Batch by batch, so only one batch's corrupted writes are ever held. A circuit that keeps every
        edge is the clean run itself: its outcome is the clean one, without a forward pass."""
        valid = self.hooked.graph.valid
        runs = [i for i, k in enumerate(keeps) if (valid & ~k).any()]
        coefs = [torch.from_numpy(valid & ~keeps[i]).float().to(self.hooked.device) for i in runs]  # [U, V]
        logits: list[list[torch.Tensor]] = [[] for _ in runs]
        with torch.no_grad():
            for b in self.batches:
                _, writes = run_corrupted(self.hooked, b)
                scratch = torch.empty_like(writes)
                for out, coef in zip(logits, coefs):
                    out.append(patched_logits(self.hooked, b, writes, coef, scratch))
        done = dict(zip(runs, (outcome(lg, self.batches) for lg in logits)))
        return [done.get(i, self.clean) for i in range(len(keeps))]

    def faithfulness(self, o: Outcome) -> float:
        if self.small_gap:
            return math.nan
        return (o.metric - self.corrupt.metric) / (self.clean.metric - self.corrupt.metric)


def evaluate(ev: Evaluator, scores: np.ndarray, cfg: CircuitsConfig, relation: str) -> tuple[np.ndarray, dict[str, float], list[list[float]]]:
    """(circuit [U, V] bool, metrics, faithfulness curve rows [fraction, n_edges, faithfulness])."""
    graph = ev.hooked.graph
    circuit = select(graph, scores, cfg)
    fractions = sorted(set(cfg.fractions))
    curve_edges = [prune(graph, top_fraction(graph, scores, f)) for f in fractions]
    randoms = random_circuits(graph, circuit, cfg.random_draws, cfg.seed, relation)
    masks = [circuit, *curve_edges, *randoms]
    keys = [np.packbits(m).tobytes() for m in masks]
    first: dict[bytes, int] = {}  # the circuit is often one of the curve's points: run each distinct mask once
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = sorted(set(first.values()))
    done = dict(zip(distinct, ev.run([masks[i] for i in distinct])))
    inside, *rest = [done[first[key]] for key in keys]
    points, rand = rest[: len(fractions)], rest[len(fractions) :]
    curve = [[f, int(e.sum()), ev.faithfulness(o)] for f, e, o in zip(fractions, curve_edges, points)]
    metrics = {
        "clean_metric": ev.clean.metric, "corrupted_metric": ev.corrupt.metric,
        "faithfulness": ev.faithfulness(inside), "faithfulness_flag": ev.small_gap, "hit10_full": ev.clean.hit10,
        "mrr_full": ev.clean.mrr, "hit10_circuit": inside.hit10, "mrr_circuit": inside.mrr,
        "hit10_corrupted": ev.corrupt.hit10, "faithfulness_auc": curve_area(curve), "random_draws": len(rand),
    }  # fmt: skip
    for name, values in (("faithfulness", [ev.faithfulness(o) for o in rand]), ("hit10", [o.hit10 for o in rand]),
                         ("mrr", [o.mrr for o in rand])):  # fmt: skip
        metrics[f"{name}_random"], metrics[f"{name}_random_sd"] = mean_sd(values)
    return circuit, metrics, curve


def curve_area(curve: list[list[float]]) -> float:
    """Trapezoid area under faithfulness over log10(fraction), divided by the axis width (NaN if undefined)."""
    if len(curve) < 2:
        return math.nan
    x = np.log10([c[0] for c in curve])
    y = np.array([c[2] for c in curve], dtype=np.float64)
    if not np.isfinite(y).all():
        return math.nan
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def logit_lens(hooked: HookedLM, batches: list[Batch], results: list[BatchResult]) -> list[list[float]]:
    """Rows [layer, mean rank, median rank] of the target after each layer (clean prompts)."""
    ranks = []
    with torch.no_grad():
        for b, r in zip(batches, results):  # every layer of a batch in one product: [L·B, d] × [d, vocab]
            ranks.append(target_ranks(hooked.unembed(hooked.final_norm(r.lens[1:])), b.target))  # [L, B]
    all_ranks = torch.cat(ranks, dim=1).double().cpu()  # [L, N]
    return [[layer, float(row.mean()), float(np.median(row.numpy()))] for layer, row in enumerate(all_ranks)]
