"""Random circuits for the faithfulness baseline: connected (input → logits), of a given size after pruning.

A random set of n edges is almost never a circuit: on SmolLM2's 123k-edge graph, 1,232 random edges (1%)
keep 0–12 after pruning, so "random faithfulness 0.00" would only measure the fully corrupted model. A random
circuit here is grown instead, from the empty set, by random moves that each keep it its own pruning:
- a detour: a head or MLP w not yet in it, with one edge into w from the input or a node upstream in it and
  one edge out of w into a reader of a node downstream in it (or the logits): +1 node, +2 edges;
- a closing edge: one more edge between nodes already in it (or from the input, or into the logits): +1 edge.
Detours come first, until the random circuit has as many heads and MLPs as the real one, then closing
edges; a detour is also taken whenever too few closing edges are left to reach the size. Every move is drawn
uniformly among the moves of its kind, from one generator, so a seed gives the same circuits. The result has
exactly the requested number of edges, every one of them on a path from the input to the logits.
"""

from __future__ import annotations

import numpy as np

from kdyn.circuits.graph import Graph, prune
from kdyn.errors import KdynError


class _Growth:
    """One random circuit being grown: kept edges and which nodes it has (see the module docstring)."""

    def __init__(self, graph: Graph, rng: np.random.Generator):
        self.graph, self.rng = graph, rng
        U = len(graph.writers)
        self.keep = np.zeros(graph.valid.shape, dtype=bool)  # [U, V]
        self.inside = np.zeros(U + 1, dtype=bool)  # [N]: the input, the nodes grown so far, the logits
        self.inside[[0, U]] = True
        self.target = graph.membership[:, U].copy()  # [V]: readers of a node inside (can take a closing edge)
        self.closing = graph.valid & self.inside[:U, None] & self.target[None, :]  # [U, V] candidate closing edges
        self.n_kept, self.n_closing = 0, int(self.closing.sum())

    def copy(self) -> _Growth:
        other = object.__new__(_Growth)
        other.graph, other.rng = self.graph, self.rng
        other.keep, other.inside = self.keep.copy(), self.inside.copy()
        other.target, other.closing = self.target.copy(), self.closing.copy()
        other.n_kept, other.n_closing = self.n_kept, self.n_closing
        return other

    @property
    def n_nodes(self) -> int:
        return int(self.inside.sum()) - 2

    def outside(self) -> np.ndarray:
        """Heads and MLPs not in the circuit, in random order."""
        return self.rng.permutation(np.flatnonzero(~self.inside[1:-1]) + 1)

    def add_closing(self) -> None:
        """One closing edge, uniform among the candidates: draw (writer inside, reader of a node inside) pairs
        until one is a candidate (rejection sampling; most such pairs are), else pick from the full list."""
        writers, readers = np.flatnonzero(self.inside[:-1]), np.flatnonzero(self.target)
        for _ in range(64):
            u, v = writers[self.rng.integers(writers.size)], readers[self.rng.integers(readers.size)]
            if self.closing[u, v]:
                break
        else:
            flat = np.flatnonzero(self.closing)
            u, v = np.unravel_index(flat[self.rng.integers(flat.size)], self.closing.shape)
        self.keep[u, v], self.closing[u, v] = True, False
        self.n_kept, self.n_closing = self.n_kept + 1, self.n_closing - 1

    def add_detour(self, w: int) -> bool:
        """Grow node w by one edge in and one edge out; False (nothing changed) when no edge into w is free."""
        valid, readers = self.graph.valid, self.graph.membership[:, w]  # [V] the readers of w
        into = valid[:, readers] & self.inside[:-1, None] & ~self.keep[:, readers]
        if not into.any():
            return False
        out = np.flatnonzero(valid[w] & self.target)  # never empty: every node feeds the logits
        i = np.flatnonzero(into)[self.rng.integers(int(into.sum()))]
        u, r = np.unravel_index(i, into.shape)
        self.keep[u, np.flatnonzero(readers)[r]] = True
        self.keep[w, out[self.rng.integers(out.size)]] = True
        self.inside[w] = True
        fresh = readers & ~self.target
        self.target |= readers
        self.closing[w] = valid[w] & self.target
        self.closing[:, fresh] = valid[:, fresh] & self.inside[:-1, None]
        self.closing &= ~self.keep
        self.n_kept, self.n_closing = self.n_kept + 2, int(self.closing.sum())
        return True


def _try_detour(g: _Growth, remaining: int) -> _Growth | None:
    """The state after a detour that leaves the rest reachable, or None. With 3 edges left, the detour must
    leave a closing edge for the last one (checked on a copy)."""
    for w in g.outside():
        trial = g.copy() if remaining == 3 else g
        if trial.add_detour(int(w)) and (remaining != 3 or trial.n_closing):
            return trial
    return None


def random_circuit(graph: Graph, n_edges: int, n_nodes: int, rng: np.random.Generator) -> np.ndarray:
    """[U, V] bool: a random connected circuit with exactly n_edges edges after pruning and, where the edges
    allow, n_nodes heads and MLPs."""
    n_edges = min(int(n_edges), graph.n_edges)
    g = _Growth(graph, rng)
    while (remaining := n_edges - g.n_kept) > 0:
        short = g.n_closing < remaining  # (with every node inside, all free edges are closing ones)
        nxt = _try_detour(g, remaining) if remaining >= 2 and (g.n_nodes < n_nodes or short) else None
        if nxt is not None:
            g = nxt
        elif g.n_closing:
            g.add_closing()
        else:
            raise KdynError(f"could not grow a connected random circuit of {n_edges} edges on this graph")
    assert (prune(graph, g.keep) == g.keep).all(), "a grown random circuit must be its own pruning"
    return g.keep
