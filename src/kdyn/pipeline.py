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

from kdyn.experiment import ExperimentConfig, load_experiment
from kdyn.io import check_writable
from kdyn.lock import run_lock


def run_experiment(
    config: str | Path, out: str | Path, overrides: list[str] | None = None,
    on_stage: Callable[[str], None] = lambda s: None, resume: bool = False, console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Train (with the benchmark built into RUN/bench), analyse, write the report; returns the final probe rows and
    paths (the report last). Under several processes (torchrun, accelerate launch) all of them train; rank 0 alone
    analyses, computes circuits and writes the report (holding the run folder's writer lock, kdyn.lock), and the
    other ranks return {"is_main": False}."""
    cfg = load_experiment(config, overrides)
    out = Path(out)
    check_writable(out)  # before the lock makes the folder and before any work
    if int(os.environ.get("RANK", "0")) != 0:  # set by torchrun / accelerate launch before the process starts
        return stages(cfg, out, lambda s: None, resume, console, show_progress)  # rank 0 alone locks and writes
    with run_lock(out, "run"):  # over every stage; each takes it again (re-entrant), so no writer slips between
        return stages(cfg, out, on_stage, resume, console, show_progress)


def stages(cfg: ExperimentConfig, out: Path, on_stage: Callable[[str], None], resume: bool, console: Console | None,
           show_progress: bool) -> dict[str, Any]:  # fmt: skip
    """`run_experiment`'s stages in order, for a loaded config."""
    from kdyn.analysis import analyze
    from kdyn.report import report
    from kdyn.train import train

    n = 4 if cfg.circuits.enabled else 3
    on_stage(f"1/{n} training '{cfg.model}' ({cfg.train.strategy}, {cfg.train.epochs} epochs) on benchmark "
             f"'{bench_name(cfg)}' → {out}")  # fmt: skip
    result = train(cfg, out, resume=resume, console=console, show_progress=show_progress)
    if not result["is_main"]:
        return {"train": result, "is_main": False}
    on_stage(f"2/{n} analysing the run")
    analysis = analyze(out, cfg.analysis.bootstrap, cfg.analysis.seed, bootstrap_unit=cfg.analysis.bootstrap_unit)
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


def bench_name(cfg: ExperimentConfig) -> str:
    """The benchmark's own name: the config's `bench:` section, or the manifest of `train.bench_dir`."""
    if not cfg.train.bench_dir:
        return cfg.bench.name
    from kdyn.io import read_json

    manifest = read_json(Path(cfg.train.bench_dir) / "manifest.json")
    return str(manifest.get("name") or (manifest.get("config") or {}).get("name") or Path(cfg.train.bench_dir).name)
