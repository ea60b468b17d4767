"""The CPT engine on the real SmolLM2-135M-Instruct: two short epochs on a handful of fictional facts.

What must hold on the real model (not only on tiny-random-llama): the run directory is complete, the training
documents' object tokens become much more likely (per-fact NLL falls for every new fact), the saved checkpoint
reloads to the model that was probed, and the last probe pass sees the facts it was trained on.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
import torch

from kdyn.experiment import load_experiment
from kdyn.probe.scorer import score_probes
from kdyn.bench.schema import load_benchmark
from kdyn.train import train
from transformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.integration

OVERRIDES = [
    "bench.people=2", "bench.organisations=1", "bench.related=0", "bench.updated=0", "bench.known=4",
    "bench.exposure.mode=fixed", "bench.exposure.copies=4", "bench.probes.compositional_max=1",
    "bench.probes.arithmetic_one_step=2", "bench.probes.arithmetic_multi_step=0",
    "train.epochs=2", "train.batch_size=4", "train.optimizer.lr=3.0e-4", "train.precision=float32",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_experiment("quickstart", OVERRIDES)
    out = tmp_path_factory.mktemp("smollm2") / "run"
    result = train(cfg, out, show_progress=False)
    return cfg, out, result


def test_run_directory_is_complete(run):
    cfg, out, result = run
    assert result["status"] == "complete"
    probes = pq.read_table(out / "probes.parquet").to_pylist()
    n = sum(1 for _ in open(out / "bench" / "probes.jsonl"))
    assert sorted({r["step"] for r in probes})[0] == 0 and len(probes) == 3 * n
    log = pq.read_table(out / "train_log.parquet").to_pylist()
    assert len(log) == result["steps"] and all(0 < r["loss"] < 20 for r in log)


def test_fact_nll_falls_for_every_new_fact(run):
    _, out, _ = run
    rows = pq.read_table(out / "fact_loss.parquet").to_pylist()
    steps = sorted({r["step"] for r in rows})
    first = {r["fact_id"]: r["nll"] for r in rows if r["step"] == steps[0]}
    last = {r["fact_id"]: r["nll"] for r in rows if r["step"] == steps[-1]}
    assert first and set(first) == set(last)
    assert all(last[f] < first[f] for f in first), {f: (first[f], last[f]) for f in first}
    assert sum(last.values()) / len(last) < 0.5 * sum(first.values()) / len(first)


def test_checkpoint_reloads_to_the_probed_model(run):
    _, out, _ = run
    final = max((out / "checkpoints").iterdir())
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(final)
    bench = load_benchmark(out / "bench")
    cloze = [p for p in bench.probes if p.probe_type == "cloze"]
    rescored = score_probes(model, tok, cloze)
    step = int(final.name.split("-")[1])
    stored = {r["probe_id"]: r for r in pq.read_table(out / "probes.parquet").to_pylist() if r["step"] == step}
    for r in rescored:
        assert r["logprob"] == pytest.approx(stored[r["probe_id"]]["logprob"], abs=1e-3)
        assert r["greedy"] == stored[r["probe_id"]]["greedy"]
