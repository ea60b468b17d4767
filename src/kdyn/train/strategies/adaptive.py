"""Adaptive exposure: which entities count as learned at a probe (Mousavi et al.: mean ROUGE-1 recall of
the entity's probes >= threshold), so the next epoch can leave their documents out."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from kdyn.bench.schema import Fact
from kdyn.train.config import AdaptiveBlock


def learned_entities(rows: list[dict[str, Any]], facts: dict[str, Fact], block: AdaptiveBlock) -> set[str]:
    scores: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        fact = facts.get(r.get("fact_id") or "")
        if fact is None or fact.exposures == 0 or r["probe_type"] not in block.probe_types:
            continue
        value = r.get("rouge1_recall")
        if value is not None and not math.isnan(value):
            scores[fact.entity_id].append(float(value))
    return {e for e, v in scores.items() if sum(v) / len(v) >= block.threshold}
