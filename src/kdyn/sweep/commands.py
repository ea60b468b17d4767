"""CLI command `kdyn sweep`: a thin wrapper over kdyn.sweep (the main CLI calls `register(app)`)."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdyn.console import console, err, friendly


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@friendly
def sweep_cmd(
    suite: Annotated[str, typer.Argument(help="built-in suite (strategies, relevance, models, forgetting, circuits) or a suite YAML")],
    smoke: Annotated[bool, typer.Option("--smoke", help="the suite's smoke size: the same grid in minutes")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="sweep folder (default runs/sweeps/<suite>[-smoke])")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="run only points with this name or label "
                                                   "(e.g. lora, s0, lora-s1); repeatable")] = None,  # fmt: skip
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show each run's status and run nothing")] = False,
    print_commands: Annotated[bool, typer.Option("--print-commands", help="print one shell line per run still "
                                                 "to do (for SLURM arrays, GNU parallel) and run nothing")] = False,  # fmt: skip
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a config value in every run: "
                                                        "--set model=Qwen/Qwen2.5-0.5B-Instruct")] = None,  # fmt: skip
    launcher: Annotated[str, typer.Option("--launcher", help="what starts each run instead of this Python, e.g. "
                                          "'accelerate launch' (runs `LAUNCHER -m kdyn run ...`)")] = "",  # fmt: skip
) -> None:
    """Run a grid of experiments one after another (resumable), then compare them.

    Example: kdyn sweep strategies --smoke   |   kdyn sweep strategies --print-commands | parallel -j 4
    """
    from kdyn.sweep.runner import default_out, describe, plan, scheduler_commands, summary_line, sweep
    from kdyn.sweep.suite import load_suite

    loaded = load_suite(suite, smoke, overrides)
    folder = out if out is not None else default_out(loaded)
    if print_commands:
        lines = scheduler_commands(loaded, folder, only, launcher or "python")
        for line in lines:
            typer.echo(line)
        again = shlex.join(["kdyn", "sweep", suite, *(["--smoke"] if smoke else []), "--out", str(folder),
                            *[x for o in overrides or [] for x in ("--set", o)]])  # fmt: skip
        err.print(f"{len(lines)} run(s) to do; afterwards `{again}` skips them and writes the comparison",
                  highlight=False, soft_wrap=True)  # fmt: skip
        return
    if dry_run:
        console.print(f"sweep '{loaded.name}' → {folder} (base: {loaded.base})", highlight=False, soft_wrap=True)
        table = Table()
        for col in ("run", "status", "note"):
            table.add_column(col)
        for row in describe(plan(loaded, folder, only)):
            table.add_row(row["run"], row["status"], row["note"])
        console.print(table)
        return
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # a scheduler's kill stops the run too
    try:
        result = sweep(loaded, folder, only=only, say=lambda s: console.print(s, highlight=False, markup=False),
                       echo=lambda line: sys.stdout.write(line), launcher=launcher)  # fmt: skip
    except KeyboardInterrupt:
        err.print(f"interrupted: run the same command again to resume ({folder / 'sweep.json'})", highlight=False)
        raise typer.Exit(130) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if result.comparison is not None:
        from kdyn.analysis.render import comparison_tables

        tables = comparison_tables(result.comparison)  # runs, then over seeds when some point has several
        console.print(tables[1] if (result.comparison.seeds["n_seeds"] > 1).any() else tables[0])
    console.print(summary_line(result), highlight=False)
    if result.failed:
        err.print(f"failed: {', '.join(result.failed)} (logs in {folder / 'logs'})", highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `sweep` to a typer app."""
    app.command("sweep")(sweep_cmd)
