"""`kdyn run`: the stages in order, each reading and writing the run directory.

bench → train (kdyn.train: builds RUN/bench, probes at step 0 and every epoch) → analyze (RUN/analysis/)
→ circuits (RUN/circuits/, RUN/circuit_metrics.parquet; when `circuits.enabled`) → report (RUN/report.html, RUN/plots/).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from rich.console import Console

from kdyn.experiment import load_experiment


def run_experiment(
    config: str | Path, out: str | Path, overrides: list[str] | None = None,
    on_stage: Callable[[str], None] = lambda s: None, resume: bool = False, console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Train (with the benchmark built into RUN/bench), analyse, write the report; returns the final probe rows and
    paths (the report last). Under several processes (torchrun, accelerate launch) all of them train; rank 0 alone
    analyses, computes circuits and writes the report, and the other ranks return {"is_main": False}."""
    from kdyn.analysis import analyze
    from kdyn.report import report
    from kdyn.train import train

    cfg = load_experiment(config, overrides)
    out = Path(out)
    n = 4 if cfg.circuits.enabled else 3
    if int(os.environ.get("RANK", "0")) != 0:  # set by torchrun / accelerate launch before the process starts
        on_stage = lambda s: None  # noqa: E731
    on_stage(f"1/{n} training '{cfg.model}' ({cfg.train.strategy}, {cfg.train.epochs} epochs) on benchmark "
             f"'{cfg.bench.name}' → {out}")  # fmt: skip
    result = train(cfg, out, resume=resume, console=console, show_progress=show_progress)
    if not result["is_main"]:
        return {"train": result, "is_main": False}
    on_stage(f"2/{n} analysing the run")
    analysis = analyze(out)
    outputs: dict[str, Any] = {}
    if cfg.circuits.enabled:
        from kdyn.circuits import circuits

        on_stage(f"3/{n} knowledge circuits")
        outputs["circuits"] = circuits(out, cfg.circuits, console=console).out_dir
    on_stage(f"{n}/{n} writing the report")
    html = report([out])
    probes = pq.read_table(out / "probes.parquet").to_pylist()
    last = max(r["step"] for r in probes)
    return {
        "train": result,
        "is_main": True,
        "base_rows": [r for r in probes if r["step"] == 0],
        "final_rows": [r for r in probes if r["step"] == last],
        "final_step": last,
        "outputs": {"run": out, "probes": out / "probes.parquet", "analysis": analysis.out_dir, **outputs, "report": html},
    }
