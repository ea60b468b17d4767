"""CLI commands `kdyn analyze`, `kdyn compare`, `kdyn query`: thin wrappers over the library.

The main CLI calls `register(app)`. Each command turns a KdynError into one line on stderr and exit
code 2 itself, so it behaves the same in any typer app it is registered into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdyn.console import console, err
from kdyn.console import friendly as _one_line_errors
from kdyn.errors import KdynError

FROM_HELP = ("PATHS are per-item results made elsewhere (CSV / JSONL / Parquet, lm-eval samples_*.jsonl), "
             "each FILE or CKPT=FILE")
Bootstraps = Annotated[int, typer.Option("--bootstrap", help="bootstrap replicates for every CI")]
Seed = Annotated[int, typer.Option("--seed", help="bootstrap seed (results are deterministic)")]
Unit = Annotated[str | None, typer.Option("--bootstrap-unit", help="resample 'entity' (whole entities: their probes "
                                          "are correlated) or 'item'; default: the run's analysis.bootstrap_unit, "
                                          "else entity")]  # fmt: skip


@_one_line_errors
def analyze_cmd(
    paths: Annotated[list[str] | None, typer.Argument(metavar="RUN|FILE",
                                                      help="RUN directory; with --from: result files")] = None,  # fmt: skip
    from_files: Annotated[bool, typer.Option("--from", help=FROM_HELP)] = False,
    out: Annotated[Path | None, typer.Option("--out", help="with --from: folder to write analysis/ into")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="lm-eval: the 0/1 metric that means correct")] = None,
    filter_name: Annotated[str | None, typer.Option("--filter", help="lm-eval: which filter's results to use")] = None,
    injection_step: Annotated[list[int] | None, typer.Option(help="step-level metrics: injection step(s)")] = None,
    peak_window: Annotated[int, typer.Option("--peak-window", help="steps after injection to find the peak")] = 50,
    bootstrap: Bootstraps = 1000,
    seed: Seed = 0,
    bootstrap_unit: Unit = None,
) -> None:
    """Transitions, trajectories, loss vs knowledge and statistics of a run.

    Example: kdyn analyze runs/quickstart   |   kdyn analyze --from 100=samples_a.jsonl 200=samples_b.jsonl --out evals/
    """
    from kdyn.analysis.pipeline import analyze, analyze_external
    from kdyn.analysis.render import analysis_tables

    paths = paths or []
    if bootstrap_unit not in (None, "item", "entity"):
        raise KdynError(f"--bootstrap-unit must be 'item' or 'entity', got '{bootstrap_unit}'")
    options = {"bootstrap": bootstrap, "seed": seed, "injection_steps": injection_step, "peak_window": peak_window}
    if from_files:
        if not paths or out is None:
            raise KdynError("--from needs one or more result files and --out DIR")
        result = analyze_external(paths, out, metric=metric, filter_name=filter_name,
                                  bootstrap_unit=bootstrap_unit or "entity", **options)  # fmt: skip
    else:
        if len(paths) != 1:
            raise KdynError(f"analyze takes one RUN directory, got {len(paths)} (use --from for result files)")
        if out is not None or metric is not None or filter_name is not None:
            raise KdynError("--out, --metric and --filter go with --from; a run is analysed into RUN/analysis/")
        result = analyze(paths[0], bootstrap_unit=bootstrap_unit, **options)  # type: ignore[arg-type]
    for table in analysis_tables(result):
        console.print(table)
    for note in result.summary["notes"]:
        console.print(f"note: {note}", highlight=False)
    console.print(f"analysis written to {result.out_dir}")


@_one_line_errors
def compare_cmd(
    runs: Annotated[list[str], typer.Argument(metavar="RUN", help="run directories or globs (quote globs: 'runs/*')")],
    at: Annotated[str, typer.Option(help="'final' (each run's last checkpoint) or a step all runs have")] = "final",
    out: Annotated[Path | None, typer.Option("--out", help="folder for compare_{runs,seeds,tests}.parquet")] = None,
    bootstrap: Bootstraps = 1000,
    seed: Seed = 0,
) -> None:
    """One table across runs with CIs, seed aggregates and paired tests.  Example: kdyn compare 'runs/*'"""
    import pyarrow as pa

    from kdyn.analysis.comparison import compare
    from kdyn.analysis.render import comparison_tables
    from kdyn.io import write_parquet

    if at != "final" and not at.lstrip("-").isdigit():
        raise KdynError(f"--at must be 'final' or a step number, got '{at}'")
    comp = compare(runs, at=at if at == "final" else int(at), bootstrap=bootstrap, seed=seed)
    for warning in comp.warnings:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    for table in comparison_tables(comp):
        console.print(table)
    if out is not None:
        for name, frame in (("runs", comp.runs), ("seeds", comp.seeds), ("tests", comp.tests)):
            write_parquet(Path(out) / f"compare_{name}.parquet", pa.Table.from_pandas(frame, preserve_index=False))
        console.print(f"tables written to {out}")


@_one_line_errors
def query_cmd(
    sql: Annotated[str, typer.Argument(metavar="SQL", help="DuckDB SQL over the views probes, train_log, fact_loss, "
                                       "eval_loss, facts, bench_probes, runs and the analysis tables")],  # fmt: skip
    runs: Annotated[list[str], typer.Argument(metavar="RUN", help="run directories or globs")],
    csv: Annotated[bool, typer.Option("--csv", help="print CSV instead of a table")] = False,
) -> None:
    """DuckDB SQL over every run's parquet files.

    Example: kdyn query "SELECT run, kind, avg(correct::INT) AS acc FROM probes GROUP BY ALL" 'runs/*'
    """
    from kdyn.analysis.render import frame_table
    from kdyn.analysis.sql import query

    frame = query(sql, runs)
    if csv:
        typer.echo(frame.to_csv(index=False), nl=False)
    else:
        console.print(frame_table(frame))


def register(app: typer.Typer) -> None:
    """Add `analyze`, `compare` and `query` to a typer app."""
    app.command("analyze")(analyze_cmd)
    app.command("compare")(compare_cmd)
    app.command("query")(query_cmd)
