"""`kdyn probe`: score one model once on a benchmark and write the results as parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kdyn.bench.schema import load_benchmark
from kdyn.errors import KdynError
from kdyn.io import write_parquet
from kdyn.models import LoadedModel, load_model
from kdyn.probe.prompts import build_rows
from kdyn.probe.results import flag_known, to_table
from kdyn.probe.scorer import ScoreConfig, score_probes


def progress_bar(show: bool = True) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True, disable=not show)  # fmt: skip


def probe(model: str | LoadedModel, bench: str | Path, out: str | Path, cfg: ScoreConfig | None = None,
          show_progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Score `model` on every probe of `bench`; write `out` (parquet) atomically; return the rows."""
    out = Path(out)
    if out.suffix != ".parquet":
        raise KdynError(f"--out must be a .parquet file, got {out}")
    benchmark = load_benchmark(bench)
    lm = load_model(model) if isinstance(model, str) else model
    n_rows = len(build_rows(benchmark.probes, lm.tokenizer))
    with progress_bar(show_progress) as bar:
        task = bar.add_task("probing", total=n_rows)
        rows = score_probes(lm.model, lm.tokenizer, benchmark.probes, cfg, progress=lambda n: bar.advance(task, n))
    flag_known(rows)
    write_parquet(out, to_table(rows))
    return rows

