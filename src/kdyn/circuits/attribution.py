"""Edge attribution: EAP and EAP-IG (input interpolation) on a hooked HF model, per prompt.

EAP score of edge u → v (Syed et al. 2023; Hanna et al. 2024), per prompt, summed over positions:
    s(u → v) = Σ_pos (corrupted_u − clean_u) · ∂M/∂(input of v)
EAP-IG replaces the gradient at the clean input by its mean over m points on the straight line between
the corrupted and clean input embeddings, α = k/m for k = 1..m (the paper's right Riemann sum; m = 1 is
EAP). M is the metric (prompts.py): logit(object's first token) − logit(corrupted object's first token)
at the last position. Averaging the per-prompt scores gives the scores of the mean metric.

Cost per batch: one corrupted forward, m forward+backward passes (weights frozen: activation gradients
only), then one batched contraction per reader block over (writers upstream × readers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from kdyn.circuits.hooks import HookedLM, RunState

Method = Literal["eap", "eap-ig"]


@dataclass
class Batch:
    """Token ids of paired prompts, right-padded to one length (a pair always has equal lengths)."""

    clean: torch.Tensor  # [B, P] long
    corrupt: torch.Tensor  # [B, P] long
    last: torch.Tensor  # [B] index of the last real token
    target: torch.Tensor  # [B] first token of the clean object
    foil: torch.Tensor  # [B] first token of the corrupted subject's object

    @property
    def p0(self) -> int:
        """First position where any pair differs: before it every activation difference is exactly zero."""
        differs = (self.clean != self.corrupt).any(0)
        return int(torch.nonzero(differs)[0]) if differs.any() else self.clean.shape[1] - 1

    def __len__(self) -> int:
        return self.clean.shape[0]

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.clean, self.corrupt, self.last, self.target, self.foil)))


@dataclass
class BatchResult:
    scores: torch.Tensor  # [B, U, V] per-prompt edge scores (zero off the valid mask)
    clean_logits: torch.Tensor  # [B, vocab] at the last position
    corrupt_logits: torch.Tensor  # [B, vocab]
    lens: torch.Tensor  # [L + 1, B, d] residual stream at the last position before each layer, and the final one


def logit_diff(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """[B, vocab] → [B]: the metric of DESIGN.md."""
    return logits.gather(1, batch.target[:, None])[:, 0] - logits.gather(1, batch.foil[:, None])[:, 0]


def new_writes(hooked: HookedLM, batch: Batch) -> torch.Tensor:
    """[U, B, P', d], uninitialised: a run with writes fills every writer's slot (hooks.py checks)."""
    s = hooked.shape
    return torch.empty(len(hooked.graph.writers), len(batch), batch.clean.shape[1] - batch.p0, s.d_model, device=hooked.device)


def run_corrupted(hooked: HookedLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, vocab], writes [U, B, P', d]) of the corrupted prompts."""
    writes = new_writes(hooked, batch)
    with torch.no_grad():
        logits = hooked.forward(hooked.embed(batch.corrupt), RunState(p0=batch.p0, last=batch.last, writes=writes))
    return logits, writes


def attribute(hooked: HookedLM, batch: Batch, method: Method = "eap-ig", steps: int = 5) -> BatchResult:
    """Per-prompt scores of every edge for one batch (call inside `hooked.attached()`)."""
    m = 1 if method == "eap" else steps
    p0, g = batch.p0, hooked.graph
    corrupt_logits, corrupt_writes = run_corrupted(hooked, batch)
    clean_writes = new_writes(hooked, batch)
    grads = torch.zeros(len(g.readers), len(batch), batch.clean.shape[1] - p0, hooked.shape.d_model, device=hooked.device)  # [V, B, P', d]
    with torch.no_grad():
        e_clean, e_corrupt = hooked.embed(batch.clean), hooked.embed(batch.corrupt)  # [B, P, d]
    lens: list[torch.Tensor] = []
    proj: dict[tuple[int, str], torch.Tensor] = {}  # the e-wide gradient sums of the q / k / v readers (hooks.py)
    pair = torch.stack([batch.target, batch.foil], dim=1)  # [B, 2]: the metric needs two rows of the unembedding
    for k in range(1, m + 1):
        clean = k == m  # α = 1 is the clean input itself (not corrupted + 1 · difference, an ulp away)
        embeds = (e_clean.clone() if clean else e_corrupt + (k / m) * (e_clean - e_corrupt)).requires_grad_(True)
        st = RunState(p0=p0, last=batch.last, grads=grads, proj=proj, writes=clean_writes if clean else None,
                      lens=lens if clean else None)  # fmt: skip
        hidden = hooked.hidden(embeds, st)  # [B, d]
        two = hooked.unembed(hidden, pair)  # [B, 2]
        (two[:, 0] - two[:, 1]).sum().backward()
    with torch.no_grad():
        hooked.finish_grads(grads, proj)
        clean_logits = hooked.unembed(hidden)
    clean_writes.neg_().add_(corrupt_writes)  # in place: corrupted − clean
    scores = edge_scores(hooked, clean_writes, grads) / m
    return BatchResult(scores=scores, clean_logits=clean_logits, corrupt_logits=corrupt_logits, lens=torch.stack(lens))


def edge_scores(hooked: HookedLM, diff: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """diff [U, B, P', d] · grads [V, B, P', d] summed over positions and d → [B, U, V], upstream pairs only.
    One product per layer: its attention readers and its MLP together (the MLP alone would be a matrix-vector
    product over the same writers); the layer's own heads → its attention readers are then set back to 0."""
    U, B = diff.shape[:2]
    V = grads.shape[0]
    out = torch.zeros(B, U, V, device=diff.device)
    flat_diff = diff.transpose(0, 1).reshape(B, U, -1)  # [B, U, P'd] (one copy)
    flat_grads = grads.reshape(V, B, -1)  # [V, B, P'd]
    blocks = hooked.graph.blocks
    for attn, mlp in [*zip(blocks[0:-1:2], blocks[1:-1:2]), (blocks[-1], blocks[-1])]:
        cols = slice(attn.readers.start, mlp.readers.stop)
        out[:, : mlp.upstream, cols] = torch.bmm(flat_diff[:, : mlp.upstream], flat_grads[cols].permute(1, 2, 0))
        out[:, attn.upstream : mlp.upstream, attn.readers] = 0.0
    return out
