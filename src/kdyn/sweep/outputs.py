"""A sweep's comparison over its finished runs, written after the runs (and again on every re-run).

    DIR/comparison/compare_runs.parquet    per run x (kind, probe_type): accuracy, F, BT, consolidation, CIs
    DIR/comparison/compare_seeds.parquet   mean ± t-CI over seeds, per model x grid point (train.strategy)
    DIR/comparison/compare_tests.parquet   McNemar and the paired accuracy difference for every two runs
    DIR/comparison/exposure_runs.parquet   per run x (kind, probe_type, exposure bucket), with CIs
    DIR/comparison/exposure_seeds.parquet  the exposure buckets over seeds
    DIR/report.html                        `kdyn report RUN... --out DIR/report.html`, in its own process,
                                           when the kdyn.report package is installed
The tables are kdyn.analysis's (`compare`, `exposure_over_runs`); the comparison/ folder is replaced whole.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from kdyn.io import atomic_dir, write_parquet

if TYPE_CHECKING:
    from kdyn.analysis.comparison import Comparison
    from kdyn.sweep.runner import SweepResult


def write_comparison(run_dirs: list[Path], target: Path, bootstrap: int = 1000) -> Comparison:
    """kdyn compare's three tables and the exposure tables over `run_dirs`, into the folder `target`."""
    from kdyn.analysis.comparison import compare
    from kdyn.analysis.exposure import exposure_over_runs
    from kdyn.analysis.pipeline import to_arrow

    comp = compare(run_dirs, bootstrap=bootstrap)
    exposure_runs, exposure_seeds = exposure_over_runs(run_dirs, bootstrap=bootstrap)
    frames = {"compare_runs": comp.runs, "compare_seeds": comp.seeds, "compare_tests": comp.tests,
              "exposure_runs": exposure_runs, "exposure_seeds": exposure_seeds}  # fmt: skip
    with atomic_dir(target) as tmp:
        for name, frame in frames.items():
            write_parquet(tmp / f"{name}.parquet", to_arrow(frame, pa.int64()))
    return comp


def report_available() -> bool:
    """True when the kdyn.report package is installed and `kdyn report` is a command."""
    if importlib.util.find_spec("kdyn.report") is None:
        return False
    from kdyn.cli import app

    return any((c.name or c.callback.__name__) == "report" for c in app.registered_commands if c.callback)


def write_outputs(result: SweepResult, say: Callable[[str], None]) -> None:
    """The comparison tables, then the comparison report; fills result.outputs and result.comparison."""
    from kdyn.sweep.runner import last_error, run_logged

    runs = result.done_dirs
    if not runs:
        say("no finished run yet, so no comparison")
        return
    target = result.out / "comparison"
    result.comparison = write_comparison(runs, target)
    result.outputs["comparison"] = target
    say(f"comparison of {len(runs)} finished run(s): {target}")
    if not report_available():
        say("no HTML report: this kdyn has no `kdyn report` command")
        return
    html, log = result.out / "report.html", result.out / "logs" / "report.log"
    code = run_logged([sys.executable, "-m", "kdyn", "report", *map(str, runs), "--out", str(html)], log)
    if code == 0 and html.is_file():
        result.outputs["report"] = html
        say(f"report: {html}")
    else:
        result.stage_failures.append("report")
        say(f"report FAILED (exit code {code}): {last_error(log)}  [log: {log}]")
