"""Circuit evaluation with the discovery intervention, and the logit lens (DESIGN.md "Knowledge circuits").

A circuit is evaluated by running the clean prompts with every edge outside it patched: its reader gets the
corrupted writer's activation instead of the current one (hooks.py, as EAP-IG's evaluation). From that run:
- faithfulness = (M_circuit − M_corrupted) / (M_clean − M_corrupted) with M the mean logit difference;
  NaN and flagged when |M_clean − M_corrupted| < min_metric_gap (nothing to explain);
- hit@10 (the object's first token ranks 0..9) and MRR of that token, for the circuit, the full model
  (clean run) and a random circuit with as many edges;
- the faithfulness-vs-fraction curve (top fraction f of edges, pruned) and its area: the trapezoid over
  log10 f, divided by the width of that axis, so 1 means faithful at every size tried.
Logit lens: the residual stream after each layer at the last position, through the final norm and the
unembedding; the target's rank there (0 = top), mean and median over prompts.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from kdyn.circuits.attribution import Batch, BatchResult, logit_diff, run_corrupted
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.graph import Graph, prune, threshold, top_fraction, top_k
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


def patched_logits(hooked: HookedLM, batch: Batch, corrupt_writes: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """[B, vocab] logits of the clean prompts with edge u → v carrying coef[u, v] of its corrupted activation
    difference (1: patched, 0: kept); differentiable in coef (call inside `hooked.attached()`)."""
    st = RunState(p0=batch.p0, last=batch.last, diff=corrupt_writes.clone(), coef=coef,
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


def random_edges(graph: Graph, n: int, seed: int, relation: str) -> np.ndarray:
    rng = np.random.default_rng([seed, n, zlib.crc32(relation.encode("utf-8"))])
    flat = np.flatnonzero(graph.valid)
    keep = np.zeros(graph.valid.size, dtype=bool)
    keep[rng.choice(flat, size=min(n, flat.size), replace=False)] = True
    return keep.reshape(graph.valid.shape)


class Evaluator:
    """Patched runs over the batches of one checkpoint (call inside `hooked.attached()`)."""

    def __init__(self, hooked: HookedLM, batches: list[Batch], results: list[BatchResult], min_gap: float):
        self.hooked, self.batches = hooked, batches
        self.clean = outcome([r.clean_logits for r in results], batches)
        self.corrupt = outcome([r.corrupt_logits for r in results], batches)
        self.small_gap = not abs(self.clean.metric - self.corrupt.metric) >= min_gap

    def run(self, keeps: list[np.ndarray]) -> list[Outcome]:
        """For each circuit `keep` [U, V]: the clean prompts with every edge outside it carrying its corrupted
        value. Batch by batch, so only one batch's corrupted writes are ever held."""
        coefs = [torch.from_numpy(self.hooked.graph.valid & ~k).float().to(self.hooked.device) for k in keeps]  # [U, V]
        logits: list[list[torch.Tensor]] = [[] for _ in keeps]
        with torch.no_grad():
            for b in self.batches:
                _, writes = run_corrupted(self.hooked, b)
                for out, coef in zip(logits, coefs):
                    out.append(patched_logits(self.hooked, b, writes, coef))
        return [outcome(lg, self.batches) for lg in logits]

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
    masks = [circuit, random_edges(graph, int(circuit.sum()), cfg.seed, relation), *curve_edges]
    keys = [np.packbits(m).tobytes() for m in masks]
    first: dict[bytes, int] = {}  # the circuit is often one of the curve's points: run each distinct mask once
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = sorted(set(first.values()))
    done = dict(zip(distinct, ev.run([masks[i] for i in distinct])))
    inside, rand, *points = [done[first[key]] for key in keys]
    curve = [[f, int(e.sum()), ev.faithfulness(o)] for f, e, o in zip(fractions, curve_edges, points)]
    metrics = {
        "clean_metric": ev.clean.metric, "corrupted_metric": ev.corrupt.metric,
        "faithfulness": ev.faithfulness(inside), "faithfulness_random": ev.faithfulness(rand),
        "faithfulness_flag": ev.small_gap, "hit10_full": ev.clean.hit10, "mrr_full": ev.clean.mrr,
        "hit10_circuit": inside.hit10, "mrr_circuit": inside.mrr, "hit10_random": rand.hit10, "mrr_random": rand.mrr,
        "hit10_corrupted": ev.corrupt.hit10, "faithfulness_auc": curve_area(curve),
    }  # fmt: skip
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
        for b, r in zip(batches, results):
            per_layer = [target_ranks(hooked.unembed(hooked.final_norm(h)), b.target) for h in r.lens[1:]]
            ranks.append(torch.stack(per_layer))  # [L, B]
    all_ranks = torch.cat(ranks, dim=1).double().cpu()  # [L, N]
    return [[layer, float(row.mean()), float(np.median(row.numpy()))] for layer, row in enumerate(all_ranks)]
