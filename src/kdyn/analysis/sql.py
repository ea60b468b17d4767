"""`kdyn query "SQL" RUN...`: DuckDB SQL over every run's files, one named view per file kind.

    from kdyn.analysis.sql import query
    query("SELECT run, kind, avg(correct::INT) FROM probes WHERE step = 0 GROUP BY ALL", ["runs/*"])

Every view has a leading `run` column (the run's short name) and is the union, by column name, of that
file in every run that has it: probes, train_log, fact_loss (run files); facts, bench_probes
(RUN/bench/*.jsonl); transitions, fuar, trajectories, consolidation, epoch_counts, curves,
loss_knowledge, stepwise, retainability (RUN/analysis/, after `kdyn analyze`); and `runs` (run, path,
model, strategy, seed).

A query is read-only and sees only the runs it was given: it must be one SELECT statement (DESCRIBE,
SHOW, SUMMARIZE and WITH … SELECT count as one), and DuckDB itself opens files only inside those run
folders and loads no extension (`lock_configuration` refuses the SET that would undo it).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from kdyn.analysis.load import expand_run_dirs, run_labels, run_meta
from kdyn.analysis.pipeline import TABLES
from kdyn.errors import KdynError

RUN_FILES = {"probes": "probes.parquet", "train_log": "train_log.parquet", "fact_loss": "fact_loss.parquet",
             "eval_loss": "eval_loss.parquet",
             "facts": "bench/facts.jsonl", "bench_probes": "bench/probes.jsonl",
             **{name: f"analysis/{name}.parquet" for name in TABLES}}  # fmt: skip


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _reader(path: Path) -> str:
    if path.suffix == ".jsonl":
        return f"read_json({_quote(str(path))}, format='newline_delimited')"
    return f"read_parquet({_quote(str(path))})"


def one_select(sql: str) -> duckdb.Statement:
    """The one SELECT in `sql`; anything else is refused (COPY, ATTACH, CREATE, SET, EXPLAIN ANALYZE… write)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise KdynError(f"query failed: {str(e).splitlines()[0]}") from None
    if len(statements) != 1:
        raise KdynError(f"kdyn query runs one SQL statement, got {len(statements)}; run the others one at a time")
    kind = statements[0].type.name
    if kind != "SELECT":
        raise KdynError(f"kdyn query is read-only and runs a SELECT (or DESCRIBE, SHOW, SUMMARIZE), not {kind}")
    return statements[0]


def sandbox(con: duckdb.DuckDBPyConnection, folders: list[Path]) -> None:
    """Let DuckDB open files only inside `folders`, load no extension, and never change that again."""
    allowed = ", ".join(_quote(str(f) + "/") for f in folders)
    con.execute(f"SET allowed_directories = [{allowed}]")
    con.execute("SET enable_external_access = false")  # also: no INSTALL/LOAD, no Python replacement scans
    con.execute("SET lock_configuration = true")


def connect(run_dirs: list[str] | list[Path]) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """An in-memory DuckDB connection with the views above over the given runs (paths or globs), sandboxed
    to read inside those runs only."""
    paths = expand_run_dirs([str(p) for p in run_dirs])
    labels = run_labels(paths)
    folders = [p.resolve() for p in paths]  # absolute, as DuckDB's allowed_directories compares them
    con = duckdb.connect()
    views = []
    for view, rel in RUN_FILES.items():
        parts = [f"SELECT {_quote(label)} AS run, * FROM {_reader(folder / rel)}"
                 for label, folder in zip(labels, folders) if (folder / rel).is_file()]  # fmt: skip
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
    sandbox(con, folders)
    return con, views + ["runs"]


def query(sql: str, run_dirs: list[str] | list[Path]) -> pd.DataFrame:
    """Run one SELECT over the runs' views; anything else, or a failing query, raises KdynError (one sentence)."""
    statement = one_select(sql)
    con, views = connect(run_dirs)
    try:
        return con.execute(statement).df()  # the parsed statement that was checked, not the text again
    except duckdb.PermissionException as e:
        first = str(e).splitlines()[0]
        raise KdynError(f"query failed: {first} (kdyn query reads only inside the runs it was given)") from None
    except duckdb.Error as e:
        first = str(e).splitlines()[0]
        raise KdynError(f"query failed: {first} (views: {', '.join(views)})") from None
    finally:
        con.close()
