"""KL regularisation: token-level KL(reference || model) to the base model and/or the previous epoch's model.

The base reference for LoRA is the same network with its adapter switched off (no copy); otherwise a
frozen copy. The previous-epoch reference is a frozen copy refreshed at every epoch end (at epoch 1 it
is the base model).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from kdyn.train.config import KLBlock


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over unmasked tokens of KL(softmax(ref/T) || softmax(logits/T)); logits [B, L, V], mask [B, L]."""
    lp = F.log_softmax(logits.float() / temperature, -1)
    ref = F.log_softmax(ref_logits.float() / temperature, -1)
    kl = (ref.exp() * (ref - lp)).sum(-1)  # [B, L]
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1)


def frozen_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class KLReferences:
    """Holds the reference models and adds the weighted KL terms to a loss."""

    def __init__(self, block: KLBlock, model: nn.Module, is_lora: bool):
        self.block = block
        self.model = model  # unwrapped
        self.is_lora = is_lora
        self.base = frozen_copy(model) if block.base > 0 and not is_lora else None
        self.previous = frozen_copy(model) if block.previous_epoch > 0 else None

    @property
    def active(self) -> bool:
        return self.block.base > 0 or self.block.previous_epoch > 0

    @torch.no_grad()
    def _ref_logits(self, which: str, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if which == "base" and self.is_lora:
            with self.model.disable_adapter():  # type: ignore[operator]
                return self.model(input_ids=input_ids, attention_mask=mask).logits
        ref = self.base if which == "base" else self.previous
        assert ref is not None
        return ref(input_ids=input_ids, attention_mask=mask).logits

    def loss(self, logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for which, weight in (("base", self.block.base), ("previous", self.block.previous_epoch)):
            if weight > 0:
                ref = self._ref_logits(which, input_ids, mask)
                total = total + weight * token_kl(logits, ref, mask, self.block.temperature)
        return total

    def end_epoch(self) -> None:
        if self.previous is not None:
            self.previous.load_state_dict(self.model.state_dict())

    def previous_state(self) -> dict[str, torch.Tensor] | None:
        """The previous-epoch model's weights, tied ones once (named_parameters skips the duplicates)."""
        return dict(self.previous.named_parameters()) if self.previous is not None else None

    def load_previous(self, state: dict[str, torch.Tensor]) -> None:
        if self.previous is not None:
            self.previous.load_state_dict(state, strict=False)
