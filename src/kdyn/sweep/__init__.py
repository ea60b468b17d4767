"""Sweeps (`kdyn sweep SUITE`): a grid of runs — strategies x seeds x models x benchmark variants — run one
after another as separate `kdyn run` processes, resumable, then compared.

    from kdyn.sweep import load_suite, sweep
    suite = load_suite("strategies", smoke=True)      # validated; every grid point's config resolved
    result = sweep(suite, out="runs/sweeps/strategies-smoke")

Modules: suite (the YAML schema and grid expansion), runner (per-point status, subprocesses, sweep.json,
scheduler commands), outputs (comparison tables and report), commands (CLI). Built-in suites:
kdyn/configs/suites/*.yaml.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdyn.sweep.runner import SweepResult, plan, scheduler_commands, sweep
    from kdyn.sweep.suite import Point, Suite, SuiteConfig, builtin_suites, load_suite

# names are imported on first use: `kdyn --help` imports kdyn.sweep.commands, and suite.py pulls in torch
_EXPORTS = {"SweepResult": "runner", "plan": "runner", "scheduler_commands": "runner", "sweep": "runner",
            "Point": "suite", "Suite": "suite", "SuiteConfig": "suite", "builtin_suites": "suite",
            "load_suite": "suite"}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdyn.sweep' has no attribute '{name}'")
    return getattr(importlib.import_module(f"kdyn.sweep.{_EXPORTS[name]}"), name)
