"""AnalysisConfig: the `analysis:` section of an experiment config (how `kdyn analyze` makes its intervals).

    analysis:
      bootstrap: 1000          # replicates for every bootstrap interval
      seed: 0                  # bootstrap seed (the same inputs give the same intervals)
      bootstrap_unit: entity   # resample whole entities (their probes are correlated) or single items

Light on purpose (no numpy): kdyn.experiment imports it when any config is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BootstrapUnit = Literal["item", "entity"]


@dataclass
class AnalysisConfig:
    bootstrap: int = 1000
    seed: int = 0
    bootstrap_unit: BootstrapUnit = "entity"  # items without an entity (skills, imported results) are their own

    def validate(self) -> None:
        if self.bootstrap < 1:
            raise ValueError("bootstrap must be at least 1 replicate")
