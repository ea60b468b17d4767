"""Hooks on a Hugging Face causal LM that expose the circuit graph (graph.py) without TransformerLens.

    hooked = HookedLM(model)                       # adapters.py says where everything is
    with hooked.attached():
        logits = hooked.forward(hooked.embed(ids), RunState(p0=3, last=last, writes=buf))

One forward pass, three optional jobs, all switched by the RunState:
- writes: every writer's contribution to the residual stream, from position p0 on. A head's write is its
  slice of the o_proj input times its slice of W_O (heads are contiguous); with a sandwich norm (Gemma-3)
  it is its share of that norm's output. The input's write is the residual entering layer 0.
- grads: ∂(summed metric)/∂(each reader's input), accumulated. q / k / v readers: the gradient at the
  projection's output, taken back through the head's weight slice and the attention norm (a small
  vector-Jacobian product at the layer's residual input, in closed form), so the forward stays the model's own. MLP and
  logits readers: the gradient at a private copy of the norm's input.
- patching (coef, diff): reader v's input becomes r + Σ_u coef[u, v] · (corrupted_u − current_u), the
  intervention of EAP-IG's evaluation. Heads whose inputs change get their own normed input and projection.

Per-query-head k / v readers on a GQA model: the KV heads' projections are computed once and their
outputs repeated per query head (the weights are never repeated); the attention module is told it has
no KV groups (num_key_value_groups = 1) while hooks are attached. Positions before p0 (where clean and
corrupted prompts still agree) have zero activation differences, so nothing is stored or patched there.
Prompts are right-padded: causal attention keeps pads out of every real position, so no mask is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from kdyn.circuits.adapters import adapter_for, get, head_weights, norm_gain, norm_vjp, rms_post_norm, shape_of
from kdyn.circuits.graph import Block, KvReaders, build_graph


@dataclass
class RunState:
    p0: int  # first position where any clean / corrupted pair differs
    last: torch.Tensor  # [B] index of each prompt's last token
    writes: torch.Tensor | None = None  # [U, B, P', d] this run's writes (P' = P - p0), writer-major
    diff: torch.Tensor | None = None  # [U, B, P', d] corrupted writes; this run's are subtracted as they arrive
    coef: torch.Tensor | None = None  # [U, V] 1 = the edge carries its corrupted value, 0 = its own
    grads: torch.Tensor | None = None  # [B, V, P', d] += ∂metric/∂(reader input)
    lens: list[torch.Tensor] | None = None  # residual at the last position before each layer, and final: [B, d]
    total: torch.Tensor | None = None  # [B, P', d] Σ diff over the writers written so far
    written: int = 0
    resid: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → attention-norm input [B, P, d]


class HookedLM:
    def __init__(self, model: nn.Module, kv_readers: KvReaders = "query"):
        self.model = model
        self.ad = adapter_for(model)
        self.shape = shape_of(model)
        self.graph = build_graph(self.shape, kv_readers)
        self.layers = get(model, self.ad.layers)
        self.weights = [head_weights(self.ad, block, self.shape) for block in self.layers]
        self.attn_norms = [norm_gain(get(block, self.ad.attn_norm), self.ad.norm) for block in self.layers]
        self.state: RunState | None = None
        s = self.shape
        self.repeat_kv = kv_readers == "query" and s.n_kv_heads < s.n_heads

    # ---- running -----------------------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return get(self.model, self.ad.embed)(ids)  # [B, P, d]

    def forward(self, embeds: torch.Tensor, st: RunState) -> torch.Tensor:
        """[B, P, d] input embeddings → [B, vocab] logits at each prompt's last position."""
        self.state = st
        try:
            out = get(self.model, self.ad.base)(inputs_embeds=embeds, use_cache=False)
        finally:
            self.state = None
        hidden = out.last_hidden_state  # [B, P, d], final norm applied
        return self.unembed(hidden[torch.arange(hidden.shape[0]), st.last])

    def unembed(self, h: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states [..., d] → logits [..., vocab] (with Gemma's soft cap when set)."""
        logits = get(self.model, self.ad.lm_head)(h)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def final_norm(self, h: torch.Tensor) -> torch.Tensor:
        return get(self.model, self.ad.final_norm).forward(h)  # .forward: our own hooks stay out of it

    @contextlib.contextmanager
    def attached(self) -> Iterator[HookedLM]:
        """Install the hooks (and freeze the weights: only activation gradients are ever needed)."""
        ad, g = self.ad, self.graph
        handles = []
        groups: list[tuple[nn.Module, int]] = []
        for layer, block in enumerate(self.layers):
            attn = get(block, ad.attn)
            handles.append(get(block, ad.attn_norm).register_forward_pre_hook(partial(self._attn_input, layer)))
            for name, which in ([(ad.q, "qkv")] if ad.fused_qkv else [(ad.q, "q"), (ad.k, "k"), (ad.v, "v")]):
                handles.append(get(attn, name).register_forward_hook(partial(self._qkv_output, layer, which)))
            handles.append(get(attn, ad.o).register_forward_pre_hook(partial(self._heads_output, layer)))
            handles.append(get(block, ad.mlp_norm).register_forward_pre_hook(partial(self._reader_input, g.blocks[2 * layer + 1])))
            handles.append(get(block, ad.mlp_write).register_forward_hook(partial(self._mlp_output, layer)))
            if self.repeat_kv:
                groups.append((attn, attn.num_key_value_groups))
                attn.num_key_value_groups = 1
        handles.append(get(self.model, ad.final_norm).register_forward_pre_hook(partial(self._reader_input, g.blocks[-1])))
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            for attn, n in groups:
                attn.num_key_value_groups = n
            for p in trainable:
                p.requires_grad_(True)

    # ---- writers -----------------------------------------------------------------------------------------

    def _write(self, st: RunState, first: int, w: torch.Tensor) -> None:
        """Record writers first..first+n-1: w [n, B, P', d]."""
        assert first == st.written, f"writer {first} arrived after {st.written} writes"
        n = w.shape[0]
        st.written += n
        if st.writes is not None:
            st.writes[first : first + n] = w
        if st.diff is not None:
            st.diff[first : first + n] -= w
            st.total += st.diff[first : first + n].sum(0)

    def _attn_input(self, layer: int, module: nn.Module, args: tuple[Any, ...]) -> None:
        st = self.state
        if st is None:
            return
        r = args[0]  # [B, P, d] residual stream entering the layer
        st.resid[layer] = r
        if st.lens is not None:
            st.lens.append(r[torch.arange(r.shape[0]), st.last].detach())
        if layer == 0:
            self._write(st, 0, r[:, st.p0 :].detach().unsqueeze(0))

    def _heads_output(self, layer: int, module: nn.Module, args: tuple[Any, ...]) -> None:
        st = self.state
        if st is None or (st.writes is None and st.diff is None):
            if st is not None:
                st.written += self.shape.n_heads
            return
        s = self.shape
        z = args[0][:, st.p0 :].detach()  # [B, P', H*e]
        z = z.reshape(*z.shape[:2], s.n_heads, s.head_dim)
        parts = torch.einsum("bphe,dhe->hbpd", z, self.weights[layer].wo)  # [H, B, P', d]
        if self.ad.attn_post_norm is not None:
            bias = getattr(module, "bias", None)
            total = parts.sum(0) + (bias.detach() if bias is not None else 0.0)  # [B, P', d] = o_proj output
            parts = rms_post_norm(get(self.layers[layer], self.ad.attn_post_norm), parts, total)
        self._write(st, self.graph.head_writers(layer).start, parts)

    def _mlp_output(self, layer: int, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        st = self.state
        if st is None:
            return
        if st.writes is None and st.diff is None:
            st.written += 1
            return
        self._write(st, self.graph.mlp_writer(layer), out[:, st.p0 :].detach().unsqueeze(0))

    # ---- readers -----------------------------------------------------------------------------------------

    def _delta(self, st: RunState, block: Block, readers: slice) -> torch.Tensor | None:
        """Σ_u coef[u, v] (corrupted_u − current_u) for the readers: [B, P', n, d], or None when nothing is patched.
        One matrix product over the writers that matter: the patched ones, or — when fewer — the kept ones,
        subtracted from the running total (a small circuit keeps few edges per reader)."""
        assert st.written == block.upstream and st.coef is not None and st.diff is not None and st.total is not None
        coef = st.coef[: block.upstream, readers]  # [u, n]
        diff = st.diff[: block.upstream]  # [u, B, P', d]
        flat = diff.reshape(block.upstream, -1)  # [u, B*P'*d], a view
        if coef.requires_grad:  # differentiating through the intervention: every term stays in the sum
            out = coef.T @ flat.clone()  # (diff keeps changing in place)
        else:
            patched = torch.nonzero(coef.any(1)).squeeze(1)
            if patched.numel() == 0:
                return None
            kept = torch.nonzero((coef != 1).any(1)).squeeze(1)
            if patched.numel() <= kept.numel():
                out = coef[patched].T @ flat[patched]
            else:
                out = st.total.reshape(1, -1) - (1.0 - coef[kept]).T @ flat[kept]
        return out.reshape(-1, *diff.shape[1:]).permute(1, 2, 0, 3)  # [n, B, P', d] → [B, P', n, d]

    def _reader_input(self, block: Block, module: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor] | None:
        """Pre-hook on the MLP's norm or the final norm: patch that reader's input and / or watch its gradient."""
        st = self.state
        if st is None:
            return None
        x = args[0]  # [B, P, d]
        if st.lens is not None and block.kind == "logits":
            st.lens.append(x[torch.arange(x.shape[0]), st.last].detach())
        if st.coef is not None:
            delta = self._delta(st, block, block.readers)
            if delta is not None:
                x = torch.cat([x[:, : st.p0], x[:, st.p0 :] + delta[:, :, 0]], dim=1)
        if st.grads is not None:
            x = x.clone()  # a private copy: its gradient is this reader's alone
            x.register_hook(partial(self._reader_grad, st, block))
        return (x,) if x is not args[0] else None

    def _reader_grad(self, st: RunState, block: Block, grad: torch.Tensor) -> None:
        st.grads[:, block.readers] += grad[:, st.p0 :].unsqueeze(1)  # type: ignore[index]

    def _qkv_output(self, layer: int, which: str, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        st = self.state
        if st is None:
            return self._repeat(out, which) if self.repeat_kv and which != "q" else None
        if which != "qkv":
            return self._reader_projection(st, layer, which, out)
        s = self.shape
        q, k, v = out.split([s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim, s.n_kv_heads * s.head_dim], dim=-1)
        return torch.cat([self._reader_projection(st, layer, w, y) for w, y in zip("qkv", (q, k, v))], dim=-1)

    def _repeat(self, y: torch.Tensor, which: str) -> torch.Tensor:
        """KV-head outputs [B, P, K*e] → one copy per query head [B, P, H*e] (fused q|k|v: k and v parts)."""
        s = self.shape
        if which == "qkv":
            q, k, v = y.split([s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim, s.n_kv_heads * s.head_dim], dim=-1)
            return torch.cat([q, self._repeat(k, "k"), self._repeat(v, "v")], dim=-1)
        B, P = y.shape[:2]
        group = s.n_heads // s.n_kv_heads
        return y.reshape(B, P, s.n_kv_heads, 1, s.head_dim).expand(B, P, s.n_kv_heads, group, s.head_dim).reshape(B, P, -1)

    def _reader_projection(self, st: RunState, layer: int, which: str, y: torch.Tensor) -> torch.Tensor:
        """One of q / k / v of a layer [B, P, n*e]: per-query repeat, patched inputs, gradient watch."""
        if self.repeat_kv and which != "q":
            y = self._repeat(y, which)
        readers = self.graph.attn_readers(layer, which)  # type: ignore[arg-type]
        if st.coef is not None:
            delta = self._delta(st, self.graph.blocks[2 * layer], readers)
            if delta is not None:
                r = st.resid[layer][:, st.p0 :]  # [B, P', d]
                y = torch.cat([y[:, : st.p0], self._project(layer, which, r.unsqueeze(2) + delta)], dim=1)
        if st.grads is not None:
            y.register_hook(partial(self._projection_grad, st, layer, which, readers))
        return y

    def _wb(self, layer: int, which: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.weights[layer]
        return {"q": (w.wq, w.bq), "k": (w.wk, w.bk), "v": (w.wv, w.bv)}[which]

    def _grouped(self, which: str) -> bool:
        """Whether this projection's readers are query heads sharing one KV head's weights."""
        return which != "q" and self.repeat_kv

    def _project(self, layer: int, which: str, x: torch.Tensor) -> torch.Tensor:
        """Per-reader residual inputs x [B, P', n, d] → normed, projected by each reader's own head [B, P', n*e]."""
        s = self.shape
        x = get(self.layers[layer], self.ad.attn_norm).forward(x)
        w, b = self._wb(layer, which)
        if self._grouped(which):
            B, P = x.shape[:2]
            x = x.reshape(B, P, s.n_kv_heads, s.n_heads // s.n_kv_heads, s.d_model)
            y = torch.einsum("bpkgd,ked->bpkge", x, w) + (b[:, None] if b is not None else 0.0)
        else:
            y = torch.einsum("bpnd,ned->bpne", x, w) + (b if b is not None else 0.0)
        return y.reshape(*y.shape[:2], -1)

    def _projection_grad(self, st: RunState, layer: int, which: str, readers: slice, grad: torch.Tensor) -> None:
        """Gradient at a projection's output [B, P, n*e] → each reader's input gradient, through the head's
        weight slice and the attention norm's Jacobian at this run's residual input."""
        s = self.shape
        g = grad[:, st.p0 :]
        B, P = g.shape[:2]
        w, _ = self._wb(layer, which)
        if self._grouped(which):
            g = g.reshape(B, P, s.n_kv_heads, s.n_heads // s.n_kv_heads, s.head_dim)
            back = torch.einsum("bpkge,ked->bpkgd", g, w).reshape(B, P, s.n_heads, s.d_model)
        else:
            back = torch.einsum("bpne,ned->bpnd", g.reshape(B, P, -1, s.head_dim), w)  # [B, P', n, d]
        gain, eps = self.attn_norms[layer]
        g_in = norm_vjp(self.ad.norm, eps, st.resid[layer][:, st.p0 :].detach(), back * gain)  # [B, P', n, d]
        st.grads[:, readers] += g_in.transpose(1, 2)  # type: ignore[index]
