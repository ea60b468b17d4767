"""Continual pre-training with probes inside the loop (DESIGN.md "kdyn train"; issue 3).

    train(config, out, resume=False)   the run directory: probes, fact loss, train log, checkpoints
    KdynProbeCallback(bench, out)      the same probing inside a user's own transformers / TRL Trainer

Modules: config (TrainConfig and strategy blocks), data (documents → packed batches, fact spans),
session (accelerator, model, optimizer, schedule), loop (the one training loop), probing, checkpoints
(parts, checkpoints, resume state), progress (bars, log lines, trackers), flops, callback,
strategies/ (lora, replay, kl, sam, adaptive).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdyn.train.callback import KdynProbeCallback
    from kdyn.train.config import TrainConfig
    from kdyn.train.run import train

_EXPORTS = {"train": "run", "TrainConfig": "config", "KdynProbeCallback": "callback"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdyn.train' has no attribute '{name}'")
    return getattr(importlib.import_module(f"kdyn.train.{_EXPORTS[name]}"), name)
