"""Resume: a training process killed with SIGKILL mid-epoch, resumed with --resume, ends with the same
probes.parquet, fact_loss.parquet and losses as an uninterrupted run (CPU deterministic mode)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from kdyn.experiment import load_experiment
from kdyn.train import train

OVERRIDES = ["train.epochs=3", "train.batch_size=1", "train.seq_len=256"]


def cli(*args: str) -> list[str]:
    sets = [x for o in OVERRIDES for x in ("--set", o)]
    return [sys.executable, "-m", "kdyn", "train", "tiny", *args, *sets]


def kill_mid_epoch_2(out) -> None:
    env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(cli("--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("step ") and 1.2 < float(line.split("|")[1].split()[1]) < 2.0:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the training process ended before it could be killed"


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    train(load_experiment("tiny", OVERRIDES), reference, show_progress=False)

    run = tmp_path / "killed"
    kill_mid_epoch_2(run)
    state = json.loads((run / "state" / "trainer.json").read_text())
    assert state["epoch"] == 1 and state["next_group"] == 0  # killed after epoch 1's commit, inside epoch 2
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"

    done = subprocess.run(cli("--out", str(run), "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("probes", "fact_loss"):
        got, want = (pq.read_table(p / f"{name}.parquet").to_pandas() for p in (run, reference))
        assert len(got) and got.equals(want), name  # pandas equals: NaN == NaN (mcq rows have no ROUGE)
    log, ref_log = (pq.read_table(p / "train_log.parquet").to_pylist() for p in (run, reference))
    assert [(r["step"], r["loss"], r["lr"]) for r in log] == [(r["step"], r["loss"], r["lr"]) for r in ref_log]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"] == 1
    # the time is the run's over both sessions (it was the resumed session's alone, below its own probing time):
    # the training seconds are the log's steps', and the wall time holds training and probing
    assert manifest["train_seconds"] == pytest.approx(sum(r["seconds"] for r in log), abs=0.06)
    assert manifest["seconds"] >= manifest["train_seconds"] + manifest["probe_seconds"]


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    out = tmp_path / "r"
    train(load_experiment("tiny", ["train.epochs=1"]), out, show_progress=False)
    again = subprocess.run([sys.executable, "-m", "kdyn", "train", "tiny", "--out", str(out), "--set", "train.epochs=1"],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 2 and "already holds a complete run; choose another --out" in again.stderr
    other = subprocess.run([sys.executable, "-m", "kdyn", "train", "tiny", "--out", str(out), "--resume"], capture_output=True, text=True)
    assert other.returncode == 2 and "config differs" in other.stderr
    assert "train.epochs (1 → " in " ".join(other.stderr.split())  # names the difference
    fresh = subprocess.run([sys.executable, "-m", "kdyn", "train", "tiny", "--out", str(tmp_path / "new"), "--resume"],
                           capture_output=True, text=True)  # fmt: skip
    assert fresh.returncode == 2 and "no config.yaml" in fresh.stderr


@pytest.mark.parametrize("bad,message", [(["--set", "train.lora.alphaa=4"], "unknown config key 'train.lora.alphaa' (did you mean 'alpha'?)"),
                                          (["--report-to", "tensorbord"], "did you mean 'tensorboard'")])  # fmt: skip
def test_bad_train_input_is_one_line(tmp_path, bad, message):
    done = subprocess.run([sys.executable, "-m", "kdyn", "train", "tiny", "--out", str(tmp_path / "x"), *bad],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_resume_accepts_a_run_whose_config_predates_an_option(tmp_path):
    """A run started before kdyn gained an option (its config.yaml lacks the key) resumes: the sweep's rule."""
    import yaml

    out = tmp_path / "r"
    train(load_experiment("tiny", ["train.epochs=1"]), out, show_progress=False)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["analysis"], saved["train"]["keep_state"]  # as written by a kdyn without these options
    (out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    again = subprocess.run([sys.executable, "-m", "kdyn", "train", "tiny", "--out", str(out), "--set", "train.epochs=1", "--resume"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
