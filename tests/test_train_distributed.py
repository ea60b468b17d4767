"""The distributed path on CPU: `torchrun --nproc_per_node 2 -m kdyn train` (gloo, world size 2); only
rank 0 writes; probing is sharded across the ranks and gathered. Also the TrainerCallback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch
from transformers import Trainer, TrainingArguments

from kdyn.bench.schema import load_benchmark
from kdyn.train import KdynProbeCallback


def test_torchrun_two_cpu_processes(tmp_path):
    """`kdyn run` (train → analyze → report) under torchrun: both ranks train, rank 0 alone writes and reports."""
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else shutil.which("torchrun"), "--nproc_per_node", "2", "-m", "kdyn",
           "run", "tiny", "--out", str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run: ") == 1 and done.stdout.count("report: ") == 1  # rank 0 only
    assert done.stdout.count("analysing the run") == 1
    assert (tmp_path / "ddp" / "report.html").stat().st_size > 0 and (tmp_path / "ddp" / "analysis" / "summary.json").exists()
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete"
    probes = pq.read_table(tmp_path / "ddp" / "probes.parquet")
    n = sum(1 for _ in open(tmp_path / "ddp" / "bench" / "probes.jsonl"))
    assert probes.num_rows == 3 * n and len(set(probes.column("probe_id").to_pylist())) == n
    assert not list((tmp_path / "ddp").glob(".*.tmp"))


class Docs(torch.utils.data.Dataset):
    def __init__(self, texts, tokenizer):
        self.items = [tokenizer(t, truncation=True, max_length=256)["input_ids"] for t in texts]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        ids = torch.tensor(self.items[i])
        return {"input_ids": ids, "labels": ids}


def test_trainer_callback_probes_a_users_trainer(tmp_path, tiny_lm, tiny_bench):
    from kdyn.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread (no OpenMP spin-waits on a busy 2-core machine)
    request_cleanup = lambda: torch.set_num_threads(threads)  # noqa: E731
    lm = load_model("tiny-random-llama")
    bench = load_benchmark(tiny_bench)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=1,
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True)  # fmt: skip
    cb = KdynProbeCallback(bench, tmp_path / "run", lm.tokenizer, every_n_steps=10)
    Trainer(model=lm.model, args=args, train_dataset=Docs([d.text for d in bench.documents], lm.tokenizer), callbacks=[cb]).train()
    probes = pq.read_table(tmp_path / "run" / "probes.parquet").to_pandas()
    steps = sorted(probes["step"].unique())
    assert steps[0] == 0 and len(probes) == len(steps) * len(bench.probes)
    assert {0.0, 1.0, 2.0} <= set(probes["epoch"]) and 10 in steps
    facts = pq.read_table(tmp_path / "run" / "fact_loss.parquet").to_pandas()
    assert sorted(facts["step"].unique()) == steps
    request_cleanup()
