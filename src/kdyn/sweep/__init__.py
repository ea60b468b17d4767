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

from kdyn.sweep.runner import SweepResult, plan, scheduler_commands, sweep
from kdyn.sweep.suite import Point, Suite, SuiteConfig, builtin_suites, load_suite

__all__ = ["Point", "Suite", "SuiteConfig", "SweepResult", "builtin_suites", "load_suite", "plan", "scheduler_commands",
           "sweep"]
