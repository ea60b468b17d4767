"""Knowledge-dynamics analysis: what a run's checkpoints learnt, kept and forgot (DESIGN.md, issue 4).

Library entry points (the CLI in commands.py is a thin layer over them):
    analyze(run_dir)                 → RUN/analysis/*.parquet + summary.json
    analyze_external(files, out_dir) → the same for per-item results made elsewhere (CSV/JSONL/Parquet,
                                       lm-evaluation-harness --log_samples files)
    compare(run_dirs)                → one table across runs, seed aggregates, McNemar tests
    query(sql, run_dirs)             → DuckDB over every run's parquet files

Modules: results (the items x checkpoints matrices), load (run directory), external + lmeval (imports),
stats, power (kdyn plan's formulas), transitions, trajectories, epochs, loss_knowledge, stepwise, summary,
pipeline (analyze), comparison, sql, render (rich tables), commands (CLI), synthetic (a fake run for tests and
benchmarks).
Names are imported on first use, so `kdyn --help` does not pay for pandas, pyarrow and DuckDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Analysis": "pipeline", "analyze": "pipeline", "analyze_external": "pipeline", "analyze_results": "pipeline",
    "write_analysis": "pipeline", "Comparison": "comparison", "compare": "comparison", "query": "sql",
    "load_run": "load", "load_external": "external", "Results": "results", "Bootstrap": "stats",
    "McNemar": "stats", "mcnemar": "stats",
}  # fmt: skip
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from kdyn.analysis.comparison import Comparison, compare
    from kdyn.analysis.external import load_external
    from kdyn.analysis.load import load_run
    from kdyn.analysis.pipeline import Analysis, analyze, analyze_external, analyze_results, write_analysis
    from kdyn.analysis.results import Results
    from kdyn.analysis.sql import query
    from kdyn.analysis.stats import Bootstrap, McNemar, mcnemar


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdyn.analysis' has no attribute '{name}'")
    return getattr(importlib.import_module(f"kdyn.analysis.{_EXPORTS[name]}"), name)
