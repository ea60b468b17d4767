"""`kdyn report RUN... [--out FILE]`: one self-contained HTML file per run, or per comparison of runs.

    from kdyn.report import report
    report(["runs/quickstart"])                          # → runs/quickstart/report.html, plots in RUN/plots/
    report(["runs/full", "runs/lora"], out="cmp.html")    # comparison; plots beside the file (./plots/)

One run: sections 1-5 and 8, plus 7 when RUN/circuit_metrics.parquet exists. Several runs: set-up per run,
the comparison (6) and findings (8). Default --out: RUN/report.html for one run; for several, report.html
in the runs' common parent folder. The page embeds its figures (PNG, base64), has no script and loads
nothing; the same inputs give the same bytes apart from the "generated" timestamp.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from kdyn import __version__
from kdyn.analysis.load import expand_run_dirs, run_labels
from kdyn.errors import KdynError
from kdyn.io import atomic_path
from kdyn.lock import run_lock
from kdyn.report.acquisition import acquisition_section, broken_section
from kdyn.report.circuits import circuit_findings, circuits_section
from kdyn.report.comparison import comparison_findings, comparison_section
from kdyn.report.data import RunData, load_run_data
from kdyn.report.figures import Canvas
from kdyn.report.findings import run_findings
from kdyn.report.html import Section, bullets, page
from kdyn.report.knowledge import loss_knowledge_section, transitions_section
from kdyn.report.setup import runs_setup_section, setup_section
from kdyn.report.text import interval_words

FINDINGS = "8. Findings in words"
GLANCE = 3  # comparison findings repeated at the top of the page


def default_out(paths: list[Path]) -> Path:
    if len(paths) == 1:
        return paths[0] / "report.html"
    return Path(os.path.commonpath([p.resolve() for p in paths])) / "report.html"


def run_subtitle(run: RunData) -> str:
    if (run.path / "import.json").is_file():
        return f"imported per-item results (kdyn analyze --from) · {len(run.steps)} checkpoints"
    return (f"{run.manifest.get('model') or run.config.get('model') or 'model ?'} · "
            f"{run.manifest.get('strategy') or 'strategy ?'} · {len(run.steps)} checkpoints · "
            f"status {run.manifest.get('status', '?')}")  # fmt: skip


def findings_section(sentences: list[str], summary: dict | None = None) -> Section:
    lead = f"Generated from the numbers above; [a–b] are 95% intervals ({interval_words(summary or {})})."
    return Section("findings", FINDINGS, lead).add(bullets(sentences, class_="findings"))


def run_sections(run: RunData, canvas: Canvas) -> tuple[list[Section], list[str]]:
    """The sections of a one-run report, and the findings shown at the top of the page."""
    sections = [setup_section(run), loss_knowledge_section(run, canvas), transitions_section(run, canvas),
                acquisition_section(run, canvas), broken_section(run, canvas)]  # fmt: skip
    extra = []
    if run.circuits is not None:
        sections.append(circuits_section(run, canvas))
        extra = circuit_findings(run)
    findings, glance = run_findings(run, extra)
    sections.append(findings_section(findings, run.summary))
    return sections, glance


def report(run_dirs: list[str] | list[Path], out: str | Path | None = None) -> Path:
    """Write the HTML report (and PNG + SVG figures); returns the report's path."""
    paths = expand_run_dirs([str(p) for p in run_dirs])
    out = Path(out) if out is not None else default_out(paths)
    if out.suffix.lower() not in (".html", ".htm"):
        raise KdynError(f"--out must name an .html file, got {out}")
    if out.exists() and out.is_dir():
        raise KdynError(f"--out {out} is a directory; name the .html file to write")
    owner = written_run(paths, out)
    with run_lock(owner, "report") if owner is not None else contextlib.nullcontext():
        return write_report(paths, out)


def written_run(paths: list[Path], out: Path) -> Path | None:
    """The run folder a report writes into (its writer lock is taken): the run itself for one run (RUN/plots/),
    or --out's folder when that is one of the runs; None when a comparison goes outside them."""
    if len(paths) == 1:
        return paths[0]
    return next((p for p in paths if p.resolve() == out.parent.resolve()), None)


def write_report(paths: list[Path], out: Path) -> Path:
    """`report` once its arguments are checked (and the run it writes into is locked)."""
    runs = [load_run_data(p, label) for p, label in zip(paths, run_labels(paths))]
    if len(runs) == 1:
        run = runs[0]
        sections, glance = run_sections(run, Canvas(run.path / "plots"))
        title = f"kdyn report: {run.label}"
        subtitle = run_subtitle(run)
    else:
        canvas = Canvas(out.parent / "plots")
        comp_section, comp = comparison_section(runs, canvas)
        findings = comparison_findings(runs, comp)
        sections = [runs_setup_section(runs), comp_section, findings_section(findings)]
        glance = findings[:GLANCE]
        title = f"kdyn comparison: {len(runs)} runs"
        subtitle = ", ".join(r.label for r in runs)
    footer = f"kdyn {__version__} · generated {time.strftime('%Y-%m-%d %H:%M:%S')} · every definition: docs/metrics.md in the kdyn repository"
    with atomic_path(out) as tmp:
        tmp.write_text(page(title, subtitle, sections, footer, glance), encoding="utf-8")
    return out
