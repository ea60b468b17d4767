"""One writer per run folder (kdyn.lock): a second writer gets one sentence naming the holder (CLI exit 2),
a killed holder leaves no stale lock, readers never block."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kdyn.analysis import analyze
from kdyn.analysis.commands import register
from kdyn.analysis.comparison import compare
from kdyn.analysis.sql import query
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.circuits import circuits
from kdyn.errors import KdynError
from kdyn.lock import LOCK_FILE, holder, run_lock
from kdyn.report import report
from kdyn.train import train

HOLD = """
import sys, time
from kdyn.lock import run_lock
with run_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held(folder: Path, command: str) -> Iterator[subprocess.Popen]:
    """Another process holding kdyn's writer lock on `folder` as `kdyn <command>`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), command], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def naming(proc: subprocess.Popen, command: str) -> str:
    return rf"being written by `kdyn {command}` \(pid {proc.pid} on {socket.gethostname()}, since "


@pytest.fixture
def run(tmp_path) -> Path:
    return write_synthetic_run(tmp_path / "run", n_items=60, n_checkpoints=2, checkpoints_per_epoch=1)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_second_train_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with held(out, "train") as proc:
        before = files(out)
        with pytest.raises(KdynError, match=naming(proc, "train")):
            train("tiny", out, show_progress=False)
        with pytest.raises(KdynError, match=naming(proc, "train")):
            train("tiny", out, resume=True, show_progress=False)
        assert files(out) == before  # no bench, no config.yaml, no manifest written beside the holder
        record = holder(out)
        assert record is not None and record["pid"] == proc.pid and record["command"] == "kdyn train"


def test_cli_train_exits_2_with_one_line(tmp_path):
    out = tmp_path / "run"
    with held(out, "run") as proc:
        done = subprocess.run([sys.executable, "-m", "kdyn", "train", "tiny", "--out", str(out)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"`kdyn run` (pid {proc.pid} on {socket.gethostname()}" in done.stderr and "complete" not in done.stdout


def test_analyze_report_circuits_are_refused_while_a_writer_holds_the_run(run):
    with held(run, "train") as proc:
        before = files(run)
        with pytest.raises(KdynError, match=naming(proc, "train")):
            analyze(run, bootstrap=10)
        with pytest.raises(KdynError, match=naming(proc, "train")):
            circuits(run)
        with pytest.raises(KdynError, match=naming(proc, "train")):
            report([run])
        with pytest.raises(KdynError, match=naming(proc, "train")):
            report([run], out=run.parent / "elsewhere.html")  # its plots still go into RUN/plots/
        assert files(run) == before and not (run.parent / "elsewhere.html").exists()
        app = typer.Typer()
        register(app)
        result = CliRunner().invoke(app, ["analyze", str(run), "--bootstrap", "10"])
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        assert f"pid {proc.pid}" in result.stderr


def test_readers_never_block(run):
    with held(run, "train"):
        assert query("SELECT count(*) AS n FROM probes WHERE step = 0", [run])["n"][0] == 60
        assert len(compare([run], bootstrap=10).runs) > 0


def test_a_killed_holder_leaves_no_stale_lock(run):
    with held(run, "analyze") as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert (run / LOCK_FILE).is_file()  # its record stays behind; the kernel dropped the lock itself
        analyze(run, bootstrap=10)
    assert (run / "analysis" / "summary.json").is_file() and not (run / LOCK_FILE).exists()


def test_reentrant_in_a_thread_exclusive_across_threads(tmp_path):
    folder = tmp_path / "run"
    errors: list[Exception] = []

    def other_writer() -> None:
        try:
            with run_lock(folder, "report"):
                pass
        except KdynError as e:
            errors.append(e)

    with run_lock(folder, "run"):
        with run_lock(folder, "train"):  # kdyn run → its stages: the same thread takes it again
            pass
        with run_lock(folder, "analyze"):
            thread = threading.Thread(target=other_writer)
            thread.start()
            thread.join()
        assert holder(folder)["command"] == "kdyn run"
    assert len(errors) == 1 and "`kdyn run`" in str(errors[0])
    with run_lock(folder, "report"):  # free again
        pass


def test_a_folder_the_lock_made_is_removed_when_the_block_fails(tmp_path):
    with pytest.raises(KdynError):
        with run_lock(tmp_path / "a" / "b", "train"):
            raise KdynError("bad input")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KdynError, match="--resume: .* has no config.yaml"):
        train("tiny", tmp_path / "new", resume=True, show_progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(KdynError, match="exists and is not a directory"):
        with run_lock(tmp_path / "file", "train"):
            pass
    assert (tmp_path / "file").read_text() == "x"
