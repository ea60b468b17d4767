"""`kdyn probe`: score one model once on a benchmark and write the results as parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from kdyn.bench.schema import load_benchmark
from kdyn.device import default_device
from kdyn.errors import KdynError
from kdyn.io import check_writable, write_parquet
from kdyn.models import LoadedModel, load_model
from kdyn.probe.prompts import build_rows
from kdyn.probe.results import flag_known, to_table
from kdyn.probe.scorer import ScoreConfig, score_probes
from kdyn.progress import LineProgress


def progress_bar(show: bool = True) -> LineProgress:
    return LineProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        transient=True, disable=not show)  # fmt: skip


def probe(model: str | LoadedModel, bench: str | Path, out: str | Path, cfg: ScoreConfig | None = None,
          show_progress: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    """Score `model` on every probe of `bench`; write `out` (parquet) atomically; return the rows."""
    out = Path(out)
    if out.suffix != ".parquet":
        raise KdynError(f"--out must be a .parquet file, got {out}")
    cfg = cfg or ScoreConfig()
    try:
        cfg.validate()  # the CLI builds it from --batch-size, not through the config loader that validates
    except ValueError as e:
        raise KdynError(f"probe: {e}") from None
    check_writable(out.parent)  # before the scoring, not after it
    benchmark = load_benchmark(bench)
    lm = load_model(model, device=default_device()) if isinstance(model, str) else model
    n_rows = len(build_rows(benchmark.probes, lm.tokenizer))
    with progress_bar(show_progress) as bar:
        task = bar.add_task("probing", total=n_rows)
        rows = score_probes(lm.model, lm.tokenizer, benchmark.probes, cfg, progress=lambda n: bar.advance(task, n))
    flag_known(rows)
    write_parquet(out, to_table(rows))
    return rows

