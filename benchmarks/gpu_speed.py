"""Speed at Llama-3.2-1B shape: the sections peak, train_throughput, probing and eap_ig of gpu_check.py.

The model is a LlamaConfig at the shape with random weights (seed 0; real weights do not travel to the device
machine), saved once as a local folder in bf16 with the carried tokenizer, so kdyn loads it the way it loads any
local model: fp32 weights, bf16 autocast where the precision says so. The tokenizer is SmolLM2's (49k tokens, ids
below the model's 128k vocab), so prompts and documents have realistic token counts.

MFU = tokens/s × kdyn.train.flops.model_flops_per_token / the best measured bf16 matmul rate (the peak section).
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from gpu_check import Ctx

GOALS = {"train_mfu_pct": 40.0, "train_vs_trainer": 1.3, "eap_ig_seconds": 30.0}


def matmul_rate(ctx: Ctx, dtype: torch.dtype) -> tuple[float, float]:
    """(best, median) dense matmul FLOP/s for `dtype` on the device."""
    if ctx.dev.type != "cuda":
        from kdyn.train.flops import matmul_peak

        best = matmul_peak(dtype, size=512, seconds=0.2)  # small: bf16 is emulated, 1 GFLOP/s, on AVX2-only CPUs
        return best, best
    n = 8192
    a, b = torch.randn(n, n, device=ctx.dev, dtype=dtype), torch.randn(n, n, device=ctx.dev, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.mm(a, b)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / min(times), 2 * n**3 / statistics.median(times)


def precision(ctx: Ctx) -> str:
    return "float32" if ctx.dry else "bfloat16"  # the dry run's CPU may be AVX2-only, where bf16 is emulated


def tokenizer(ctx: Ctx) -> Any:
    from kdyn.models.tiny import byte_tokenizer
    from transformers import AutoTokenizer

    if ctx.tokenizer is None:
        return byte_tokenizer()
    if not (ctx.tokenizer / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"no tokenizer in {ctx.tokenizer}: run `benchmarks/gpu_check.sh --prepare` on a machine "
                                "with kdyn installed and carry benchmarks/gpu_assets (docs/gpu.md)")  # fmt: skip
    return AutoTokenizer.from_pretrained(ctx.tokenizer)


def model_folder(ctx: Ctx) -> Path:
    """The shape's random-init model as a local HF folder (built once per check)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = ctx.work / "model"
    if (folder / "config.json").is_file():
        return folder
    s, tok = ctx.shape, tokenizer(ctx)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         max_position_embeddings=max(4096, s.seq_len), rope_theta=500000.0, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(ctx.dev):  # random init on the GPU: seconds instead of a minute on the CPU
        model = LlamaForCausalLM(config)
    model.to("cpu", torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    ctx.free()
    return folder


class _Rows(torch.utils.data.Dataset):
    """kdyn's packed rows, one item per row, for the Trainer."""

    def __init__(self, batches: list[Any]):
        self.rows = [(b.input_ids[i], b.labels[i], b.attention_mask[i]) for b in batches for i in range(len(b.input_ids))]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, labels, mask = self.rows[i]
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([x[k] for x in items]) for k in items[0]}  # kdyn's rows in a batch share one width


