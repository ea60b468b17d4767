"""Knowledge circuits across checkpoints (DESIGN.md "Knowledge circuits"; issue 5): EAP / EAP-IG on HF models.

    circuits(run_dir)     → RUN/circuits/step-NNNNNN.<relation>.safetensors, RUN/circuit_metrics.parquet,
                            RUN/circuits/{layer_share,logit_lens,faithfulness_curve,dynamics}.parquet,
                            RUN/circuits/change_point.json, RUN/circuits/prompts.<relation>.json

Modules: adapters (the one per-architecture table), graph (nodes, edges, selection, pruning), hooks (writes,
per-reader gradients and patching on the HF forward), attribution (EAP, EAP-IG), prompts (clean / corrupted
pairs), evaluate (faithfulness, hit@10, MRR, curve, logit lens), baseline (random connected circuits for the
faithfulness baseline), store (the safetensors file), evolution (Jaccard, entropy, layers, noise floor, prompt
usage), changepoint (tested against one straight line), dynamics (circuit change of forgotten vs retained
facts), config (CircuitsConfig), run (`kdyn circuits`), commands (CLI).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdyn.circuits.config import CircuitsConfig
    from kdyn.circuits.run import circuits

_EXPORTS = {"circuits": "run", "CircuitsConfig": "config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdyn.circuits' has no attribute '{name}'")
    return getattr(importlib.import_module(f"kdyn.circuits.{_EXPORTS[name]}"), name)
