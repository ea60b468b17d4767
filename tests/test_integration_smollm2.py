"""Integration tests on the real default model, SmolLM2-135M-Instruct (GGUF from its PyPI wheel)."""

from __future__ import annotations

import pytest
import torch

from kdyn.bench.build import build_bench
from kdyn.bench.schema import load_benchmark
from kdyn.experiment import load_bench_config
from kdyn.models.gguf_cache import convert_gguf
from kdyn.models.registry import MODELS
from kdyn.probe.results import accuracy_by_group
from kdyn.probe.scorer import ScoreConfig, score_probes

pytestmark = pytest.mark.integration


def test_gguf_to_safetensors_cache_gives_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = MODELS["smollm2-135m-instruct"].locate_gguf()
    folder = convert_gguf(gguf, tmp_path / "smollm2")
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    cached = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tok(["The capital of France is", "Ava Lindqvist was born in the city of"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(ref(**ids).logits, cached(**ids).logits)
    assert cached.lm_head.weight.data_ptr() == cached.model.embed_tokens.weight.data_ptr()  # still tied
    assert "quantization_config" not in cached.config.to_dict()


def test_base_model_knows_known_facts_not_fictional_ones(smollm2, tmp_path):
    build_bench(load_bench_config("quickstart"), tmp_path / "qs")
    bench = load_benchmark(tmp_path / "qs")
    probes = [p for p in bench.probes if p.kind in ("known", "new") and p.probe_type in ("cloze", "mcq", "qa")]
    rows = score_probes(smollm2.model, smollm2.tokenizer, probes, ScoreConfig(batch_size=32))
    acc = {key: k / n for key, (k, n) in accuracy_by_group(rows).items()}
    # the real model knows a good share of famous facts, and none of the fictional ones
    assert acc[("known", "cloze")] >= 0.25 and acc[("known", "mcq")] >= 0.5
    assert acc[("new", "cloze")] <= 0.05
    assert 0.0 < acc[("new", "mcq")] < 0.5  # near chance (k = 4)
