"""Training, probing and reporting under bad input and after kills: one sentence (exit 2), nothing left behind.

Kills are simulated by building the on-disk state a kill leaves (no timing races): a state save killed between
atomic_dir's two renames, or during the first state save. Every run here is fp32 (`train.precision=float32`),
whatever the host's bf16 support.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kdyn.cli import app
from kdyn.experiment import load_experiment
from kdyn.sweep.runner import point_status
from kdyn.sweep.suite import Point
from kdyn.train import train

OVERRIDES = ["train.epochs=1", "train.precision=float32"]
KEEP = [*OVERRIDES, "train.keep_state=true"]
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def listing(folder: Path) -> dict[str, float]:
    """Every path under `folder` with its modification time (to see that nothing was added or rewritten)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A complete tiny run with the default train.keep_state (false)."""
    out = tmp_path_factory.mktemp("runs") / "done"
    train(load_experiment("tiny", OVERRIDES), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory) -> Path:
    """A complete tiny run that kept its resume state (train.keep_state: true)."""
    out = tmp_path_factory.mktemp("runs") / "kept"
    train(load_experiment("tiny", KEEP), out, show_progress=False)
    return out


def copy_run(src: Path, dst: Path, status: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if status is not None:  # as a run killed or stopped before its end would say
        manifest = json.loads((dst / "manifest.json").read_text())
        (dst / "manifest.json").write_text(json.dumps(manifest | {"status": status}))
    return dst


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A folder this process cannot create files in (root ignores permissions: the immutable flag then)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i: no way to make a read-only folder")
    else:
        folder.chmod(0o555)
    yield folder
    if as_root:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


# ---- item 5: a complete run deletes its resume state ---------------------------------------------------------


def test_complete_run_deletes_its_state_unless_keep_state(done_run, kept_run):
    assert not (done_run / "state").exists() and list((done_run / "checkpoints").glob("step-*"))
    assert (kept_run / "state" / "trainer.json").is_file()
    assert json.loads((done_run / "manifest.json").read_text())["status"] == "complete"


def test_resume_of_a_complete_run_says_so(done_run, tmp_path):
    run_dir = copy_run(done_run, tmp_path / "r")
    before = listing(run_dir)
    result = run("train", "tiny", "--out", str(run_dir), "--resume", *sets(OVERRIDES))
    assert result.exit_code == 0, result.output
    assert "training is complete (3 steps); nothing to resume" in " ".join(result.output.split())
    assert listing(run_dir) == before
    # keep_state only says what is kept: changing it is not a different config
    result = run("train", "tiny", "--out", str(run_dir), "--resume", *sets(KEEP))
    assert result.exit_code == 0, result.output
    msg = one_line_error(run("train", "tiny", "--out", str(run_dir), *sets(OVERRIDES)))
    assert "already holds a complete run" in msg


def test_sweep_resumes_a_trained_run_without_state(done_run, tmp_path):
    run_dir = copy_run(done_run, tmp_path / "r")
    shutil.rmtree(run_dir / "state", ignore_errors=True)
    status, reason = point_status(Point("p", ("p",), 0, (), {}), run_dir, check_config=False)
    assert (status, reason) == ("resume", "trained, not analysed")  # not "new": a plain start would refuse


# ---- partial outputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,message", [
    (["model=no-such-model"], "unknown model 'no-such-model'"),
    (["train.bench_dir=/nonexistent/kdyn-bench"], "/nonexistent/kdyn-bench"),
    (["train.replay.ratio=0.5", "train.replay.corpus=/nonexistent/corpus.jsonl"], "train.replay.corpus"),
])  # fmt: skip
def test_failed_setup_leaves_no_run_folder(tmp_path, bad, message):
    out = tmp_path / "runs" / "r"
    msg = one_line_error(run("train", "tiny", "--out", str(out), *sets(OVERRIDES + bad)))
    assert message in msg
    assert not (tmp_path / "runs").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")  # a folder that existed stays as it was
    result = run("run", "tiny", "--out", str(tmp_path / "mine"), *sets(OVERRIDES + bad))  # after its stage line
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith("error:"), result.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_corrupt_model_safetensors(tiny_lm, tiny_bench, tmp_path):
    folder = tmp_path / "model"
    tiny_lm.model.save_pretrained(folder)
    tiny_lm.tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    out = tmp_path / "p.parquet"
    msg = one_line_error(run("probe", "--model", str(folder), "--bench", str(tiny_bench), "--out", str(out)))
    assert "corrupt or incomplete" in msg and str(folder) in msg and not out.exists()
    msg = one_line_error(run("train", "tiny", "--out", str(tmp_path / "r"), *sets([*OVERRIDES, f"model={folder}"])))
    assert "corrupt or incomplete" in msg and not (tmp_path / "r").exists()


def test_hub_id_without_network_fails_at_once(tiny_bench, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    model = "kdyn-test-org/no-such-model"
    t0 = time.time()
    msg = one_line_error(run("probe", "--model", model, "--bench", str(tiny_bench), "--out", str(tmp_path / "p.parquet")))
    assert time.time() - t0 < 5, "a hub that cannot be reached must not be retried for a minute"
    assert f"'{model}' is not in the local Hugging Face cache and the hub" in msg and "unreachable" in msg
    msg = one_line_error(run("train", "tiny", "--out", str(tmp_path / "r"), *sets([*OVERRIDES, f"model={model}"])))
    assert "unreachable" in msg and not (tmp_path / "r").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    msg = one_line_error(run("probe", "--model", model, "--bench", str(tiny_bench), "--out", str(tmp_path / "p.parquet")))
    assert "HF_HUB_OFFLINE is set" in msg


# ---- read-only outputs: refused before the work --------------------------------------------------------------


def test_read_only_outputs_fail_before_any_work(read_only, tiny_bench, monkeypatch):
    import kdyn.probe.run

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored probes before finding that the output cannot be written")

    monkeypatch.setattr(kdyn.probe.run, "score_probes", no_scoring)
    out = read_only / "p.parquet"
    msg = one_line_error(run("probe", "--model", "tiny-random-llama", "--bench", str(tiny_bench), "--out", str(out)))
    assert f"{read_only} is read-only" in msg
    for target in (read_only, read_only / "run"):
        assert f"{read_only} is read-only" in one_line_error(run("train", "tiny", "--out", str(target), *sets(OVERRIDES)))
    assert f"{read_only} is read-only" in one_line_error(run("bench", "build", "tiny", "--out", str(read_only / "b")))
    assert list(read_only.iterdir()) == []


# ---- analysis inputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("replicates", ["0", "-5"])
def test_bootstrap_must_be_positive(done_run, tmp_path, replicates):
    run_dir = copy_run(done_run, tmp_path / "r")
    msg = one_line_error(run("analyze", str(run_dir), "--bootstrap", replicates))
    assert f"bootstrap replicates must be at least 1, got {replicates}" in msg
    assert not (run_dir / "analysis").exists()


def test_report_recomputes_a_corrupt_analysis_table(done_run, tmp_path):
    run_dir = copy_run(done_run, tmp_path / "r")
    assert run("analyze", str(run_dir), "--bootstrap", "20").exit_code == 0
    corrupt = run_dir / "analysis" / "curves.parquet"
    corrupt.write_bytes(b"not parquet")  # newer than probes.parquet, so the analysis counts as current
    result = run("report", str(run_dir))
    assert result.exit_code == 0, (result.output, result.exception)
    assert pq.read_table(corrupt).num_rows > 0
    assert f"{corrupt} could not be read (corrupt or truncated) and the analysis was recomputed" in (
        run_dir / "report.html").read_text()  # fmt: skip


# ---- resume state: corrupt, or left by a kill ------------------------------------------------------------------


def test_pickle_in_resume_state_is_refused(kept_run, tmp_path):
    run_dir = copy_run(kept_run, tmp_path / "r", status="interrupted")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (run_dir / "state" / "rng.pt").write_bytes(pickle.dumps({"torch": Payload()}))
    before = listing(run_dir)
    msg = one_line_error(run("train", "tiny", "--out", str(run_dir), "--resume", *sets(KEEP)))
    assert "state/rng.pt is not resume state kdyn wrote" in msg and "start over with another --out" in msg
    assert "weights_only" not in msg and not marker.exists()
    assert listing(run_dir) == before  # an earlier run's folder: nothing removed, added or rewritten


def test_kill_between_the_renames_of_a_state_save(kept_run, tmp_path):
    run_dir = copy_run(kept_run, tmp_path / "r", status="running")
    os.replace(run_dir / "state", run_dir / ".state.old")  # atomic_dir: state → .state.old, then tmp → state
    (run_dir / ".state.a1b2c3d4.tmp").mkdir()
    (run_dir / ".state.a1b2c3d4.tmp" / "optimizer.pt").write_bytes(b"half")
    (run_dir / "checkpoints" / ".step-000009.x9y8z7w6.tmp").mkdir()
    msg = one_line_error(run("train", "tiny", "--out", str(run_dir), *sets(KEEP)))
    assert "pass --resume" in msg
    result = run("train", "tiny", "--out", str(run_dir), "--resume", *sets(KEEP))
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert (run_dir / "state" / "trainer.json").is_file()
    assert not list(run_dir.glob(".state*")) and not list((run_dir / "checkpoints").glob(".*"))


def test_kill_during_the_first_state_save(kept_run, tmp_path):
    run_dir = copy_run(kept_run, tmp_path / "r", status="running")
    # what exists when the first probe point has written its parts and is killed inside save_state
    os.replace(run_dir / "state", run_dir / ".state.q1w2e3r4.tmp")
    shutil.rmtree(run_dir / "checkpoints")
    for p in [*run_dir.glob("*.parquet"), *(q for q in run_dir.glob("parts/*/*") if "step-000000" not in q.name)]:
        p.unlink()
    msg = one_line_error(run("train", "tiny", "--out", str(run_dir), "--resume", *sets(KEEP)))
    assert "stopped before its first probe point" in msg and "without --resume" in msg
    assert "before the base model was probed" not in msg
    assert not list(run_dir.glob(".state*"))
    result = run("train", "tiny", "--out", str(run_dir), *sets(KEEP))
    assert result.exit_code == 0, result.output
    assert pq.read_table(run_dir / "probes.parquet").column("step").to_pylist()[-1] > 0
