"""`kdyn query "SQL" RUN...`: DuckDB SQL over every run's files, one named view per file kind.

    from kdyn.analysis.sql import query
    query("SELECT run, kind, avg(correct::INT) FROM probes WHERE step = 0 GROUP BY ALL", ["runs/*"])

Every view has a leading `run` column (the run's short name) and is the union, by column name, of that
file in every run that has it: probes, train_log, fact_loss (run files); facts, bench_probes
(RUN/bench/*.jsonl); transitions, fuar, trajectories, consolidation, epoch_counts, curves,
loss_knowledge, stepwise, retainability (RUN/analysis/, after `kdyn analyze`); and `runs` (run, path,
model, strategy, seed).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from kdyn.analysis.load import expand_run_dirs, run_labels, run_meta
from kdyn.analysis.pipeline import TABLES
from kdyn.errors import KdynError

RUN_FILES = {"probes": "probes.parquet", "train_log": "train_log.parquet", "fact_loss": "fact_loss.parquet",
             "facts": "bench/facts.jsonl", "bench_probes": "bench/probes.jsonl",
             **{name: f"analysis/{name}.parquet" for name in TABLES}}  # fmt: skip


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _reader(path: Path) -> str:
    if path.suffix == ".jsonl":
        return f"read_json({_quote(str(path))}, format='newline_delimited')"
    return f"read_parquet({_quote(str(path))})"


def connect(run_dirs: list[str] | list[Path]) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB connection with the views above over the given runs (paths or globs)."""
    paths = expand_run_dirs([str(p) for p in run_dirs])
    labels = run_labels(paths)
    con = duckdb.connect()
    views = []
    for view, rel in RUN_FILES.items():
        parts = [f"SELECT {_quote(label)} AS run, * FROM {_reader(path / rel)}"
                 for label, path in zip(labels, paths) if (path / rel).is_file()]  # fmt: skip
        if parts:
            con.execute(f"CREATE VIEW {view} AS " + " UNION ALL BY NAME ".join(parts))
            views.append(view)
    meta = []
    for label, path in zip(labels, paths):
        m = run_meta(path)
        meta.append({"run": label, "path": str(path), "model": m["model"], "strategy": m["strategy"],
                     "seed": None if m["seed"] is None else str(m["seed"])})  # fmt: skip
    con.register("_runs", pd.DataFrame(meta, columns=["run", "path", "model", "strategy", "seed"]))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    return con, views + ["runs"]


def query(sql: str, run_dirs: list[str] | list[Path]) -> pd.DataFrame:
    """Run `sql` over the runs' views; a failing query raises KdynError with DuckDB's message."""
    con, views = connect(run_dirs)
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise KdynError(f"query failed: {first} (views: {', '.join(views)})") from None
    finally:
        con.close()
