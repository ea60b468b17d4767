"""The training-set loss measured at every probe point, the base included (eval_loss.parquet), and loss vs
knowledge over all checkpoints with it. The train log's loss is undefined at the base, so without this the
base → first-checkpoint interval was never counted and Spearman lost a checkpoint (issue "Validity", 3)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kdyn.analysis import Bootstrap, Results, analyze, load_run
from kdyn.analysis.loss_knowledge import curves_table, loss_knowledge_table
from kdyn.bench.schema import load_benchmark
from kdyn.errors import KdynError
from kdyn.experiment import load_experiment
from kdyn.io import write_parquet
from kdyn.models import load_model
from kdyn.train import train
from kdyn.train.data import tokenize_documents

BOOT = Bootstrap(replicates=200, seed=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-loss") / "run"
    cfg = load_experiment("tiny", ["train.precision=float32"])  # the by-hand check below is in fp32 on any host
    train(cfg, out, show_progress=False)
    return out


def reference_loss(model_path: str, bench) -> tuple[float, int]:
    """Mean next-token NLL over the documents, each fed alone to a plain HF forward (no kdyn batching)."""
    lm = load_model(model_path)
    docs = tokenize_documents(bench.documents, bench.facts_by_id, lm.tokenizer)
    total, n = 0.0, 0
    with torch.inference_mode():
        for d in docs:
            ids = torch.tensor([d.ids])
            total += float(lm.model.eval()(input_ids=ids, labels=ids).loss) * (len(d.ids) - 1)
            n += len(d.ids) - 1
    return total / n, n


def test_eval_loss_is_the_training_set_loss_of_the_model_at_each_checkpoint(tiny_run):
    table = pq.read_table(tiny_run / "eval_loss.parquet").to_pandas()
    steps = sorted(set(pq.read_table(tiny_run / "probes.parquet").column("step").to_pylist()))
    assert list(table["step"]) == steps and steps[0] == 0 and list(table["epoch"]) == [0.0, 1.0, 2.0]
    bench = load_benchmark(tiny_run / "bench")
    base, n = reference_loss("tiny-random-llama", bench)
    final, _ = reference_loss(str(tiny_run / "checkpoints" / f"step-{steps[-1]:06d}"), bench)
    assert table["tokens"].tolist() == [n] * len(steps)  # every training document, every copy
    assert table["loss"].iloc[0] == pytest.approx(base, rel=1e-4)
    assert table["loss"].iloc[-1] == pytest.approx(final, rel=1e-4)
    assert table["loss"].iloc[-1] < table["loss"].iloc[0]
    assert (table["seconds"] > 0).all()


def test_loss_vs_knowledge_of_a_tiny_run_uses_every_checkpoint_including_the_base(tiny_run):
    a = analyze(tiny_run, bootstrap=200)
    lk, curves = a.tables["loss_knowledge"], a.tables["curves"]
    assert set(lk["loss_source"]) == {"eval_loss"}
    assert set(lk["n_checkpoints"]) == {len(a.results.steps)} == {3}
    assert np.isfinite(curves.loc[curves["step"] == 0, "eval_loss"]).all()
    assert not any("eval_loss.parquet" in note for note in a.summary["notes"])


def test_a_run_made_before_eval_loss_falls_back_to_the_train_log_with_a_reason(tiny_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("checkpoints", "state", "analysis"))
    (old / "eval_loss.parquet").unlink()
    a = analyze(old, bootstrap=200)
    assert set(a.tables["loss_knowledge"]["loss_source"]) == {"train_loss"}
    assert set(a.tables["loss_knowledge"]["n_checkpoints"]) == {2}
    assert any("no eval_loss.parquet" in n and "undefined at the base" in n for n in a.summary["notes"])


def test_duplicate_or_partial_eval_loss(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "state", "analysis"))
    write_parquet(run / "eval_loss.parquet", pa.table({"step": [3, 6], "loss": [2.0, 1.0]}))
    res = load_run(run)
    assert np.isnan(res.eval_loss[0]) and list(res.eval_loss[1:]) == [2.0, 1.0]
    assert any("no training-set loss at step(s) 0" in n for n in res.notes)
    write_parquet(run / "eval_loss.parquet", pa.table({"step": [0, 3, 3], "loss": [3.0, 2.0, 1.0]}))
    with pytest.raises(KdynError, match="duplicate step"):
        load_run(run)


def test_the_base_to_first_interval_counts_by_hand():
    # A = .5, .25, 0, .25 over steps 0..30; measured loss 4, 3, 2, 1 (train log: NaN at the base)
    correct = [[1, 1, 0, 0], [1, 0, 0, 1]]
    res = Results.from_arrays(correct, steps=[0, 10, 20, 30], kind="known", probe_type="qa",
                              loss=np.array([np.nan, 3.0, 2.0, 1.0]), eval_loss=np.array([4.0, 3.0, 2.0, 1.0]))  # fmt: skip
    curves, cache = curves_table(res, BOOT)
    r = loss_knowledge_table(res, cache, BOOT).iloc[0]
    assert r["loss_source"] == "eval_loss" and r["n_checkpoints"] == 4
    # loss fell at every step; accuracy fell 0→10 and 10→20: the base interval is one of them
    assert r["n_loss_fell_acc_fell"] == 2 and list(r["loss_fell_acc_fell_steps"]) == [10, 20]
    # ranks of −loss 1 2 3 4, of A 4 2.5 1 2.5 → rho = −3 / sqrt(5 · 4.5)
    assert r["spearman"] == pytest.approx(-3 / np.sqrt(22.5))
    assert list(curves["eval_loss"]) == [4.0, 3.0, 2.0, 1.0]


def test_eval_pass_runs_in_the_probe_precision_and_restores_the_weights(tiny_run):
    """bf16 probing hosts evaluate the training-set loss with a bf16 copy of the weights (as the probes): close to
    fp32, the fp32 master weights untouched; float32 is the plain fp32 forward."""
    from kdyn.train.probing import eval_batches, eval_pass

    bench = load_benchmark(tiny_run / "bench")
    lm = load_model("tiny-random-llama")
    docs = tokenize_documents(bench.documents, bench.facts_by_id, lm.tokenizer)
    tc = load_experiment("tiny").train
    batches = eval_batches(docs, "first_copy", tc.seq_len, tc.batch_size, lm.tokenizer.pad_token_id)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    fp32, bf16 = eval_pass(lm.model, batches), eval_pass(lm.model, batches, precision="bfloat16")
    after = lm.model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert fp32.loss == pytest.approx(reference_loss("tiny-random-llama", bench)[0], rel=1e-4)
    assert bf16.loss == pytest.approx(fp32.loss, rel=2e-2) and bf16.loss != fp32.loss  # really ran in bf16
    assert bf16.fact_nll.keys() == fp32.fact_nll.keys()


@pytest.mark.parametrize("fact_docs", ["first_copy", "all"])
def test_identical_documents_run_once_and_count_once_per_copy(tiny_run, fact_docs):
    """Copies of a document in one wording are one row weighted by their count: the loss, its token count and
    every fact's NLL equal those of each document on its own row (here: each document in a batch of its own)."""
    from kdyn.train.probing import eval_batches, eval_pass

    bench = load_benchmark(tiny_run / "bench")
    lm = load_model("tiny-random-llama")
    docs = tokenize_documents(bench.documents, bench.facts_by_id, lm.tokenizer)
    docs += [d for d in docs[:3]]  # more copies of three documents: these rows would run twice
    assert len({tuple(d.ids) for d in docs}) < len(docs)
    seq_len = max(len(d.ids) for d in docs)  # a document a row
    batches = eval_batches(docs, fact_docs, seq_len, 4, lm.tokenizer.pad_token_id)
    assert sum(len(b.weights) for b in batches) == len({tuple(d.ids) for d in docs})  # one row per distinct text
    assert sum(sum(b.weights) for b in batches) == len(docs)
    alone = [b for d in docs for b in eval_batches([d], fact_docs, seq_len, 1, lm.tokenizer.pad_token_id)]
    got, want = eval_pass(lm.model, batches), eval_pass(lm.model, alone)
    assert got.tokens == want.tokens == sum(len(d.ids) - 1 for d in docs)
    assert got.loss == pytest.approx(want.loss, rel=1e-5)
    assert got.fact_nll.keys() == want.fact_nll.keys() and got.fact_nll
    for fid, (nll, n) in want.fact_nll.items():
        assert got.fact_nll[fid][1] == n and got.fact_nll[fid][0] == pytest.approx(nll, rel=1e-5)
