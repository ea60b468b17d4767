"""`KdynProbeCallback` inside TRL's `SFTTrainer` (trl is a dev dependency), as inside `transformers.Trainer`
(tests/test_train_distributed.py): probes at step 0 and every epoch, analysable like a kdyn run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from kdyn.analysis import analyze
from kdyn.bench.schema import load_benchmark
from kdyn.models import load_model
from kdyn.train import KdynProbeCallback

trl = pytest.importorskip("trl", reason="trl is a dev dependency (pip install -e .[dev])")


def test_callback_inside_sft_trainer(tmp_path, tiny_bench):
    from datasets import Dataset

    lm = load_model("tiny-random-llama")
    bench = load_benchmark(tiny_bench)
    data = Dataset.from_list([{"text": d.text} for d in bench.documents])
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), num_train_epochs=2, per_device_train_batch_size=4,
                         max_length=256, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                         dataset_text_field="text", packing=False)  # fmt: skip
    cb = KdynProbeCallback(bench, tmp_path / "run", lm.tokenizer)
    trl.SFTTrainer(model=lm.model, args=args, train_dataset=data, processing_class=lm.tokenizer, callbacks=[cb]).train()
    probes = pq.read_table(tmp_path / "run" / "probes.parquet").to_pandas()
    assert sorted(probes["epoch"].unique()) == [0.0, 1.0, 2.0]
    assert len(probes) == 3 * len(bench.probes)
    result = analyze(tmp_path / "run")
    assert (result.out_dir / "transitions.parquet").is_file()
