"""Every strategy trains tiny-random-llama for 2 epochs and writes the run directory DESIGN.md describes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from kdyn.experiment import load_experiment
from kdyn.probe.results import SCHEMA
from kdyn.train import train

STRATEGIES = {
    "full": [],
    "lora": ["train.lora.enabled=true", "train.lora.r=4"],
    "lora-embeddings": ["train.lora.enabled=true", "train.lora.train_embeddings=true"],
    "replay-generated": ["train.replay.ratio=0.5", "train.replay.pool=4", "train.replay.max_new_tokens=16"],
    "kl-base": ["train.kl.base=0.5"],
    "kl-previous": ["train.kl.previous_epoch=0.5", "train.lora.enabled=true"],
    "sam": ["train.sam.rho=0.05"],
    "formats": ["train.augment.formats=[prose, json, qa]"],
    "paraphrase": ["train.augment.paraphrases=3"],
    "adaptive": ["train.adaptive.enabled=true", "train.adaptive.threshold=0.5"],
    "every-n-steps": ["train.probing.every_n_steps=2", "train.grad_accum=2", "train.batch_size=1", "train.schedule.kind=linear"],
}


def run(tmp_path, name, overrides):
    cfg = load_experiment("tiny", overrides)
    out = tmp_path / name
    return cfg, out, train(cfg, out, show_progress=False)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_writes_the_run_directory(tmp_path, name):
    cfg, out, result = run(tmp_path, name, STRATEGIES[name])
    assert result["status"] == "complete"
    probes = pq.read_table(out / "probes.parquet")
    assert probes.schema.names == SCHEMA.names
    n_probes = sum(1 for _ in open(out / "bench" / "probes.jsonl"))
    steps = sorted(set(probes.column("step").to_pylist()))
    epochs = sorted(set(probes.column("epoch").to_pylist()))
    assert steps[0] == 0 and probes.num_rows == n_probes * len(steps)
    assert {0.0, 1.0, 2.0} <= set(epochs)
    log = pq.read_table(out / "train_log.parquet").to_pylist()
    assert [r["step"] for r in log] == list(range(1, result["steps"] + 1))
    assert all(r["loss"] > 0 and r["tokens"] > 0 for r in log)
    facts = pq.read_table(out / "fact_loss.parquet")
    assert sorted(set(facts.column("step").to_pylist())) == steps
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["strategy"] == cfg.train.strategy
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == [f"step-{s:06d}" for s in steps[1:]]
    files = {p.name for p in (out / "checkpoints" / ckpts[-1]).iterdir()}
    if cfg.train.lora.enabled:
        assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    else:
        assert "model.safetensors" in files
    assert "kdyn_config.yaml" in files


def test_every_n_steps_probes_mid_epoch(tmp_path):
    _, out, _ = run(tmp_path, "n", STRATEGIES["every-n-steps"])
    epochs = sorted(set(pq.read_table(out / "probes.parquet").column("epoch").to_pylist()))
    assert any(0 < e < 1 for e in epochs) and any(1 < e < 2 for e in epochs)


def test_adaptive_exposure_drops_learned_entities(tmp_path):
    _, out, result = run(tmp_path, "adaptive", ["train.adaptive.enabled=true", "train.adaptive.threshold=0.0"])
    log = pq.read_table(out / "train_log.parquet").to_pylist()
    assert all(r["epoch"] <= 1.0 for r in log)  # every entity "learned" at threshold 0: epoch 2 has nothing left


def test_augmentation_sets_bench_fields(tmp_path):
    cfg = load_experiment("tiny", STRATEGIES["formats"] + STRATEGIES["paraphrase"])
    assert cfg.bench.formats == ["prose", "json", "qa"] and cfg.bench.templates_per_fact == 3
    assert cfg.train.strategy == "full+formats+paraphrase"


def test_replay_reads_a_user_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"body": f"General text number {i}."}) + "\n" for i in range(5)))
    _, out, _ = run(tmp_path, "replay", ["train.replay.ratio=1.0", f"train.replay.corpus={corpus}", "train.replay.text_field=body"])
    replay = [json.loads(line)["text"] for line in open(out / "replay.jsonl")]
    assert replay[0] == "General text number 0." and len(replay) == 5


def test_keep_last_checkpoint(tmp_path):
    _, out, _ = run(tmp_path, "keep", ["train.checkpoints.keep_last=1", "train.epochs=3"])
    assert len(list((out / "checkpoints").iterdir())) == 1


def test_checkpoint_every_n_epochs_keeps_the_last(tmp_path):
    _, out, result = run(tmp_path, "every", ["train.checkpoints.every_epochs=2", "train.epochs=3"])
    steps = sorted({r["step"] for r in pq.read_table(out / "probes.parquet").to_pylist()})  # 0, e1, e2, e3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"step-{s:06d}" for s in (steps[2], steps[3])]
