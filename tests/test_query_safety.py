"""`kdyn query` is read-only and sees only the runs it was given: every attack is one KdynError sentence
(CLI exit 2) and leaves the run's files as they were."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from kdyn.analysis import analyze
from kdyn.analysis.commands import register
from kdyn.analysis.sql import connect, query
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.errors import KdynError


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(root / "given", n_items=60, n_checkpoints=2, checkpoints_per_epoch=1)
    write_synthetic_run(root / "other", n_items=60, n_checkpoints=2, checkpoints_per_epoch=1, seed=1)
    analyze(root / "given", bootstrap=20)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def attacks(run: Path, outside: Path) -> dict[str, str]:
    return {
        "copy over results": f"COPY (SELECT 1 AS x) TO '{run}/probes.parquet'",
        "copy as second statement": f"SELECT 1; COPY (SELECT 1 AS x) TO '{run}/probes.parquet'",
        "copy outside": f"COPY (SELECT 1 AS x) TO '{outside}/stolen.csv'",
        "explain analyze copy": f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{run}/probes.parquet'",
        "attach in run": f"ATTACH '{run}/new.db' AS x",
        "attach outside": f"ATTACH '{outside}/new.db' AS x",
        "read /etc/passwd": "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
        "read another run": f"SELECT * FROM read_parquet('{outside}/other/probes.parquet')",
        "read via ..": f"SELECT * FROM read_parquet('{run}/../other/probes.parquet')",
        "glob outside": "SELECT * FROM glob('/etc/*')",
        "set undoes the lock": "SET enable_external_access = true",
        "set allowed dirs": "SET allowed_directories = ['/']",
        "reset the lock": "RESET lock_configuration",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "create table": "CREATE TABLE t AS SELECT 1 AS x",
        "create view": "CREATE OR REPLACE VIEW probes AS SELECT 1 AS x",
        "insert": "INSERT INTO probes VALUES (1)",
        "drop view": "DROP VIEW probes",
        "export database": f"EXPORT DATABASE '{run}/dump'",
        "pragma": "PRAGMA enable_profiling",
    }


ATTACK_NAMES = list(attacks(Path("r"), Path("o")))


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_attack_is_refused_and_changes_nothing(runs, name):
    run, before = runs / "given", snapshot(runs)
    with pytest.raises(KdynError) as info:
        query(attacks(run, runs)[name], [run])
    assert "\n" not in str(info.value)
    assert snapshot(runs) == before  # no file written, replaced or created, in the run or beside it


def test_refusals_name_the_reason(runs):
    run = runs / "given"
    with pytest.raises(KdynError, match="runs one SQL statement, got 2"):
        query(f"SELECT 1; COPY (SELECT 1 AS x) TO '{run}/probes.parquet'", [run])
    with pytest.raises(KdynError, match="read-only and runs a SELECT .*not COPY"):
        query(f"COPY (SELECT 1 AS x) TO '{run}/probes.parquet'", [run])
    with pytest.raises(KdynError, match="reads only inside the runs it was given"):
        query("SELECT * FROM read_csv('/etc/passwd', sep = ':')", [run])
    with pytest.raises(KdynError, match="reads only inside the runs it was given"):
        query(f"SELECT count(*) FROM read_parquet('{runs}/other/probes.parquet')", [run])


def test_the_engine_itself_is_locked(runs):
    """Below the statement check, DuckDB refuses files outside the runs, extensions and undoing the lock."""
    run = runs / "given"
    con, _ = connect([run])
    try:
        for sql in ("SELECT * FROM read_csv('/etc/passwd', sep = ':')",
                    f"SELECT * FROM read_parquet('{runs}/other/probes.parquet')",
                    f"COPY (SELECT 1 AS x) TO '{runs}/stolen.csv'", f"ATTACH '{runs}/new.db' AS x",
                    "SET enable_external_access = true", "SET allowed_directories = ['/']",
                    "SET lock_configuration = false", "LOAD httpfs"):  # fmt: skip
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    finally:
        con.close()
    assert not (runs / "stolen.csv").exists() and not (runs / "new.db").exists()


def test_normal_queries_still_work(runs):
    run = runs / "given"
    n = query("SELECT count(*) AS n FROM probes WHERE step = 0", [run])["n"][0]
    assert n == 60
    assert len(query("DESCRIBE probes", [run])) > 0
    assert len(query("SUMMARIZE train_log", [run])) > 0
    assert query("WITH t AS (SELECT * FROM trajectories) SELECT count(*) AS n FROM t", [run])["n"][0] == 60
    own = query(f"SELECT count(*) AS n FROM read_parquet('{run.resolve()}/analysis/fuar.parquet')", [run])
    assert own["n"][0] > 0  # files of a given run stay readable by path
    both = query("SELECT run, count(*) AS n FROM probes GROUP BY run ORDER BY run", [runs / "*"])
    assert both["run"].tolist() == ["given", "other"]


def test_cli_refuses_with_exit_2_and_one_line(runs):
    app = typer.Typer()
    register(app)
    run = runs / "given"
    before = snapshot(runs)
    for sql in (f"COPY (SELECT 1 AS x) TO '{run}/probes.parquet'", "SELECT * FROM read_csv('/etc/passwd')"):
        result = CliRunner().invoke(app, ["query", sql, str(run)])
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert snapshot(runs) == before