def train_section(ctx: Ctx) -> dict[str, Any]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from kdyn.bench.schema import load_benchmark
    from kdyn.experiment import load_experiment
    from kdyn.train.checkpoints import RunStore
    from kdyn.train.flops import model_flops_per_token
    from kdyn.train.loop import Loop
    from kdyn.train.session import load_trainable, make_accelerator

    s, prec, folder = ctx.shape, precision(ctx), model_folder(ctx)
    cfg = load_experiment("quickstart", [f"model={folder}", f"train.seq_len={s.seq_len}", f"train.batch_size={s.batch}",
                                         "train.grad_accum=1", f"train.precision={prec}", "train.deterministic=false",
                                         "train.checkpoints.save=false"])  # fmt: skip
    # kdyn's loop: the one a run uses, on its own packed batches (full batches only, so every step is the same size)
    ctx.reset_peak()
    acc = make_accelerator(cfg.train, str(ctx.work / "train"), [])
    loop = Loop(cfg, load_benchmark(ctx.bench("speed")), acc, RunStore(ctx.work / "train"))
    groups = [g for g in loop.groups(0, set()) if len(g[0].input_ids) == s.batch]
    n = s.warmup + s.steps
    tokens = [sum(b.tokens for b in groups[i % len(groups)]) for i in range(n)]
    kdyn_times = []
    for i in range(n):
        ctx.sync()
        t0 = time.perf_counter()
        loop.train_step(groups[i % len(groups)])
        ctx.sync()
        kdyn_times.append(time.perf_counter() - t0)
    fpt = model_flops_per_token(loop.lm.model, s.seq_len)
    params = sum(p.numel() for p in loop.lm.model.parameters())
    kdyn_mem = ctx.peak_memory()
    batches = [g[0] for g in groups]
    acc.free_memory()
    del loop, acc
    ctx.free()

    # the Trainer: the same rows in the same order (sequential sampler), batch, precision and optimizer (torch AdamW)
    ctx.reset_peak()
    hf_model = load_trainable(str(folder), cfg.train, ctx.dev).model
    hf_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            ctx.sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
            ctx.sync()
            hf_times.append(time.perf_counter() - self.t0)

    targs = TrainingArguments(output_dir=str(ctx.work / "hf"), per_device_train_batch_size=s.batch, max_steps=n,
                              learning_rate=cfg.train.optimizer.lr, bf16=prec == "bfloat16", use_cpu=ctx.dev.type == "cpu",
                              report_to=[], save_strategy="no", logging_strategy="no", dataloader_drop_last=True,
                              optim="adamw_torch", train_sampling_strategy="sequential")  # fmt: skip
    Trainer(model=hf_model, args=targs, train_dataset=_Rows(batches), data_collator=_collate, callbacks=[Timer()]).train()
    hf_mem = ctx.peak_memory()
    del hf_model
    peak = ctx.peaks.get(prec) or matmul_rate(ctx, getattr(torch, prec))[0]

    def figures(times: list[float], mem: dict[str, Any]) -> dict[str, Any]:
        rates = [t / dt for t, dt in zip(tokens[s.warmup :], times[s.warmup :])]
        tok_s = statistics.median(rates)
        return {"tokens_per_s": round(tok_s, 1), "mfu_pct": round(100 * tok_s * fpt / peak, 2),
                "step_seconds": [round(t, 4) for t in times], **mem}  # fmt: skip

    k, h = figures(kdyn_times, kdyn_mem), figures(hf_times, hf_mem)
    return {"precision": prec, "batch": [s.batch, s.seq_len], "params": params, "flops_per_token": fpt,
            "tokens_per_step": round(statistics.mean(tokens), 1), "timed_steps": s.steps, "warmup_steps": s.warmup,
            "peak_flops_used": round(peak / 1e12, 3), "kdyn": k, "trainer": h,
            "ratio_vs_trainer": round(k["tokens_per_s"] / h["tokens_per_s"], 3),
            "note": "random init; both use torch.optim.AdamW (foreach) and train.deterministic=false; one after the "
                    "other, memory freed between; the Trainer's own default optimizer is adamw_torch_fused"}  # fmt: skip


def probing_section(ctx: Ctx) -> dict[str, Any]:
    from kdyn.bench.schema import load_benchmark
    from kdyn.experiment import load_experiment
    from kdyn.models import load_model
    from kdyn.probe.prompts import build_rows
    from kdyn.probe.scorer import score_probes

    s, prec = ctx.shape, precision(ctx)
    lm = load_model(str(model_folder(ctx)), device=ctx.dev)  # fp32 weights, as a run's probe pass sees them
    probes = load_benchmark(ctx.bench("speed")).probes
    probes = random.Random(0).sample(probes, min(s.probes, len(probes)))  # every probe type represented
    cfg = load_experiment("quickstart").probe

    def timed(subset: list[Any], p: str) -> dict[str, Any]:
        score_probes(lm.model, lm.tokenizer, subset[:16], dataclasses.replace(cfg, precision=p))  # warm-up
        ctx.reset_peak()
        ctx.sync()
        t0 = time.perf_counter()
        score_probes(lm.model, lm.tokenizer, subset, dataclasses.replace(cfg, precision=p))
        ctx.sync()
        dt = time.perf_counter() - t0
        return {"probes": len(subset), "rows": len(build_rows(subset, lm.tokenizer)), "seconds": round(dt, 2),
                "probes_per_s": round(len(subset) / dt, 1), **ctx.peak_memory()}  # fmt: skip

    out = {"precision": prec, "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens, prec: timed(probes, prec),
           "note": "random weights never emit EOS, so every greedy answer runs to its full budget: a trained "
                   "model's pass is faster"}  # fmt: skip
    if prec != "float32":  # probe.precision defaults to float32: its rate on a subset
        out["float32"] = timed(probes[:500], "float32")
    out["probes_per_s"] = out[prec]["probes_per_s"]
    return out


