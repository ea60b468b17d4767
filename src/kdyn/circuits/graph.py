"""The computational graph of a transformer (DESIGN.md "Knowledge circuits"), edge selection and pruning.

Nodes: `input` (the embeddings), every head `a{l}.h{h}`, every MLP `m{l}`, `logits`. Writers (rows of a
score matrix) are input, heads and MLPs in forward order; readers (columns) are each head's q, k and v
inputs, each MLP's input and the logits. An edge is writer → reader for every writer upstream of the
reader; scores are dense [U, V] tensors, zero off the `valid` mask.

Grouped-query attention: with `kv_readers="query"` (default, as TransformerLens' ungrouped GQA and so
EAP-IG / DynamicKnowledgeCircuits) every query head has its own k and v input (`a{l}.h{h}<k>`), which is
what makes the edge count L²H² (≈123k for SmolLM2). With `kv_readers="kv"` a k / v input belongs to one
KV head (`a{l}.g{g}<k>`), the graph the model actually computes; all heads of its group read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kdyn.circuits.adapters import Shape

KvReaders = Literal["query", "kv"]


@dataclass(frozen=True)
class Block:
    """Readers that take their input at one point of the forward pass, and how many writers precede them."""

    layer: int  # -1 for the logits
    kind: Literal["attn", "mlp", "logits"]
    readers: slice  # columns of the score matrix
    upstream: int  # writers 0..upstream-1 feed these readers


@dataclass
class Graph:
    shape: Shape
    kv_readers: KvReaders
    writers: list[str]
    readers: list[str]
    writer_layer: np.ndarray  # [U] int, -1 for the input
    reader_layer: np.ndarray  # [V] int, n_layers for the logits
    blocks: list[Block]
    membership: np.ndarray  # [V, N] bool: which node(s) a reader is an input of (N = U + 1, the last is logits)
    valid: np.ndarray = field(init=False)  # [U, V] bool
    edge_index: np.ndarray = field(init=False)  # [E] flat indices of the valid pairs, row-major
    member_pairs: tuple[np.ndarray, np.ndarray] = field(init=False)  # (reader, node) of every membership
    block_nodes: list[np.ndarray] = field(init=False)  # per block: the writer nodes its readers feed

    def __post_init__(self) -> None:
        self.valid = np.zeros((len(self.writers), len(self.readers)), dtype=bool)
        for b in self.blocks:
            self.valid[: b.upstream, b.readers] = True
        self.edge_index = np.flatnonzero(self.valid)
        self.member_pairs = np.nonzero(self.membership)
        U = len(self.writers)
        self.block_nodes = [n[n < U] for n in (np.flatnonzero(self.membership[b.readers].any(0)) for b in self.blocks)]

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    @property
    def nodes(self) -> list[str]:
        return [*self.writers, "logits"]

    def head_writers(self, layer: int) -> slice:
        start = 1 + layer * (self.shape.n_heads + 1)
        return slice(start, start + self.shape.n_heads)

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.shape.n_heads + 1) + self.shape.n_heads

    def attn_readers(self, layer: int, which: Literal["q", "k", "v"]) -> slice:
        block = self.blocks[2 * layer].readers
        nk = self.n_kv_readers
        start = block.start + {"q": 0, "k": self.shape.n_heads, "v": self.shape.n_heads + nk}[which]
        return slice(start, start + (self.shape.n_heads if which == "q" else nk))

    @property
    def n_kv_readers(self) -> int:
        return self.shape.n_heads if self.kv_readers == "query" else self.shape.n_kv_heads


def build_graph(shape: Shape, kv_readers: KvReaders = "query") -> Graph:
    L, H, K = shape.n_layers, shape.n_heads, shape.n_kv_heads
    nk = H if kv_readers == "query" else K
    group = H // K
    writers, writer_layer = ["input"], [-1]
    readers: list[str] = []
    reader_layer: list[int] = []
    blocks: list[Block] = []
    members: list[list[int]] = []  # per reader: node indices
    for layer in range(L):
        first_head = len(writers)
        start = len(readers)
        for h in range(H):
            readers.append(f"a{layer}.h{h}<q>")
            members.append([first_head + h])
        for letter in "kv":
            for i in range(nk):
                readers.append(f"a{layer}.h{i}<{letter}>" if kv_readers == "query" else f"a{layer}.g{i}<{letter}>")
                members.append([first_head + i] if kv_readers == "query" else
                               [first_head + i * group + j for j in range(group)])  # fmt: skip
        reader_layer += [layer] * (len(readers) - start)
        blocks.append(Block(layer, "attn", slice(start, len(readers)), upstream=len(writers)))
        writers += [f"a{layer}.h{h}" for h in range(H)]
        writer_layer += [layer] * H
        readers.append(f"m{layer}")
        members.append([len(writers)])
        reader_layer.append(layer)
        blocks.append(Block(layer, "mlp", slice(len(readers) - 1, len(readers)), upstream=len(writers)))
        writers.append(f"m{layer}")
        writer_layer.append(layer)
    readers.append("logits")
    members.append([len(writers)])
    reader_layer.append(L)
    blocks.append(Block(-1, "logits", slice(len(readers) - 1, len(readers)), upstream=len(writers)))
    membership = np.zeros((len(readers), len(writers) + 1), dtype=bool)
    for v, nodes in enumerate(members):
        membership[v, nodes] = True
    return Graph(shape=shape, kv_readers=kv_readers, writers=writers, readers=readers,
                 writer_layer=np.array(writer_layer), reader_layer=np.array(reader_layer), blocks=blocks,
                 membership=membership)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# selection


def top_k(graph: Graph, scores: np.ndarray, k: int) -> np.ndarray:
    """[U, V] bool: the k valid edges with the largest |score| (ties broken by edge order, deterministically)."""
    a = np.abs(scores.ravel()[graph.edge_index])
    keep = np.zeros(graph.valid.size, dtype=bool)
    keep[graph.edge_index[largest(a, k)]] = True
    return keep.reshape(graph.valid.shape)


def largest(a: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of a (ties: the lowest indices), by partition rather than a full sort."""
    k = max(0, min(int(k), a.size))
    if k in (0, a.size):
        return np.arange(k)
    kth = np.partition(a, a.size - k)[a.size - k]
    above = np.flatnonzero(a > kth)
    return np.concatenate([above, np.flatnonzero(a == kth)[: k - above.size]])


