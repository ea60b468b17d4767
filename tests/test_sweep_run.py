"""Sweeps that run (tiny-random-llama, real `kdyn run` processes): an interrupted sweep resumes its run, failed
runs are reported while the sweep goes on. Skipping, stale runs and the comparison: test_sweep_smoke.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from kdyn.cli import app
from kdyn.sweep import load_suite, sweep

SUITE = """
name: tiny-sweep
base: tiny
overrides: [train.epochs=2, train.batch_size=1, train.seq_len=256]
seeds: [0]
grid:
  strategy:
    - {label: full}
    - {label: sam, overrides: [train.sam.rho=0.05]}
"""


def write_suite(folder: Path, text: str = SUITE) -> Path:
    path = folder / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def training_epoch(run_dir: Path) -> int:
    """The last epoch whose resume point is committed (-1 before the first)."""
    try:
        return json.loads((run_dir / "state" / "trainer.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):  # not there yet, or being replaced this instant
        return -1


def test_an_interrupted_sweep_resumes_its_run(tmp_path):
    suite_path = write_suite(tmp_path, SUITE.replace("train.epochs=2", "train.epochs=3"))
    out, name = tmp_path / "out", "full-s0"
    sweep_cmd = [sys.executable, "-m", "kdyn", "sweep", str(suite_path), "--out", str(out), "--only", name]
    proc = subprocess.Popen(sweep_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while training_epoch(out / name) < 1:  # stop it inside epoch 2, as a scheduler's kill would
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before it could be interrupted"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "interrupted: run the same command again to resume" in stderr
    assert json.loads((out / name / "manifest.json").read_text())["status"] == "interrupted"
    assert json.loads((out / "sweep.json").read_text())["points"][0]["outcome"] == "interrupted"
    result = sweep(load_suite(suite_path), out, only=[name], say=lambda s: None, compare=False)
    (run,) = [r for r in result.runs if r.point.name == name]
    assert (run.status, run.reason, run.outcome) == ("resume", "training interrupted", "complete")
    assert "--resume" in (out / "logs" / f"{name}.log").read_text().split("\n$ ")[-1].splitlines()[0]
    manifest = json.loads((out / name / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] == 1
    assert max(pq.read_table(out / name / "probes.parquet").column("epoch").to_pylist()) == 3


def test_failed_runs_are_reported_and_the_sweep_goes_on(tmp_path):
    suite = write_suite(tmp_path, SUITE.replace("{label: full}", "{label: bad, overrides: [model=no-such-model]}")
                        .replace("{label: sam, overrides: [train.sam.rho=0.05]}",
                                 "{label: worse, overrides: [model=no-such-model-either]}"))  # fmt: skip
    result = CliRunner().invoke(app, ["sweep", str(suite), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "failed: bad-s0, worse-s0" in result.output
    state = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [p["outcome"] for p in state["points"]] == ["failed", "failed"]  # the second ran after the first failed
    assert all("unknown model" in p["error"] and p["returncode"] == 2 for p in state["points"]), state["points"]
    assert "no finished run yet" in result.output and not (tmp_path / "out" / "comparison").exists()
