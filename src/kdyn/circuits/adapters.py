"""The one adapter table: where each architecture keeps its embeddings, attention, MLP and norms.

Circuit code never branches on the model family: it asks `adapter_for(model)` for module paths and
`head_weights(...)` for per-head projection matrices. Supported (HF `config.model_type`): llama (SmolLM2,
Llama, TinyLlama), mistral, qwen2, qwen3, gemma3_text (Gemma-3 text models) and gpt2.

What each path means (relative to the CausalLM, or to one block for the block-level ones):
    base        the decoder stack that takes `inputs_embeds` and returns the final-normed hidden states
    attn_norm   norm before attention: its input is the residual stream the heads read
    q, k, v     projections inside `attn` (GPT-2: one fused Conv1D for all three)
    o           output projection: its input is the concatenated per-head outputs (heads are contiguous)
    mlp_norm    norm before the MLP: its input is the residual stream the MLP reads
    mlp_write   module whose output is what the MLP adds to the residual stream
    attn_post_norm  sandwich norm after attention (Gemma-3): a head's write is its share of that norm's output
    norm        "rms" (RMSNorm, with Llama's w or Gemma's 1 + w gain) or "layer" (LayerNorm): its Jacobian in closed form
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from kdyn.errors import KdynError


@dataclass(frozen=True)
class Adapter:
    base: str
    embed: str
    layers: str
    final_norm: str
    lm_head: str
    attn: str
    attn_norm: str
    q: str
    k: str
    v: str
    o: str
    mlp_norm: str
    mlp_write: str
    attn_post_norm: str | None = None
    fused_qkv: bool = False  # q, k, v are one module whose output is [q | k | v]
    conv1d: bool = False  # weights stored (in, out), as GPT-2's Conv1D
    norm: Literal["rms", "layer"] = "rms"


_LLAMA_LIKE = Adapter(base="model", embed="model.embed_tokens", layers="model.layers", final_norm="model.norm",
                      lm_head="lm_head", attn="self_attn", attn_norm="input_layernorm", q="q_proj", k="k_proj",
                      v="v_proj", o="o_proj", mlp_norm="post_attention_layernorm", mlp_write="mlp")  # fmt: skip

ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma3_text": Adapter(base="model", embed="model.embed_tokens", layers="model.layers", final_norm="model.norm",
                           lm_head="lm_head", attn="self_attn", attn_norm="input_layernorm", q="q_proj", k="k_proj",
                           v="v_proj", o="o_proj", mlp_norm="pre_feedforward_layernorm",
                           mlp_write="post_feedforward_layernorm", attn_post_norm="post_attention_layernorm"),  # fmt: skip
    "gpt2": Adapter(base="transformer", embed="transformer.wte", layers="transformer.h", final_norm="transformer.ln_f",
                    lm_head="lm_head", attn="attn", attn_norm="ln_1", q="c_attn", k="c_attn", v="c_attn", o="c_proj",
                    mlp_norm="ln_2", mlp_write="mlp", fused_qkv=True, conv1d=True, norm="layer"),  # fmt: skip
}


@dataclass
class Shape:
    """Sizes the graph is built from."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int


@dataclass
class HeadWeights:
    """One layer's attention weights split per head (views of the model's own tensors, nothing repeated)."""

    wq: torch.Tensor  # [H, e, d]
    wk: torch.Tensor  # [K, e, d]
    wv: torch.Tensor  # [K, e, d]
    wo: torch.Tensor  # [H, e, d] (a copy, laid out for batched products)
    bq: torch.Tensor | None  # [H, e]
    bk: torch.Tensor | None  # [K, e]
    bv: torch.Tensor | None  # [K, e]


def adapter_for(model: nn.Module) -> Adapter:
    model_type = getattr(model.config, "model_type", "?")
    if model_type not in ADAPTERS:
        raise KdynError(f"knowledge circuits do not support the '{model_type}' architecture yet; supported: "
                        f"{', '.join(sorted(ADAPTERS))} (add a row to kdyn/circuits/adapters.py)")  # fmt: skip
    return ADAPTERS[model_type]


def get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)  # type: ignore[index]
    return module


def shape_of(model: nn.Module) -> Shape:
    cfg = model.config
    heads = cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_head
    d_model = cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.n_embd
    layers = cfg.num_hidden_layers if hasattr(cfg, "num_hidden_layers") else cfg.n_layer
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or d_model // heads
    return Shape(n_layers=layers, n_heads=heads, n_kv_heads=kv, head_dim=head_dim, d_model=d_model)


def _split(linear: nn.Module, out_slice: slice, heads: int, head_dim: int, conv1d: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [heads, e, d], bias [heads, e] | None) of the output rows `out_slice` of a projection."""
    w = linear.weight.detach()
    w = w[:, out_slice].T if conv1d else w[out_slice]  # [heads*e, d]
    b = linear.bias.detach()[out_slice] if getattr(linear, "bias", None) is not None else None
    return w.reshape(heads, head_dim, -1), (b.reshape(heads, head_dim) if b is not None else None)


def head_weights(ad: Adapter, block: nn.Module, s: Shape) -> HeadWeights:
    attn = get(block, ad.attn)
    qn, kn = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    if ad.fused_qkv:
        fused = get(attn, ad.q)
        parts = [(fused, slice(0, qn)), (fused, slice(qn, qn + kn)), (fused, slice(qn + kn, qn + 2 * kn))]
    else:
        parts = [(get(attn, name), slice(None)) for name in (ad.q, ad.k, ad.v)]
    (wq, bq), (wk, bk), (wv, bv) = [
        _split(mod, sl, n, s.head_dim, ad.conv1d) for (mod, sl), n in zip(parts, (s.n_heads, s.n_kv_heads, s.n_kv_heads))
    ]
    wo = get(attn, ad.o).weight.detach()
    wo = wo.T if ad.conv1d else wo  # [d, H*e]
    wo = wo.reshape(s.d_model, s.n_heads, s.head_dim).permute(1, 2, 0).contiguous()  # [H, e, d]
    return HeadWeights(wq=wq, wk=wk, wv=wv, wo=wo, bq=bq, bk=bk, bv=bv)


def norm_gain(norm: nn.Module, kind: str) -> tuple[torch.Tensor, float]:
    """(gain [d], eps) of a norm module. RMSNorm's gain is read off the module (norm(1) · sqrt(1 + eps)), so
    Llama's w and Gemma's 1 + w conventions both work."""
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    if kind == "layer":
        return norm.weight.detach(), eps
    d = norm.weight.shape[-1]
    with torch.no_grad():
        ones = torch.ones(d, dtype=norm.weight.dtype, device=norm.weight.device)
        return norm.forward(ones) * (1.0 + eps) ** 0.5, eps  # .forward: no hooks


def norm_stats(kind: str, eps: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What a norm's Jacobian at x [B, P, d] needs, computed once per layer and run: (x, s) for RMSNorm,
    (x̂, s) with x̂ = (x − mean x)·s for LayerNorm; s [B, P, 1] is the inverse RMS (of x − mean x for LayerNorm)."""
    if kind == "layer":
        x = x - x.mean(-1, keepdim=True)
        s = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x * s, s
    return x, torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_post_norm(norm: nn.Module, parts: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Each part's share of an RMSNorm applied to the sum of the parts (exact: the norm is linear given its scale).

    parts [n, B, P, d], total [B, P, d] (their sum) → [n, B, P, d].
    """
    gain, eps = norm_gain(norm, "rms")
    scale = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)  # [B, P, 1]
    return parts * (scale * gain)
