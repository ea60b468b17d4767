"""CircuitsConfig: the `circuits:` section of an experiment config (`kdyn run`) and the knobs of `kdyn circuits`.

    circuits:
      enabled: true          # kdyn run computes circuits after the analysis
      max_checkpoints: 4     # base, final and evenly spaced ones between
      method: eap-ig         # or eap
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_FRACTIONS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


@dataclass
class CircuitsConfig:
    enabled: bool = False  # run the circuits stage in `kdyn run`
    relations: list[str] = field(default_factory=list)  # [] = the relation with the most `new` facts
    n_prompts: int = 32  # paired cloze prompts per relation (fewer when the relation has fewer)
    method: Literal["eap", "eap-ig"] = "eap-ig"
    ig_steps: int = 5  # EAP-IG interpolation steps m
    kv_readers: Literal["query", "kv"] = "query"  # GQA: k / v inputs per query head (EAP-IG's graph) or per KV head
    top_k: int = 0  # circuit = the top_k edges by |score| (then pruned); 0 = use top_fraction
    top_fraction: float = 0.01  # ... or this fraction of all edges
    threshold: float = 0.0  # > 0: every edge with |score| >= threshold instead
    checkpoints: list[int] = field(default_factory=list)  # steps to analyse; [] = the base and every saved checkpoint
    max_checkpoints: int = 0  # > 0: at most this many, evenly spaced, always including the base and the final one
    fractions: list[float] = field(default_factory=lambda: list(DEFAULT_FRACTIONS))  # faithfulness curve
    min_metric_gap: float = 0.5  # |clean − corrupted| below this (logits): faithfulness is NaN and flagged. At 0.1 the
    # quickstart base model (gap 0.14 on fictional birth cities it cannot know) gave faithfulness −1.67: noise over a
    # near-zero denominator
    batch_size: int = 8  # prompts per forward pass (memory grows with it; speed hardly does on a CPU)
    threads: int = 0  # torch CPU threads; 0 leaves the current setting (on a busy machine 1 can be much faster)
    bootstrap: int = 200  # replicates for the change-point and dynamics intervals (resampling prompts)
    noise_splits: int = 10  # random split-halves of the prompts for the noise floor
    random_draws: int = 10  # random connected circuits of the circuit's size (faithfulness baseline: mean, SD)
    seed: int = 0

    def validate(self) -> None:
        if self.n_prompts < 2:
            raise ValueError("n_prompts must be at least 2")
        if self.ig_steps < 1:
            raise ValueError("ig_steps must be at least 1")
        if self.top_k < 0 or self.threshold < 0:
            raise ValueError("top_k and threshold must not be negative")
        if self.top_k > 0 and self.threshold > 0:
            raise ValueError("set one of top_k and threshold (or neither, to use top_fraction)")
        if not 0 < self.top_fraction <= 1:
            raise ValueError("top_fraction must be in (0, 1]")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError("fractions must be a non-empty list of numbers in (0, 1]")
        if self.threads < 0:
            raise ValueError("threads must be 0 (leave torch's setting) or a positive count")
        if self.batch_size < 1 or self.bootstrap < 1 or self.noise_splits < 1 or self.random_draws < 1:
            raise ValueError("batch_size, bootstrap, noise_splits and random_draws must be at least 1")
        if self.max_checkpoints == 1 or self.max_checkpoints < 0:
            raise ValueError("max_checkpoints must be 0 (all) or at least 2 (the base and the final checkpoint)")

    def selection(self) -> str:
        """How circuits are chosen, in words (saved with every result)."""
        if self.top_k > 0:
            return f"top_k={self.top_k}"
        if self.threshold > 0:
            return f"threshold={self.threshold}"
        return f"top_fraction={self.top_fraction}"

    def per_prompt_k(self, n_edges: int) -> int:
        """Edges per single-prompt circuit (dynamics, per fact): top_k, else top_fraction of the edges."""
        return self.top_k if self.top_k > 0 else max(1, round(self.top_fraction * n_edges))
