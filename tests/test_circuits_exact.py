"""Exactness of the circuit machinery on tiny random models of every supported family.

- the hooked forward gives the plain HF logits; patching no edge gives them too, patching every edge gives
  the corrupted prompts' logits (the writes add up to the residual stream exactly);
- EAP scores equal the brute-force derivative of the patched forward with respect to each edge's patch
  coefficient (autograd through the intervention: a different route from the hooks' per-reader gradients);
- one edge patched by the library equals the same edge patched by a hand-written hook;
- EAP-IG with many steps ranks the top edges like exact single-edge activation patching.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)  # fmt: skip

from kdyn.circuits.attribution import Batch, attribute, logit_diff, run_corrupted
from kdyn.circuits.evaluate import patched_logits
from kdyn.circuits.hooks import HookedLM, RunState
from kdyn.models.tiny import tiny_random_llama

VOCAB = 300
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip


def make(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "llama-gqa":
        return tiny_random_llama()[0]
    if family == "llama-mha":
        return LlamaForCausalLM(LlamaConfig(**SMALL | {"num_key_value_heads": 4})).eval()
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                          bos_token_id=0, eos_token_id=0)).eval()  # fmt: skip
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**SMALL)).eval()
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**SMALL, head_dim=16)).eval()
    if family == "gemma3":
        return Gemma3ForCausalLM(Gemma3TextConfig(**SMALL, head_dim=16, sliding_window=4)).eval()
    raise ValueError(family)


def make_batch(n: int = 4, length: int = 9, seed: int = 1) -> Batch:
    """Random prompts of different lengths (right-padded), the corrupted ones differing at positions 3-4."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(10, 200, (n, length), generator=g)
    corrupt = clean.clone()
    corrupt[:, 3:5] = torch.randint(10, 200, (n, 2), generator=g)
    last = torch.tensor([length - 1 - (i % 3) for i in range(n)])
    return Batch(clean=clean, corrupt=corrupt, last=last, target=torch.randint(10, 200, (n,), generator=g),
                 foil=torch.randint(10, 200, (n,), generator=g))  # fmt: skip


FAMILIES = ["llama-gqa", "llama-mha", "gpt2", "qwen2", "qwen3", "gemma3"]


@pytest.mark.parametrize("kv_readers", ["query", "kv"])
@pytest.mark.parametrize("family", FAMILIES)
def test_hooked_logits_patching_and_eap_are_exact(family: str, kv_readers: str) -> None:
    model = make(family)
    batch = make_batch()
    rows = torch.arange(len(batch))
    with torch.no_grad():
        plain = model(batch.clean).logits[rows, batch.last]  # [B, vocab]
        plain_corrupt = model(batch.corrupt).logits[rows, batch.last]
    hooked = HookedLM(model, kv_readers)  # type: ignore[arg-type]
    valid = torch.from_numpy(hooked.graph.valid).float()
    with hooked.attached():
        with torch.no_grad():
            hooked_clean = hooked.forward(hooked.embed(batch.clean), RunState(p0=batch.p0, last=batch.last))
        corrupt_logits, writes = run_corrupted(hooked, batch)
        with torch.no_grad():
            keep_all = patched_logits(hooked, batch, writes, torch.zeros_like(valid))
            patch_all = patched_logits(hooked, batch, writes, valid)
        eap = attribute(hooked, batch, "eap").scores.sum(0)  # [U, V], summed over prompts
        coef = torch.zeros_like(valid, requires_grad=True)
        logit_diff(patched_logits(hooked, batch, writes, coef), batch).sum().backward()
    torch.testing.assert_close(hooked_clean, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(corrupt_logits, plain_corrupt, atol=1e-5, rtol=0)
    torch.testing.assert_close(keep_all, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(patch_all, plain_corrupt, atol=1e-5, rtol=0)
    assert coef.grad is not None and coef.grad.abs().max() > 1e-3  # the comparison below is not vacuous
    torch.testing.assert_close(eap, coef.grad * valid, atol=1e-6, rtol=1e-4)
    assert not eap[~hooked.graph.valid].any()  # nothing off the graph


def test_hooks_leave_the_model_as_they_found_it() -> None:
    model = make("llama-gqa")
    hooked = HookedLM(model, "query")
    with hooked.attached():
        assert all(not p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.num_key_value_groups == 2 for m in model.modules() if hasattr(m, "num_key_value_groups"))
    batch = make_batch()
    torch.testing.assert_close(model(batch.clean).logits, make("llama-gqa")(batch.clean).logits)


def test_one_patched_edge_equals_a_hand_written_hook() -> None:
    """Edge input → v input of layer 1's first KV head: that head's values are recomputed from the normed
    residual plus (corrupted − clean) embeddings; nothing else changes."""
    model = make("llama-gqa")
    batch = make_batch()
    hooked = HookedLM(model, "kv")
    g = hooked.graph
    coef = torch.zeros(len(g.writers), len(g.readers))
    coef[0, g.readers.index("a1.g0<v>")] = 1.0
    with hooked.attached(), torch.no_grad():
        _, writes = run_corrupted(hooked, batch)
        library = patched_logits(hooked, batch, writes, coef)
    layer = model.model.layers[1]
    delta = (model.model.embed_tokens(batch.corrupt) - model.model.embed_tokens(batch.clean)).detach()
    seen = {}
    e = model.config.head_dim
    handles = [
        layer.input_layernorm.register_forward_pre_hook(lambda mod, args: seen.update(r=args[0])),
        layer.self_attn.v_proj.register_forward_hook(lambda mod, args, out: torch.cat(
            [layer.input_layernorm(seen["r"] + delta) @ mod.weight[:e].T, out[..., e:]], dim=-1)),
    ]  # fmt: skip
    try:
        with torch.no_grad():
            by_hand = model(batch.clean).logits[torch.arange(len(batch)), batch.last]
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        clean = model(batch.clean).logits[torch.arange(len(batch)), batch.last]
    torch.testing.assert_close(library, by_hand, atol=1e-5, rtol=0)
    assert (library - clean).abs().max() > 1e-3


def exact_patching(hooked: HookedLM, batch: Batch) -> np.ndarray:
    """[U, V] change of the mean metric when one edge alone carries its corrupted value."""
    g = hooked.graph
    out = np.zeros(g.valid.shape)
    with torch.no_grad():
        _, writes = run_corrupted(hooked, batch)
        coef = torch.zeros(g.valid.shape)
        base = logit_diff(patched_logits(hooked, batch, writes, coef), batch).mean().item()
        for u, v in zip(*np.nonzero(g.valid)):
            coef.zero_()
            coef[u, v] = 1.0
            out[u, v] = logit_diff(patched_logits(hooked, batch, writes, coef), batch).mean().item() - base
    return out


@pytest.mark.parametrize("family", ["llama-gqa", "llama-mha", "gpt2"])
def test_eap_ig_ranks_edges_like_exact_patching(family: str) -> None:
    hooked = HookedLM(make(family), "query")
    batch = make_batch(n=8, length=10)
    with hooked.attached():
        exact = exact_patching(hooked, batch)[hooked.graph.valid]
        ig = attribute(hooked, batch, "eap-ig", steps=50).scores.mean(0).numpy()[hooked.graph.valid]
    top = np.argsort(-np.abs(exact))[:20]
    assert spearmanr(exact[top], ig[top]).statistic >= 0.9
