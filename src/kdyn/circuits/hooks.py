"""Hooks on a Hugging Face causal LM that expose the circuit graph (graph.py) without TransformerLens.

    hooked = HookedLM(model)                       # adapters.py says where everything is
    with hooked.attached():
        logits = hooked.forward(hooked.embed(ids), RunState(p0=3, last=last, writes=buf))

One forward pass, three optional jobs, all switched by the RunState:
- writes: every writer's contribution to the residual stream, from position p0 on. A head's write is its
  slice of the o_proj input times its slice of W_O (heads are contiguous); with a sandwich norm (Gemma-3)
  it is its share of that norm's output. The input's write is the residual entering layer 0.
- grads: ∂(summed metric)/∂(each reader's input), accumulated. q / k / v readers: the gradient at the
  projection's output, taken back through the head's weight slice and the attention norm's Jacobian at
  the layer's residual input (closed form, _projection_grad), so the forward stays the model's own. MLP
  and logits readers: the gradient at a private copy of the norm's input.
- patching (coef, diff): reader v's input becomes r + Σ_u coef[u, v] · (corrupted_u − current_u), the
  intervention of EAP-IG's evaluation. A layer's readers all see the same upstream writers, so their
  deltas are one matrix product at the layer's entry; heads whose inputs change get their own normed input
  and projection. A reader whose every upstream edge is patched (most readers, for a small circuit) reads the
  corrupted stream r + total: the attention norm is given that input, so the model's own q / k / v are those
  readers' values, and such an MLP's output is its corrupted write (the MLP itself runs on positions < p0
  only). Differentiating in coef takes none of these shortcuts.

Per-query-head k / v readers on a GQA model: the KV heads' projections are computed once and their outputs
repeated per query head (the weights are never repeated); the attention module is told it has no KV
groups (num_key_value_groups = 1) while hooks are attached. Positions before p0 (where clean and corrupted
prompts still agree) have zero activation differences, so nothing is stored or patched there. Prompts are
right-padded: causal attention keeps pads out of every real position, so no mask is needed.
Layouts: writer-major [U, B, P', d] and reader-major [V, B, P', d] buffers, so a block of writers or
readers is one contiguous slice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from kdyn.circuits.adapters import adapter_for, get, head_weights, norm_gain, norm_stats, rms_post_norm, shape_of
from kdyn.circuits.graph import Block, KvReaders, build_graph


@dataclass
class RunState:
    p0: int  # first position where any clean / corrupted pair differs
    last: torch.Tensor  # [B] index of each prompt's last token
    writes: torch.Tensor | None = None  # [U, B, P', d] this run's writes (P' = P - p0)
    corrupt: torch.Tensor | None = None  # [U, B, P', d] the corrupted writes (patching; read only)
    diff: torch.Tensor | None = None  # [U, B, P', d] corrupted − this run's writes, filled as the writers arrive
    coef: torch.Tensor | None = None  # [U, V] 1 = the edge carries its corrupted value, 0 = its own
    grads: torch.Tensor | None = None  # [V, B, P', d] += ∂metric/∂(reader input)
    lens: list[torch.Tensor] | None = None  # residual at the last position before each layer, and final: [B, d]
    total: torch.Tensor | None = None  # [B, P', d] Σ diff over the writers written so far
    written: int = 0
    resid: dict[int, torch.Tensor] = field(default_factory=dict)  # layer → attention-norm input [B, P, d]
    saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # layer → its norm_stats from p0
    outputs: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # (layer, q/k/v) → output from p0
    proj: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)  # += s·∂M/∂output [B, P', n*e]; share
    # it, as grads, between the runs whose gradients add up, then call finish_grads once
    full: torch.Tensor | None = None  # [V] bool: every upstream edge of the reader patched (coef 1), set per run
    rows: torch.Tensor | None = None  # [n + 1] this layer's readers → their row of `pending`, -1 if fully patched
    pending: torch.Tensor | None = None  # [m, B, P', d] deltas of the layer's partly patched q/k/v readers and MLP
    moved: bool = False  # this layer's attention norm reads r + total (some of its readers are fully patched)
    skip_mlp: int | None = None  # layer whose MLP is fully patched: its output is the corrupted one, not computed


class HookedLM:
    def __init__(self, model: nn.Module, kv_readers: KvReaders = "query"):
        self.model = model
        self.ad = adapter_for(model)
        self.shape = shape_of(model)
        self.graph = build_graph(self.shape, kv_readers)
        self.layers = get(model, self.ad.layers)
        self.weights = [head_weights(self.ad, block, self.shape) for block in self.layers]
        self.attn_norms = [norm_gain(get(block, self.ad.attn_norm), self.ad.norm) for block in self.layers]
        self.device = next(model.parameters()).device  # buffers live here, in float32 whatever the model's dtype
        self.state: RunState | None = None
        self.grad_weights: dict[tuple[int, str], torch.Tensor] = {}  # (layer, q/k/v) → the back-projection [h, e, d]
        self.shifts: dict[tuple[int, str], torch.Tensor | None] = {}  # (layer, q/k/v) → output offset [n*e]
        self.valid = torch.from_numpy(self.graph.valid).to(self.device)  # [U, V] bool
        s = self.shape
        self.repeat_kv = kv_readers == "query" and s.n_kv_heads < s.n_heads

    # ---- running -----------------------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return get(self.model, self.ad.embed)(ids)  # [B, P, d]

    def forward(self, embeds: torch.Tensor, st: RunState) -> torch.Tensor:
        """[B, P, d] input embeddings → [B, vocab] logits at each prompt's last position."""
        return self.unembed(self.hidden(embeds, st))

    def hidden(self, embeds: torch.Tensor, st: RunState) -> torch.Tensor:
        """[B, P, d] input embeddings → [B, d] final-normed hidden state at each prompt's last position."""
        self.state = st
        if st.coef is not None and st.full is None:  # (differentiating in coef: no reader takes the shortcuts)
            st.full = ((st.coef == 1) | ~self.valid).all(0) & (not st.coef.requires_grad)
        try:
            out = get(self.model, self.ad.base)(inputs_embeds=embeds, use_cache=False)
        finally:
            # Gradient hooks hold `st`; graph tensors held by `st` would close a cycle through the autograd
            # graph that Python's collector cannot see (and the buffers would leak): keep only detached ones.
            self.state, st.pending, st.rows = None, None, None
            st.resid.clear()
        if st.writes is not None or st.diff is not None:
            assert st.written == len(self.graph.writers), f"{st.written} of {len(self.graph.writers)} writers wrote"
        hidden = out.last_hidden_state  # [B, P, d], final norm applied
        return hidden[torch.arange(hidden.shape[0]), st.last]

    def unembed(self, h: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [..., d] → logits [..., vocab] (with Gemma's soft cap when set); with
        tokens [..., k], only those tokens' logits [..., k] (k rows of the unembedding instead of all)."""
        head = get(self.model, self.ad.lm_head)
        if tokens is None:
            logits = head(h)
        else:
            logits = torch.einsum("...d,...kd->...k", h, head.weight[tokens])
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[tokens]
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
            mlp_block = g.blocks[2 * layer + 1]
            handles.append(get(block, ad.mlp_norm).register_forward_pre_hook(partial(self._reader_input, mlp_block)))
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

    def _write(self, st: RunState, first: int, n: int, make: Any) -> None:
        """Record writers first..first+n-1; `make()` gives their writes [n, B, P', d] (only called if needed)."""
        assert first == st.written, f"writer {first} arrived after {st.written} writes"
        st.written += n
        if st.writes is None and st.diff is None:
            return
        w = make()
        if st.writes is not None:
            st.writes[first : first + n] = w
        if st.diff is not None:
            torch.sub(st.corrupt[first : first + n], w, out=st.diff[first : first + n])  # type: ignore[index]
            st.total += st.diff[first : first + n].sum(0)  # type: ignore[operator]

    def _attn_input(self, layer: int, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        st = self.state
        if st is None:
            return None
        r = args[0]  # [B, P, d] residual stream entering the layer
        st.resid[layer] = r
        if st.grads is not None:
            st.saved[layer] = norm_stats(self.ad.norm, self.attn_norms[layer][1], r[:, st.p0 :].detach())
        if st.lens is not None:
            st.lens.append(r[torch.arange(r.shape[0]), st.last].detach())
        if layer == 0:
            self._write(st, 0, 1, lambda: r[:, st.p0 :].detach().unsqueeze(0))
        if st.coef is None:
            return None
        # Every reader of the layer sees the same upstream writers: one product gives the partly patched ones
        # their deltas. A fully patched reader reads the corrupted stream, r + total: the norm gets that input,
        # so the model's own projections of it are those readers' values (no per-reader work for them).
        attn, mlp = self.graph.blocks[2 * layer], self.graph.blocks[2 * layer + 1]
        full = st.full[attn.readers.start : mlp.readers.stop]  # type: ignore[index]
        some = torch.nonzero(~full).squeeze(1)  # [m] partly patched readers, relative to the layer's first
        st.rows = torch.full(full.shape, -1, dtype=torch.long, device=full.device)
        st.rows[some] = torch.arange(some.numel(), device=full.device)
        st.pending = self._combine(st, 0, attn.upstream, some + attn.readers.start) if some.numel() else None
        st.moved = bool(full[:-1].any())
        if not st.moved:
            return None
        return (torch.cat([r[:, : st.p0], (r[:, st.p0 :] + st.total).to(r.dtype)], dim=1), *args[1:])

    def _heads_output(self, layer: int, module: nn.Module, args: tuple[Any, ...]) -> None:
        st = self.state
        if st is not None:
            self._write(st, self.graph.head_writers(layer).start, self.shape.n_heads,
                        lambda: self._head_writes(layer, module, args[0][:, st.p0 :].detach()))  # fmt: skip

    def _head_writes(self, layer: int, o_proj: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """o_proj input z [B, P', H*e] → each head's write [H, B, P', d]."""
        s = self.shape
        B, P = z.shape[:2]
        z = z.reshape(B * P, s.n_heads, s.head_dim).transpose(0, 1)  # [H, B*P', e]
        parts = torch.bmm(z, self.weights[layer].wo).reshape(s.n_heads, B, P, s.d_model)
        if self.ad.attn_post_norm is not None:
            bias = getattr(o_proj, "bias", None)
            total = parts.sum(0) + (bias.detach() if bias is not None else 0.0)  # [B, P', d] = o_proj output
            parts = rms_post_norm(get(self.layers[layer], self.ad.attn_post_norm), parts, total)
        return parts

    def _mlp_output(self, layer: int, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        st = self.state
        if st is None:
            return None
        u = self.graph.mlp_writer(layer)
        if st.skip_mlp == layer:  # the MLP ran on positions < p0 only; from p0 on it writes what it wrote corrupted
            st.skip_mlp = None
            out = torch.cat([out, st.corrupt[u].to(out.dtype)], dim=1)  # type: ignore[index]
            self._write(st, u, 1, lambda: out[:, st.p0 :].unsqueeze(0))
            return out
        self._write(st, u, 1, lambda: out[:, st.p0 :].detach().unsqueeze(0))
        return None

    # ---- readers -----------------------------------------------------------------------------------------

    def _combine(self, st: RunState, lo: int, hi: int, cols: slice | torch.Tensor) -> torch.Tensor | None:
        """Σ_{lo ≤ u < hi} coef[u, v] (corrupted_u − current_u) for readers v in cols: [n, B, P', d], or None when
        no edge is patched. One matrix product over the writers that matter: the patched ones or — when fewer,
        and from the running total — the kept ones (a small circuit keeps few edges per reader)."""
        assert st.coef is not None and st.diff is not None and st.total is not None
        coef = st.coef[lo:hi][:, cols]  # [u, n]
        flat = st.diff[lo:hi].reshape(hi - lo, -1)  # [u, B*P'*d], a view
        if coef.requires_grad:  # differentiating through the intervention: every term stays in the sum
            out = coef.T @ flat.clone()  # (diff keeps changing in place)
        else:
            patched = torch.nonzero(coef.any(1)).squeeze(1)
            if patched.numel() == 0:
                return None
            kept = torch.nonzero((coef != 1).any(1)).squeeze(1) if lo == 0 and st.written == hi else None
            if kept is None or patched.numel() <= kept.numel():
                out = _product(coef, flat, patched)
            else:
                out = _product(1.0 - coef, flat, kept).neg_().add_(st.total.reshape(1, -1))
        return out.reshape(-1, *st.diff.shape[1:])

    def _reader_input(self, block: Block, module: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor] | None:
        """Pre-hook on the MLP's norm or the final norm: patch that reader's input and / or watch its gradient."""
        st = self.state
        if st is None:
            return None
        x = args[0]  # [B, P, d]
        if st.lens is not None and block.kind == "logits":
            st.lens.append(x[torch.arange(x.shape[0]), st.last].detach())
        if st.coef is not None:
            if st.full[block.readers.start]:  # type: ignore[index]  # every upstream edge patched: the corrupted stream
                if block.kind == "mlp" and st.grads is None:
                    st.skip_mlp = block.layer  # which makes the MLP's output the corrupted one (_mlp_output)
                    return (x[:, : st.p0],)
                delta = st.total[None]  # type: ignore[index]
            elif block.kind == "mlp":  # what the layer's entry computed, plus the layer's own heads
                heads = self.graph.head_writers(block.layer)
                row = int(st.rows[-1]) if st.pending is not None else -1  # type: ignore[index]
                parts = [p for p in (st.pending[row : row + 1] if row >= 0 else None,  # type: ignore[index]
                                     self._combine(st, heads.start, heads.stop, block.readers)) if p is not None]  # fmt: skip
                delta = sum(parts[1:], parts[0]) if parts else None
            else:
                delta = self._combine(st, 0, block.upstream, block.readers)
            if delta is not None:
                x = torch.cat([x[:, : st.p0], (x[:, st.p0 :] + delta[0]).to(x.dtype)], dim=1)
        if st.grads is not None:
            x = x.clone()  # a private copy: its gradient is this reader's alone
            x.register_hook(partial(self._reader_grad, st, block))
        return (x,) if x is not args[0] else None

    def _reader_grad(self, st: RunState, block: Block, grad: torch.Tensor) -> None:
        st.grads[block.readers] += grad[:, st.p0 :].unsqueeze(0)  # type: ignore[index]

    def _qkv_output(self, layer: int, which: str, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor | None:
        st = self.state
        if st is None:
            return self._repeat(out, which) if self.repeat_kv and which != "q" else None
        if which != "qkv":
            return self._reader_projection(st, layer, which, out)
        return torch.cat([self._reader_projection(st, layer, w, y) for w, y in zip("qkv", self._split(out))], dim=-1)

    def _split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.shape
        return y.split([s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim, s.n_kv_heads * s.head_dim], dim=-1)

    def _repeat(self, y: torch.Tensor, which: str) -> torch.Tensor:
        """KV-head outputs [B, P, K*e] → one copy per query head [B, P, H*e] (fused q|k|v: k and v parts)."""
        s = self.shape
        if which == "qkv":
            q, k, v = self._split(y)
            return torch.cat([q, self._repeat(k, "k"), self._repeat(v, "v")], dim=-1)
        B, P = y.shape[:2]
        group = s.n_heads // s.n_kv_heads
        return y.reshape(B, P, s.n_kv_heads, 1, s.head_dim).expand(B, P, s.n_kv_heads, group, s.head_dim).reshape(B, P, -1)

    def _reader_projection(self, st: RunState, layer: int, which: str, y: torch.Tensor) -> torch.Tensor:
        """One of q / k / v of a layer [B, P, n*e]: per-query repeat, patched inputs, gradient watch."""
        if self.repeat_kv and which != "q":
            y = self._repeat(y, which)
        readers = self.graph.attn_readers(layer, which)  # type: ignore[arg-type]
        if st.rows is not None:  # patching: the partly patched readers get their own inputs (_attn_input)
            first = self.graph.blocks[2 * layer].readers.start
            rows = st.rows[readers.start - first : readers.stop - first]  # [n]
            some = torch.nonzero(rows >= 0).squeeze(1)
            if some.numel() and (st.pending is not None or st.moved):
                r = st.resid[layer][:, st.p0 :]
                x = (r + _rows(st.pending, rows[some]) if st.pending is not None else r.expand(some.numel(), *r.shape)).to(r.dtype)
                B, P, e = y.shape[0], y.shape[1] - st.p0, self.shape.head_dim
                y = y.clone()
                y.view(*y.shape[:2], -1, e)[:, st.p0 :, some] = self._project(layer, which, x, some, len(rows)).view(B, P, -1, e)
        if st.grads is not None:
            st.outputs[(layer, which)] = y[:, st.p0 :].detach()
            y.register_hook(partial(self._projection_grad, st, layer, which, readers))
        return y

    def _wb(self, layer: int, which: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.weights[layer]
        return {"q": (w.wq, w.bq), "k": (w.wk, w.bk), "v": (w.wv, w.bv)}[which]

    def _heads_of(self, which: str) -> int:
        """How many weight slices a projection has: query heads, or KV heads (shared by groups of readers)."""
        return self.shape.n_heads if which == "q" else self.shape.n_kv_heads

    def _project(self, layer: int, which: str, x: torch.Tensor, readers: torch.Tensor, n: int) -> torch.Tensor:
        """Per-reader residual inputs x [m, B, P', d] of the given readers (of the projection's n) → normed,
        projected by each reader's own head [B, P', m*e] (k / v readers of one KV head share its slice)."""
        m, B, P, d = x.shape
        x = get(self.layers[layer], self.ad.attn_norm).forward(x)
        w, b = self._wb(layer, which)  # [h, e, d], [h, e]: h = n, or the KV heads that groups of readers share
        heads = readers // (n // self._heads_of(which))  # [m] each reader's slice
        y = torch.bmm(x.reshape(m, B * P, d), w[heads].transpose(1, 2))  # [m, B*P', e]
        if b is not None:
            y = y + b[heads][:, None, :]
        return y.transpose(0, 1).reshape(B, P, -1)

    # ---- q / k / v input gradients ---------------------------------------------------------------------
    # A reader with weight slice W [e, d] reads n(x), the attention norm of the layer's input x (RMS: γ⊙x·s, s
    # the inverse RMS; LayerNorm: γ⊙x̂ + β, x̂ = (x − mean x)·s), and outputs y = W n(x) + b. For the gradient g
    # at y, the gradient at x is J(x)ᵀ(γ⊙Wᵀg):
    #     RMS:       s·γ⊙Wᵀg − x·(s²/d)·g·(y − b)              (x·(γ⊙Wᵀg) = g·W(γ⊙x) = g·(y − b)/s)
    #     LayerNorm: s·C(γ⊙Wᵀg) − x̂·(s/d)·g·(y − b − Wβ)       (C removes the mean over d)
    # The first term is linear in s·g: it is summed over runs in the e-wide space (st.proj) and taken back
    # through the weights once (finish_grads), not once per IG step; the second term is added per run.

    def _projection_grad(self, st: RunState, layer: int, which: str, readers: slice, grad: torch.Tensor) -> None:
        """Gradient at a projection's output [B, P, n*e] → its part of each reader's input gradient."""
        key, (xn, s) = (layer, which), st.saved[layer]
        gs = grad[:, st.p0 :] * s  # [B, P', n*e]
        y = st.outputs.pop(key)
        shift = self._shift(layer, which)
        dot = (gs * (y - shift if shift is not None else y)).view(*gs.shape[:2], -1, self.shape.head_dim).sum(-1)
        dot = (dot * s if self.ad.norm == "rms" else dot).div_(self.shape.d_model)  # [B, P', n]
        st.grads[readers].addcmul_(xn, dot.permute(2, 0, 1).unsqueeze(-1), value=-1.0)  # type: ignore[index]
        acc = st.proj.get(key)  # summed in the gradients' dtype (fp32): a bf16 model's steps add up in fp32
        st.proj[key] = gs.to(st.grads.dtype) if acc is None else acc.add_(gs)  # type: ignore[union-attr]

    def finish_grads(self, grads: torch.Tensor, proj: dict[tuple[int, str], torch.Tensor]) -> None:
        """grads [V, B, P', d] += the summed first terms, each taken back through its weights once."""
        e = self.shape.head_dim
        for (layer, which), gs in proj.items():
            readers = self.graph.attn_readers(layer, which)  # type: ignore[arg-type]
            h, (B, P) = self._heads_of(which), gs.shape[:2]
            g = gs.reshape(B * P, -1, e).transpose(0, 1).reshape(h, -1, e)  # [h, (n/h)*B*P', e]
            w = self._grad_weight(layer, which)
            out = grads[readers].view(h, -1, self.shape.d_model)
            out.baddbmm_(g, w.to(out.dtype))  # a bf16 model's weights in the fp32 product (once per projection)
        proj.clear()

    def _grad_weight(self, layer: int, which: str) -> torch.Tensor:
        """[h, e, d]: a projection's weight slices times the attention norm's gain, the mean over d removed for
        LayerNorm (made on first use)."""
        key = (layer, which)
        if key not in self.grad_weights:
            w = self._wb(layer, which)[0] * self.attn_norms[layer][0]
            self.grad_weights[key] = w - w.mean(-1, keepdim=True) if self.ad.norm == "layer" else w
        return self.grad_weights[key]

    def _shift(self, layer: int, which: str) -> torch.Tensor | None:
        """[n*e]: what a reader's output has beyond W(γ⊙x) (RMS) or W(γ⊙x̂) (LayerNorm): b, and Wβ; None if 0."""
        key = (layer, which)
        if key not in self.shifts:
            w, shift = self._wb(layer, which)  # [h, e, d], [h, e] | None
            norm = get(self.layers[layer], self.ad.attn_norm)
            if self.ad.norm == "layer" and getattr(norm, "bias", None) is not None:
                wb = torch.einsum("hed,d->he", w, norm.bias.detach())
                shift = wb if shift is None else shift + wb
            readers = self.graph.attn_readers(layer, which)  # type: ignore[arg-type]
            n = readers.stop - readers.start
            heads = torch.arange(n, device=w.device) // (n // self._heads_of(which))  # each reader's weight slice
            self.shifts[key] = None if shift is None else shift[heads].reshape(-1)
        return self.shifts[key]


def _rows(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """t[rows] for increasing rows; a view (no copy) when they are consecutive, as for a densely patched layer."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    return t[lo:hi] if hi - lo == rows.numel() else t[rows]


def _product(coef: torch.Tensor, flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """coefᵀ @ flat over the given rows: [n, X]. Most rows: the whole (contiguous) block, no copy; few: a gather."""
    if 2 * rows.numel() >= coef.shape[0]:
        return coef.T @ flat
    return coef[rows].T @ flat[rows]
