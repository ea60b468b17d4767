"""Sharpness-aware minimisation (Foret et al. 2021) around any torch optimizer.

A step is: gradients at w; move to w + e(w), e = rho * g / ||g|| (ASAM: scaled by |w|); gradients there;
back to w; the wrapped optimizer steps with the second gradients.
"""

from __future__ import annotations

import torch

from kdyn.train.config import SAMBlock


class SAM:
    def __init__(self, params: list[torch.nn.Parameter], block: SAMBlock):
        self.params = [p for p in params if p.requires_grad]
        self.rho = block.rho
        self.adaptive = block.adaptive
        self._eps: list[torch.Tensor | None] = []

    @torch.no_grad()
    def perturb(self) -> None:
        """Move the weights to the ascent point (gradients must be those at w)."""
        scaled = [(p.abs() * p.grad if self.adaptive else p.grad) if p.grad is not None else None for p in self.params]
        norm = torch.norm(torch.stack([g.norm(2) for g in scaled if g is not None]), 2)
        scale = self.rho / (norm + 1e-12)
        self._eps = []
        for p, g in zip(self.params, scaled):
            if g is None:
                self._eps.append(None)
                continue
            e = g * scale * (p.abs() if self.adaptive else 1.0)
            p.add_(e)
            self._eps.append(e)

    @torch.no_grad()
    def restore(self) -> None:
        for p, e in zip(self.params, self._eps):
            if e is not None:
                p.sub_(e)
        self._eps = []
