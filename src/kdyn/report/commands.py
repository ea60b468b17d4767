"""CLI command `kdyn report`: a thin wrapper over `kdyn.report.report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdyn.console import console, friendly


@friendly
def report_cmd(
    runs: Annotated[list[str], typer.Argument(metavar="RUN", help="run directories or globs (quote globs: 'runs/*')")],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file (default: RUN/report.html for one run; "
                                             "report.html in the runs' common parent for several)")] = None,  # fmt: skip
) -> None:
    """Self-contained HTML report of a run, or a comparison of runs.  Example: kdyn report runs/quickstart"""
    from kdyn.report import report

    path = report(runs, out)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `report` to a typer app."""
    app.command("report")(report_cmd)
