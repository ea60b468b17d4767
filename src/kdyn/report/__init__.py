"""The HTML report: one self-contained page per run or per comparison of runs (DESIGN.md `kdyn report`).

    from kdyn.report import report
    report(["runs/quickstart"])        # → runs/quickstart/report.html, figures as PNG + SVG in RUN/plots/

Modules: data (the run directory as dataframes; runs the analysis when its outputs are missing), html (a
tiny escaping-by-default HTML layer and the page shell), text (numbers with CIs, labels), figures
(matplotlib helpers, PNG + SVG saving), setup (section 1), knowledge (2 loss vs knowledge, 3 transitions),
acquisition (4 acquisition raster, 5 what was broken), comparison (6), circuits (7), findings (8 in words),
build (`report`, assembling the page), commands (CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["report"]


def report(run_dirs: list[str] | list[Path], out: str | Path | None = None) -> Path:
    """Write the report of one run (or a comparison of several); returns the HTML file's path."""
    from kdyn.report.build import report as _report  # matplotlib loads on first use, not on `import kdyn.report`

    return _report(run_dirs, out)


def __dir__() -> list[Any]:
    return __all__
