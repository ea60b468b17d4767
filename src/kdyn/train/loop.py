"""The training loop — the only one in kdyn. Continual pre-training with probing at step 0, every epoch
end and optionally every N steps; each probe point writes result parts, a checkpoint and the resume state.

    loop = Loop(cfg, run_dir, bench, accelerator, store, reporter)   (kdyn.train.run.train builds these)
    loop.restore(resume_state)                                       (on --resume)
    loop.fit(reporter, resumed=True)

Per optimizer step: forward/backward over `grad_accum` micro-batches (DDP gradient sync on the last),
+ KL terms, SAM's second pass if on, gradient clipping, optimizer and schedule step.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import pyarrow as pa
import torch
from accelerate import Accelerator

from kdyn.bench.schema import Benchmark
from kdyn.config import to_dict
from kdyn.experiment import ExperimentConfig
from kdyn.probe.prompts import build_rows
from kdyn.probe.results import SCHEMA as PROBE_SCHEMA
from kdyn.probe.scorer import probe_precision
from kdyn.train.checkpoints import RunStore, set_rng_state
from kdyn.train.data import Batch, TokDoc, epoch_order, make_batches, shard, text_docs, tokenize_documents
from kdyn.train.flops import matmul_peak, model_flops_per_token
from kdyn.train.loss import next_token_loss
from kdyn.train.probing import EVAL_LOSS_SCHEMA, FACT_LOSS_SCHEMA, eval_batches, eval_pass, probe_tables, score_sharded
from kdyn.train.progress import Reporter, log_line
from kdyn.train.session import load_trainable, make_optimizer, make_scheduler
from kdyn.train.strategies.adaptive import learned_entities
from kdyn.train.strategies.kl import KLReferences
from kdyn.train.strategies.replay import epoch_sample, replay_pool
from kdyn.train.strategies.sam import SAM
from kdyn.train.trainlog import TRAIN_LOG_SCHEMA

SCHEMAS = {"probes": PROBE_SCHEMA, "fact_loss": FACT_LOSS_SCHEMA, "eval_loss": EVAL_LOSS_SCHEMA,
           "train_log": TRAIN_LOG_SCHEMA}  # fmt: skip


class Loop:
    def __init__(self, cfg: ExperimentConfig, bench: Benchmark, accelerator: Accelerator, store: RunStore):
        self.cfg, self.tc, self.bench, self.acc, self.store = cfg, cfg.train, bench, accelerator, store
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.lm = load_trainable(cfg.model, self.tc, accelerator.device)
        self.tok = self.lm.tokenizer
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.facts = bench.facts_by_id
        self.docs = tokenize_documents(bench.documents, self.facts, self.tok)
        self.replay: list[TokDoc] = []
        if self.tc.replay.ratio > 0:
            texts = replay_pool(store.root / "replay.jsonl", self.tc.replay, self.lm.model, self.tok, self.tc.seed) \
                if accelerator.is_main_process else []  # fmt: skip
            accelerator.wait_for_everyone()
            texts = texts or replay_pool(store.root / "replay.jsonl", self.tc.replay, self.lm.model, self.tok, self.tc.seed)
            self.replay = text_docs(texts, self.tok, "replay")
        # one pass over every training document per probe point: training-set loss + per-fact NLL
        self.eval_batches = eval_batches(self.docs, self.tc.probing.fact_loss, self.tc.seq_len, self.tc.batch_size, self.pad_id)
        # packing differs by epoch (order), so count each epoch's steps (adaptive exposure: an upper bound)
        self.total_steps = sum(len(self.groups(e, set())) for e in range(self.tc.epochs))
        self.kl = KLReferences(self.tc.kl, self.lm.model, self.tc.lora.enabled)
        optimizer = make_optimizer(self.lm.model, self.tc.optimizer)
        self.scheduler = make_scheduler(optimizer, self.total_steps, self.tc.schedule)
        self.model, self.optimizer = accelerator.prepare(self.lm.model, optimizer)
        # train.compile: inductor fuses the elementwise work between the matmuls (norms, rotary, SiLU, casts) of the
        # training step; probes, the training-set loss and KL references call the eager module
        self.train_forward = torch.compile(self.model) if self.tc.compile else self.model
        self.params = [p for p in self.lm.model.parameters() if p.requires_grad]
        self.sam = SAM(self.params, self.tc.sam) if self.tc.sam.rho > 0 else None
        self.flops_per_token = model_flops_per_token(self.lm.model, self.tc.seq_len)
        self.peak = 0.0
        # progress of the run (what the resume state records)
        self.step, self.epoch, self.next_group = 0, 0, 0
        self.learned_last: set[str] = set()  # entities learned at the last probe
        self.learned_epoch: set[str] = set()  # entities left out of the current epoch
        self.base_correct: dict[str, bool] | None = None
        self.log_rows: list[dict[str, Any]] = []
        # time the run took, summed over its sessions (a resumed run adds what the state it resumed from recorded;
        # work lost after that state is redone and counted once)
        self.probe_seconds = self.train_seconds = 0.0
        self.prior_seconds = 0.0  # wall seconds of the sessions before this one, up to the resume state
        self.started = time.time()  # this session's start (kdyn.train.run sets it to the run's)
        self.reporter: Reporter | None = None

    # ---- data -------------------------------------------------------------------------------------
    def epoch_docs(self, epoch: int, skip: set[str]) -> list[TokDoc]:
        docs = [d for d in self.docs if d.entity_id not in skip]
        if self.replay:
            docs += [self.replay[i] for i in epoch_sample(len(self.replay), len(docs), self.tc.replay.ratio, self.tc.seed, epoch)]
        return [docs[i] for i in epoch_order(len(docs), self.tc.seed, epoch)]

    def groups(self, epoch: int, skip: set[str]) -> list[list[Batch]]:
        batches = make_batches(self.epoch_docs(epoch, skip), self.tc.seq_len, self.tc.batch_size, self.pad_id)
        mine = shard(batches, self.rank, self.world)
        return [mine[i : i + self.tc.grad_accum] for i in range(0, len(mine), self.tc.grad_accum)]

    # ---- one optimizer step -----------------------------------------------------------------------
    def accumulate(self, group: list[Batch]) -> tuple[float, int]:
        total, tokens = 0.0, 0
        dev = self.acc.device
        for i, b in enumerate(group):
            sync = contextlib.nullcontext() if i == len(group) - 1 else self.acc.no_sync(self.model)
            with sync:
                ids, mask, labels = b.input_ids.to(dev), b.attention_mask.to(dev), b.labels.to(dev)
                # no attention mask: rows are padded at the end only (data.collate) and attention is causal, so
                # no real token sees a pad; without one SDPA runs its causal kernel (pads are out of loss and KL)
                logits = self.train_forward(input_ids=ids).logits
                lm_loss = next_token_loss(logits, labels)
                loss = lm_loss + self.kl.loss(logits, ids, mask) if self.kl.active else lm_loss
                self.acc.backward(loss / len(group))
            total += lm_loss.detach().item() / len(group)
            tokens += b.tokens
        return total, tokens

    def train_step(self, group: list[Batch]) -> tuple[float, float, int]:
        self.model.train()
        loss, tokens = self.accumulate(group)
        if self.sam is not None:
            self.sam.perturb()
            self.optimizer.zero_grad(set_to_none=True)
            self.accumulate(group)
            self.sam.restore()
        max_norm = self.tc.optimizer.max_grad_norm
        norm = self.acc.clip_grad_norm_(self.params, max_norm if max_norm > 0 else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats = torch.tensor([loss, float(tokens)], dtype=torch.float64, device=self.acc.device)
        if self.world > 1:
            stats = self.acc.reduce(stats, "sum")
            stats[0] /= self.world
        return float(stats[0]), float(norm), int(stats[1])

    # ---- probe points -----------------------------------------------------------------------------
    def probe_point(self, epoch_float: float) -> None:
        t0 = time.time()
        model = self.acc.unwrap_model(self.model)
        rep = self.reporter
        if rep is not None:
            rep.start_probing(len(build_rows(self.bench.probes, self.tok)) // self.world, f"probing@{self.step}")
        rows = score_sharded(model, self.tok, self.bench.probes, self.cfg.probe, self.rank, self.world,
                             progress=rep.advance_probing if rep is not None else None)  # fmt: skip
        ev = eval_pass(model, self.eval_batches, self.rank, self.world, probe_precision(self.cfg.probe, model))
        if self.step == 0:
            self.base_correct = {r["probe_id"]: bool(r["correct"]) for r in rows}
        if self.tc.adaptive.enabled:
            self.learned_last = learned_entities(rows, self.facts, self.tc.adaptive)
        if self.acc.is_main_process:
            probes, facts, loss = probe_tables(rows, ev, self.step, round(epoch_float, 6), self.base_correct)
            self.store.write_part("probes", self.step, probes)
            self.store.write_part("fact_loss", self.step, facts)
            self.store.write_part("eval_loss", self.step, loss)
            self.store.write_part("train_log", self.step, pa.Table.from_pylist(self.log_rows, schema=TRAIN_LOG_SCHEMA))
            if self.wants_checkpoint(epoch_float):
                self.store.save_checkpoint(model, self.tok, self.step, to_dict(self.cfg), self.tc.checkpoints.keep_last)
            self.commit()
            self.store.rebuild(SCHEMAS)
        self.log_rows = []
        self.acc.wait_for_everyone()
        self.probe_seconds += time.time() - t0
        groups = accuracy_groups(rows)
        if self.tc.report_to:
            self.acc.log({f"probe/{kind}/{ptype}": v for (kind, ptype), v in groups.items()}, step=self.step)
        if rep is not None:
            rep.end_probing()
            acc = {k: sum(bool(r["correct"]) for r in rows if r["kind"] == k) / max(1, sum(r["kind"] == k for r in rows))
                   for k in ("new", "related", "updated", "known")}  # fmt: skip
            rep.print(f"probe step {self.step} (epoch {epoch_float:.2f}) | " + " | ".join(f"{k} {v:.3f}" for k, v in acc.items())
                      + f" | train-set loss {ev.loss:.4f} ({ev.seconds:.1f} s) | {time.time() - t0:.0f} s")  # fmt: skip

    def wants_checkpoint(self, epoch_float: float) -> bool:
        ck = self.tc.checkpoints
        if not ck.save or self.step == 0:
            return False
        if epoch_float != int(epoch_float):  # a step-level point
            return ck.every_epochs == 1
        return int(epoch_float) % ck.every_epochs == 0 or int(epoch_float) == self.tc.epochs

    def commit(self) -> None:
        """Write the resume state for the current point (main process)."""
        trainer = {"step": self.step, "epoch": self.epoch, "next_group": self.next_group,
                   "learned_last": sorted(self.learned_last), "learned_epoch": sorted(self.learned_epoch),
                   "probe_seconds": self.probe_seconds, "train_seconds": self.train_seconds, "seconds": self.seconds()}  # fmt: skip
        model = self.acc.unwrap_model(self.model)
        tensors = {"trainable": {n: p for n, p in model.named_parameters() if p.requires_grad}}
        previous = self.kl.previous_state()
        if previous is not None:
            tensors["previous_epoch"] = previous
        self.store.save_state(trainer, self.optimizer, self.scheduler, tensors)

    def restore(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.next_group = state["step"], state["epoch"], state["next_group"]
        self.learned_last, self.learned_epoch = set(state["learned_last"]), set(state["learned_epoch"])
        self.probe_seconds = state.get("probe_seconds", 0.0)
        self.train_seconds, self.prior_seconds = state.get("train_seconds", 0.0), state.get("seconds", 0.0)
        model = self.acc.unwrap_model(self.model)
        weights = self.store.load_tensor_file("trainable.safetensors")
        missing = set(weights) - {n for n, _ in model.named_parameters()}
        if missing:
            why = f"it has weights the model lacks: {sorted(missing)[:3]}"
            raise self.store.not_resume_state("trainable.safetensors", why)
        model.load_state_dict(weights, strict=False)
        if self.kl.previous is not None:
            self.kl.load_previous(self.store.load_tensor_file("previous_epoch.safetensors"))
        loaders = {"optimizer.pt": self.optimizer.load_state_dict, "scheduler.pt": self.scheduler.load_state_dict,
                   "rng.pt": set_rng_state}  # fmt: skip
        for name, load in loaders.items():
            data = self.store.load_tensor_file(name)
            try:
                load(data)
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError):
                raise self.store.not_resume_state(name, "its contents do not fit this run") from None
        base = [r for r in self.store.read_parts("probes") if r["step"] == 0]
        self.base_correct = {r["probe_id"]: bool(r["correct"]) for r in base}

    # ---- the loop ---------------------------------------------------------------------------------
    def fit(self, reporter: Reporter, resumed: bool = False) -> dict[str, Any]:
        """Train to the last epoch; `resumed`: `restore` has loaded a resume point (else probe the base model first)."""
        self.reporter = reporter if self.acc.is_main_process else None
        if resumed:
            reporter.print(f"resuming at step {self.step} (epoch {self.epoch}, group {self.next_group})")
        else:
            self.probe_point(0.0)
        self.peak_dtype = torch.bfloat16 if self.acc.mixed_precision == "bf16" else torch.float32
        self.peak = matmul_peak(self.peak_dtype, device=str(self.acc.device))  # MFU against the device the run trains on
        every = self.tc.probing.every_n_steps
        tokens_total = 0  # this session's
        while self.epoch < self.tc.epochs:
            if self.next_group == 0:
                self.learned_epoch = set(self.learned_last)
            groups = self.groups(self.epoch, self.learned_epoch)
            if not groups:  # adaptive exposure left nothing to train on: no step, so no new probe point
                reporter.print(f"epoch {self.epoch + 1}: every entity counts as learned; nothing to train")
                self.epoch += 1
                continue
            for gi in range(self.next_group, len(groups)):
                t0 = time.time()
                loss, norm, tokens = self.train_step(groups[gi])
                dt = time.time() - t0
                self.train_seconds += dt
                tokens_total += tokens
                self.step += 1
                self.next_group = gi + 1
                epoch_float = self.epoch + self.next_group / len(groups)
                lr = self.scheduler.get_last_lr()[0]
                row = {"step": self.step, "epoch": round(epoch_float, 6), "loss": loss, "lr": lr, "grad_norm": norm,
                       "tokens": tokens, "seconds": dt}  # fmt: skip
                self.log_rows.append(row)
                if self.step % self.tc.log_every == 0:
                    tok_s = tokens / max(dt, 1e-9)
                    flops = tok_s * self.flops_per_token / self.world
                    if flops > self.peak:  # the peak was measured on a busier machine than now: measure it again, keep the higher
                        self.peak = max(self.peak, matmul_peak.__wrapped__(self.peak_dtype, device=str(self.acc.device)))
                    mfu = flops / max(self.peak, 1.0)
                    reporter.print(log_line(self.step, self.total_steps, epoch_float, loss, lr, norm, tok_s, mfu))
                    self.acc.log({"train/loss": loss, "train/lr": lr, "train/grad_norm": norm, "train/tok_s": tok_s}, step=self.step)
                reporter.at(self.step, epoch_float)
                if every and self.step % every == 0 and self.next_group < len(groups):
                    self.probe_point(epoch_float)
            self.epoch += 1
            self.next_group = 0
            self.kl.end_epoch()
            self.probe_point(float(self.epoch))
        return {"steps": self.step, "train_seconds": self.train_seconds, "probe_seconds": self.probe_seconds, "tokens": tokens_total}

    def seconds(self) -> float:
        """Wall seconds the run has taken so far, over all its sessions."""
        return self.prior_seconds + time.time() - self.started


def accuracy_groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """Accuracy per (kind, probe type) of one probe pass, for the trackers."""
    tally: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        tally.setdefault((r["kind"], r["probe_type"]), []).append(int(bool(r["correct"])))
    return {key: sum(v) / len(v) for key, v in sorted(tally.items())}