def top_fraction(graph: Graph, scores: np.ndarray, fraction: float) -> np.ndarray:
    return top_k(graph, scores, max(1, round(fraction * graph.n_edges)))


def threshold(graph: Graph, scores: np.ndarray, min_abs: float) -> np.ndarray:
    return graph.valid & (np.abs(scores) >= min_abs)


def prune(graph: Graph, keep: np.ndarray) -> np.ndarray:
    """Drop dangling edges: keep an edge only if its source is reached from the input and its reader feeds a
    node that reaches the logits, through kept edges. One forward and one backward sweep suffice."""
    U, V = keep.shape
    R = graph.membership  # [V, N]
    rv, rn = graph.member_pairs
    reached = np.zeros(U + 1, dtype=bool)
    reached[0] = True
    for b in graph.blocks:  # forward order
        fed = (keep[: b.upstream, b.readers] & reached[: b.upstream, None]).any(0)  # [n readers]
        reached |= (R[b.readers] & fed[:, None]).any(0)
    useful = np.zeros(U + 1, dtype=bool)
    useful[U] = reached[U]
    for nodes in reversed(graph.block_nodes):  # the nodes a block's readers feed are useful if they feed on
        needed = np.bincount(rv, weights=useful[rn], minlength=V) > 0  # [V]: a reader of a useful node
        useful[nodes] = (keep[nodes] & needed[None, :]).any(1) & reached[nodes]
    needed = np.bincount(rv, weights=useful[rn], minlength=V) > 0
    return keep & reached[:U, None] & needed[None, :]


def circuit_nodes(edges: np.ndarray) -> np.ndarray:
    """[U] bool over writers: the heads and MLPs of a pruned circuit (after pruning every node with an edge
    out of it also has one into it); the input is left out, as the logits, since every circuit has both."""
    nodes = edges.any(1)
    nodes[0] = False
    return nodes
