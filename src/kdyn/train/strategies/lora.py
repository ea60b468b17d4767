"""LoRA via peft: wrap the model; optionally train the embeddings too (Mousavi et al. 2024)."""

from __future__ import annotations

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from kdyn.errors import KdynError
from kdyn.train.config import LoraBlock


def apply_lora(model: PreTrainedModel, block: LoraBlock) -> PeftModel:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in block.targets if t not in names]
    if missing:
        raise KdynError(f"train.lora.targets: the model has no module named '{missing[0]}'; "
                        f"linear layers here include {', '.join(sorted(n for n in names if n.endswith('proj'))[:8])}")  # fmt: skip
    extra = ["embed_tokens"] if block.train_embeddings else None
    cfg = LoraConfig(r=block.r, lora_alpha=block.alpha, lora_dropout=block.dropout, target_modules=list(block.targets),
                     modules_to_save=extra, task_type="CAUSAL_LM",
                     ensure_weight_tying=bool(extra) and bool(getattr(model.config, "tie_word_embeddings", False)))  # fmt: skip
    return get_peft_model(model, cfg)
