"""`kdyn analyze`: every analysis table of one run (or of imported results), written to DIR/analysis/.

    from kdyn.analysis import analyze
    result = analyze("runs/quickstart")          # writes runs/quickstart/analysis/*.parquet, summary.json
    analyze_external(["100=samples_a.jsonl", "200=samples_b.jsonl"], "evals/")   # imported results

Tables (columns in each module's docstring and *_COLUMNS): transitions, fuar, trajectories,
consolidation, epoch_counts, curves, loss_knowledge, stepwise, retainability, exposure; plus summary.json.
The analysis only reads its inputs; the analysis/ folder is replaced as a whole (never half-written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from kdyn.analysis.epochs import epoch_counts
from kdyn.analysis.config import AnalysisConfig, BootstrapUnit
from kdyn.analysis.exposure import exposure_notes, exposure_table
from kdyn.analysis.external import imported_frame, load_external
from kdyn.analysis.load import load_run
from kdyn.analysis.loss_knowledge import curves_table, loss_knowledge_table
from kdyn.analysis.results import Results
from kdyn.analysis.stats import Bootstrap
from kdyn.analysis.stepwise import PEAK_WINDOW, stepwise_tables
from kdyn.analysis.summary import build_summary
from kdyn.analysis.trajectories import Trajectories, consolidation_table, trajectory_table
from kdyn.analysis.transitions import transition_tables
from kdyn.errors import KdynError
from kdyn.io import atomic_dir, write_json, write_parquet
from kdyn.lock import run_lock

TABLES = ("transitions", "fuar", "trajectories", "consolidation", "epoch_counts", "curves", "loss_knowledge",
          "stepwise", "retainability", "exposure")  # fmt: skip


@dataclass
class Analysis:
    """All tables of one analysis (pandas, or arrow for trajectories) and its summary."""

    results: Results
    tables: dict[str, Any]
    summary: dict[str, Any]
    out_dir: Path | None = None


def analyze_results(res: Results, bootstrap: int = 1000, seed: int = 0,
                    injection_steps: list[int | float] | None = None, peak_window: int = PEAK_WINDOW,
                    bootstrap_unit: BootstrapUnit = "entity") -> Analysis:  # fmt: skip
    """Compute every table from loaded results (nothing is written). Intervals resample `bootstrap_unit`s
    (stats.py): whole entities by default, each item without an entity on its own."""
    if bootstrap_unit not in ("item", "entity"):
        raise KdynError(f"bootstrap unit must be 'item' or 'entity', got {bootstrap_unit!r}")
    boot = Bootstrap(replicates=bootstrap, seed=seed, unit=bootstrap_unit)
    tables: dict[str, Any] = {}
    tables["transitions"], tables["fuar"] = transition_tables(res, boot)
    traj = Trajectories(res.correct)
    tables["trajectories"] = trajectory_table(res, traj)
    tables["consolidation"] = consolidation_table(res, traj, boot)
    tables["epoch_counts"], notes = epoch_counts(res)
    tables["curves"], cache = curves_table(res, boot)
    tables["loss_knowledge"] = loss_knowledge_table(res, cache, boot)
    tables["stepwise"], tables["retainability"], step_notes = stepwise_tables(res, boot, injection_steps, peak_window)
    tables["exposure"] = exposure_table(res, boot)
    summary = build_summary(res, tables, boot, notes + step_notes + exposure_notes(res))
    return Analysis(res, tables, summary)


def to_arrow(frame: pd.DataFrame | pa.Table, step_type: pa.DataType) -> pa.Table:
    """A table as arrow, with all-null columns typed as strings and empty lists typed as step lists."""
    if isinstance(frame, pa.Table):
        return frame
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for f in table.schema:
        if pa.types.is_null(f.type):
            f = f.with_type(pa.string())
        elif pa.types.is_list(f.type) and pa.types.is_null(f.type.value_type):
            f = f.with_type(pa.list_(step_type))
        fields.append(f)
    return table.cast(pa.schema(fields))


def write_analysis(analysis: Analysis, out_dir: str | Path) -> Path:
    """Write analysis/ under `out_dir` as a whole: every table, then summary.json."""
    target = Path(out_dir) / "analysis"
    step_type = pa.from_numpy_dtype(np.asarray(analysis.results.steps).dtype)
    with atomic_dir(target) as tmp:
        for name in TABLES:
            write_parquet(tmp / f"{name}.parquet", to_arrow(analysis.tables[name], step_type))
        write_json(tmp / "summary.json", analysis.summary | {"tables": [f"{n}.parquet" for n in TABLES]})
    analysis.out_dir = target
    return target


def analyze(run_dir: str | Path, bootstrap: int = 1000, seed: int = 0, injection_steps: list[int | float] | None = None,
            peak_window: int = PEAK_WINDOW, bootstrap_unit: BootstrapUnit | None = None) -> Analysis:  # fmt: skip
    """Analyse a run directory and write RUN/analysis/ (under the run's writer lock); returns the tables and summary."""
    res = load_run(run_dir)  # checks the run first, so a missing folder is not created by the lock
    unit = bootstrap_unit or run_bootstrap_unit(Path(run_dir))
    with run_lock(run_dir, "analyze"):
        analysis = analyze_results(res, bootstrap, seed, injection_steps, peak_window, unit)
        write_analysis(analysis, run_dir)
    return analysis


def analyze_external(sources: list[str], out_dir: str | Path, metric: str | None = None,
                     filter_name: str | None = None, bootstrap: int = 1000, seed: int = 0,
                     injection_steps: list[int | float] | None = None, peak_window: int = PEAK_WINDOW,
                     bootstrap_unit: BootstrapUnit = "entity") -> Analysis:  # fmt: skip
    """Analyse per-item results made elsewhere; writes OUT/analysis/, plus OUT/probes.parquet (the results,
    normalised) and OUT/import.json so that OUT works with `kdyn compare` and `kdyn query` like a run."""
    out = Path(out_dir)
    if (out / "probes.parquet").is_file() and not (out / "import.json").is_file():
        raise KdynError(f"{out} already holds a run (probes.parquet); choose another --out for imported results")
    res = load_external(sources, metric, filter_name)
    res.meta["run"] = out.name
    with run_lock(out, "analyze --from"):  # after the checks: bad input leaves no folder behind
        analysis = analyze_results(res, bootstrap, seed, injection_steps, peak_window, bootstrap_unit)
        write_json(out / "import.json", {"sources": list(sources), "metric": metric, "filter": filter_name})
        write_parquet(out / "probes.parquet", pa.Table.from_pandas(imported_frame(res), preserve_index=False))
        write_analysis(analysis, out)
    return analysis


def run_bootstrap_unit(run_dir: Path) -> BootstrapUnit:
    """The run's `analysis.bootstrap_unit` (config.yaml), else the default (entity)."""
    import yaml

    path = run_dir / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except yaml.YAMLError:
        saved = None  # load_run reports a bad config.yaml itself
    section = saved.get("analysis") if isinstance(saved, dict) else None
    unit = section.get("bootstrap_unit") if isinstance(section, dict) else None
    if unit is None:
        return AnalysisConfig().bootstrap_unit
    if unit not in ("item", "entity"):
        raise KdynError(f"{path}: 'analysis.bootstrap_unit' must be item or entity, got {unit!r}")
    return unit
