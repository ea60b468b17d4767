"""`--report-to tensorboard|mlflow|wandb`: each tracker records the training loss and the probe accuracies,
offline, under RUN/trackers/ (nothing leaves the machine unless the user's environment says so)."""

from __future__ import annotations

import os

import pytest

from kdyn.experiment import load_experiment
from kdyn.train import train


ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE")


@pytest.fixture
def offline_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    for name in ENV:
        os.environ.pop(name, None)  # train() sets them for the process; do not leak into other tests


def tiny_run(tmp_path, tracker):
    cfg = load_experiment("tiny", ["train.epochs=1"])
    out = tmp_path / tracker
    train(cfg, out, report_to=[tracker], show_progress=False)
    return out / "trackers"


def test_tensorboard_records_loss_and_probe_accuracy(tmp_path, offline_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tiny_run(tmp_path, "tensorboard")
    events = list(root.rglob("events.out.tfevents.*"))
    assert events, "no tensorboard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "probe/new/cloze" in tags
    assert [e.step for e in acc.Scalars("probe/new/cloze")][0] == 0  # the base model is logged too


def test_wandb_runs_offline_beside_the_run(tmp_path, offline_env):
    root = tiny_run(tmp_path, "wandb")
    runs = list(root.rglob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb")), "no offline wandb run under RUN/trackers"


def test_mlflow_writes_a_local_store(tmp_path, offline_env):
    import mlflow

    root = tiny_run(tmp_path, "mlflow")
    store = root / "mlruns"
    assert store.is_dir()
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    exps = [e for e in client.search_experiments() if e.name == "tiny"]
    (run,) = client.search_runs([exps[0].experiment_id])
    assert "train/loss" in run.data.metrics and "probe/new/cloze" in run.data.metrics