def eap_section(ctx: Ctx) -> dict[str, Any]:
    from kdyn.circuits.attribution import attribute
    from kdyn.circuits.config import CircuitsConfig
    from kdyn.circuits.evaluate import Evaluator, evaluate, logit_lens
    from kdyn.circuits.hooks import HookedLM
    from kdyn.circuits.prompts import batches, build_prompts
    from kdyn.models import load_model

    s = ctx.shape
    lm = load_model(str(model_folder(ctx)), device=ctx.dev)  # fp32, as `kdyn circuits` loads a checkpoint
    cfg = CircuitsConfig(n_prompts=s.prompts)
    prompts = build_prompts(ctx.bench("speed"), "birth_city", lm.tokenizer, cfg.n_prompts, cfg.seed)
    if len(prompts.pairs) < s.prompts:
        raise RuntimeError(f"only {len(prompts.pairs)} prompt pairs for birth_city; the check needs {s.prompts}")
    bs = [b.to(ctx.dev) for b in batches(prompts.pairs, cfg.batch_size, lm.tokenizer.pad_token_id)]
    hooked = HookedLM(lm.model, cfg.kv_readers)
    seconds = {}
    with hooked.attached():
        attribute(hooked, bs[0], "eap", 1)  # warm-up (kernels, allocator): not timed
        ctx.reset_peak()
        ctx.sync()
        t0 = time.perf_counter()
        results = [attribute(hooked, b, cfg.method, cfg.ig_steps) for b in bs]
        scores = torch.cat([r.scores for r in results]).mean(0).cpu().numpy()
        seconds["attribution"] = time.perf_counter() - t0
        mem = ctx.peak_memory()
        t0 = time.perf_counter()
        evaluate(Evaluator(hooked, bs, results, cfg.min_metric_gap), scores, cfg, "birth_city")
        ctx.sync()
        seconds["evaluation"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        logit_lens(hooked, bs, results)
        ctx.sync()
        seconds["logit_lens"] = time.perf_counter() - t0
    return {"prompts": len(prompts.pairs), "method": cfg.method, "ig_steps": cfg.ig_steps, "kv_readers": cfg.kv_readers,
            "batch_size": cfg.batch_size, "edges": hooked.graph.n_edges, "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "seconds_per_checkpoint": round(sum(seconds.values()), 2), "attribution_peak": mem}  # fmt: skip


def goals(sections: dict[str, Any], dry: bool) -> dict[str, dict[str, Any]]:
    """The performance goals (DESIGN.md) against this check's figures; in a dry run they do not apply."""
    t, e = sections.get("train_throughput", {}), sections.get("eap_ig", {})
    values = {"train_mfu_pct": t.get("kdyn", {}).get("mfu_pct"), "train_vs_trainer": t.get("ratio_vs_trainer"),
              "eap_ig_seconds": e.get("seconds", {}).get("attribution")}  # fmt: skip
    out = {}
    for name, value in values.items():
        goal = GOALS[name]
        met = None if value is None or dry else (value <= goal if name == "eap_ig_seconds" else value >= goal)
        out[name] = {"goal": f"<= {goal}" if name == "eap_ig_seconds" else f">= {goal}", "value": value, "met": met}
    return out


def headline(name: str, s: dict[str, Any]) -> str:
    """One line of figures per section for the summary."""
    if s["status"] in ("error", "skipped"):
        return (s.get("error") or s.get("reason") or s.get("skipped") or "").splitlines()[0][:140]
    if name == "env":
        return f"{s.get('gpu', s['device'])}, torch {s['torch']}, transformers {s['transformers']}, python {s['python']}"
    if name == "peak":
        return f"bf16 {s['bfloat16']['best_tflops']} TFLOP/s, fp32 {s['float32']['best_tflops']} TFLOP/s (best)"
    if name.startswith("correctness."):
        a, b = s["fp32_vs_cpu"], s["bf16_vs_fp32"]
        key = "max_diff_over_max_score" if name == "correctness.eap_ig" else "logprob_max_rel_diff"
        key = key if key in a else "loss_max_abs_diff"
        agree = "spearman" if name == "correctness.eap_ig" else "correct_agreement"
        agree = agree if agree in b else "final_correct_agreement"
        return f"fp32 vs CPU {key} {a[key]:.2e}; bf16 vs fp32 {agree} {b[agree]:.3f}"
    if name == "e2e":
        return f"{s['status_in_manifest']} ({s['precision']}, {s['steps']} steps) in {s['seconds']} s"
    if name == "cuda.deterministic":
        return s.get("skipped") or f"raises without CUBLAS_WORKSPACE_CONFIG: {s['raises_without_cublas_config']}"
    if name == "train_throughput":
        k, h = s["kdyn"], s["trainer"]
        return (f"kdyn {k['tokens_per_s']:.0f} tok/s (MFU {k['mfu_pct']}%, {k['peak_memory_gb']} GB), Trainer "
                f"{h['tokens_per_s']:.0f} tok/s ({h['peak_memory_gb']} GB): {s['ratio_vs_trainer']}x")  # fmt: skip
    if name == "probing":
        p = s[s["precision"]]
        return f"{p['probes']} probes in {p['seconds']} s = {p['probes_per_s']} probes/s ({s['precision']})"
    if name == "eap_ig":
        return (f"{s['prompts']} pairs, {s['edges']} edges: attribution {s['seconds']['attribution']} s "
                f"({s['attribution_peak']['peak_memory_gb']} GB), whole checkpoint {s['seconds_per_checkpoint']} s")  # fmt: skip
    return ""
