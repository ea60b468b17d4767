"""`KdynProbeCallback`: kdyn's in-loop probing inside your own `transformers.Trainer` (or a TRL trainer).

    from kdyn.train import KdynProbeCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[KdynProbeCallback("bench/", "runs/mine", tokenizer)])
    trainer.train()      # runs/mine/probes.parquet (+ fact_loss, eval_loss): step 0, every epoch, every N steps

Rows are scored exactly as `kdyn train` scores them (kdyn.train.probing) and written the same way
(parts, then the top-level parquet rebuilt atomically), so `kdyn analyze runs/mine` works on the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kdyn.bench.schema import Benchmark, load_benchmark
from kdyn.probe.results import SCHEMA as PROBE_SCHEMA
from kdyn.probe.scorer import ScoreConfig, probe_precision
from kdyn.train.checkpoints import RunStore
from kdyn.train.data import tokenize_documents
from kdyn.train.probing import EVAL_LOSS_SCHEMA, FACT_LOSS_SCHEMA, eval_batches, eval_pass, probe_tables, score_sharded
from kdyn.train.trainlog import TRAIN_LOG_SCHEMA


class KdynProbeCallback(TrainerCallback):
    def __init__(self, bench: str | Path | Benchmark, out: str | Path, tokenizer: PreTrainedTokenizerBase,
                 score: ScoreConfig | None = None, every_n_steps: int = 0, fact_loss_docs: str = "first_copy",
                 seq_len: int = 256, batch_size: int = 8):  # fmt: skip
        self.bench = bench if isinstance(bench, Benchmark) else load_benchmark(bench)
        self.store = RunStore(Path(out))
        self.tok = tokenizer
        self.score = score or ScoreConfig()
        self.every = every_n_steps
        docs = tokenize_documents(self.bench.documents, self.bench.facts_by_id, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eval_batches = eval_batches(docs, fact_loss_docs, seq_len, batch_size, pad)
        self.base_correct: dict[str, bool] | None = None
        self.last_step = -1

    def _probe(self, state: TrainerState, model: Any) -> None:
        if model is None or state.global_step == self.last_step:
            return
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if dist else (0, 1)
        rows = score_sharded(model, self.tok, self.bench.probes, self.score, rank, world)
        ev = eval_pass(model, self.eval_batches, rank, world, probe_precision(self.score, model))
        if state.global_step == 0:
            self.base_correct = {r["probe_id"]: bool(r["correct"]) for r in rows}
        if state.is_world_process_zero:
            epoch = float(state.epoch or 0.0)
            probes, facts, loss = probe_tables(rows, ev, state.global_step, round(epoch, 6), self.base_correct)
            self.store.write_part("probes", state.global_step, probes)
            self.store.write_part("fact_loss", state.global_step, facts)
            self.store.write_part("eval_loss", state.global_step, loss)
            log = [{"step": h["step"], "epoch": h.get("epoch"), "loss": h["loss"], "lr": h.get("learning_rate"),
                    "grad_norm": h.get("grad_norm"), "tokens": None, "seconds": None}
                   for h in state.log_history if "loss" in h and self.last_step < h["step"] <= state.global_step]  # fmt: skip
            import pyarrow as pa

            self.store.write_part("train_log", state.global_step, pa.Table.from_pylist(log, schema=TRAIN_LOG_SCHEMA))
            self.store.rebuild({"probes": PROBE_SCHEMA, "fact_loss": FACT_LOSS_SCHEMA, "eval_loss": EVAL_LOSS_SCHEMA,
                                "train_log": TRAIN_LOG_SCHEMA})  # fmt: skip
        self.last_step = state.global_step

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kw: Any) -> None:
        if state.global_step == 0:
            self._probe(state, model)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kw: Any) -> None:
        if self.every and state.global_step % self.every == 0:
            self._probe(state, model)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kw: Any) -> None:
        self._probe(state, model)
