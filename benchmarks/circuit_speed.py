"""Speed and memory of knowledge circuits on SmolLM2-135M-Instruct: 32 prompts, one checkpoint (targets: ≤ 20 s, ≤ 4 GB).

    .venv/bin/python benchmarks/circuit_speed.py [--prompts 32] [--steps 5] [--method eap-ig] [--kv-readers query]
                                                 [--batch-size 8] [--threads 2]

Builds a quickstart-style benchmark with enough people for 32 paired cloze prompts of one relation, loads
the base model and times, in one process: EAP-IG attribution (the target: DESIGN.md's ≤ 20 s), the
evaluation kdyn circuits does at every checkpoint (circuit, random connected circuits, faithfulness curve)
and the logit lens; their sum is the per-checkpoint cost. Wall seconds and the process's CPU seconds (on a
loaded machine the CPU seconds of a 1-thread run are the steadier figure). Everything runs in fp32: bf16
moved the edge ranking (Spearman 0.991 with a bf16 model, 0.996 with bf16 autocast, against ≥ 0.999
wanted). Peak memory is the process's maximum resident set size (model, tokenizer and Python included).
Prints the figures as JSON and saves them to benchmarks/results/circuit_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from kdyn.bench.build import build_bench
from kdyn.circuits.attribution import attribute
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.evaluate import Evaluator, evaluate, logit_lens
from kdyn.circuits.hooks import HookedLM
from kdyn.circuits.prompts import batches, build_prompts
from kdyn.experiment import load_bench_config
from kdyn.io import dumps_json, write_json
from kdyn.models import load_model

TARGET_SECONDS, TARGET_GB = 20.0, 4.0
MODEL = "smollm2-135m-instruct"


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--method", choices=["eap", "eap-ig"], default="eap-ig")
    parser.add_argument("--kv-readers", choices=["query", "kv"], default="query")
    parser.add_argument("--relation", default="birth_city")
    parser.add_argument("--batch-size", type=int, default=CircuitsConfig.batch_size)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = CircuitsConfig(n_prompts=args.prompts, method=args.method, ig_steps=args.steps, kv_readers=args.kv_readers,
                         batch_size=args.batch_size)  # fmt: skip
    lm = load_model(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        bench = Path(tmp) / "bench"
        build_bench(load_bench_config("quickstart", ["people=48"]), bench)
        prompts = build_prompts(bench, args.relation, lm.tokenizer, cfg.n_prompts, cfg.seed)
    if len(prompts.pairs) < args.prompts:
        raise SystemExit(f"only {len(prompts.pairs)} paired prompts for {args.relation}; the benchmark needs {args.prompts}")
    bs = batches(prompts.pairs, cfg.batch_size, lm.tokenizer.pad_token_id)
    hooked = HookedLM(lm.model, cfg.kv_readers)
    rss_loaded = peak_gb()
    seconds, cpu = {}, {}
    with hooked.attached():
        t0, c0 = time.perf_counter(), time.process_time()
        results = [attribute(hooked, b, cfg.method, cfg.ig_steps) for b in bs]
        scores = torch.cat([r.scores for r in results]).mean(0).numpy()
        seconds["attribution"], cpu["attribution"] = time.perf_counter() - t0, time.process_time() - c0
        rss_attribution = peak_gb()
        t0, c0 = time.perf_counter(), time.process_time()
        _, metrics, curve = evaluate(Evaluator(hooked, bs, results, cfg.min_metric_gap), scores, cfg, args.relation)
        seconds["evaluation"], cpu["evaluation"] = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        logit_lens(hooked, bs, results)
        seconds["logit_lens"], cpu["logit_lens"] = time.perf_counter() - t0, time.process_time() - c0
    s = hooked.shape
    tokens = sum(int(b.clean.numel()) for b in bs)
    compared = sum(len(b) * (b.clean.shape[1] - b.p0) for b in bs)
    params = sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n)  # tied unembedding left out
    model_gflop = 2 * params * tokens * (1 + 2 * (1 if cfg.method == "eap" else cfg.ig_steps)) / 1e9
    score_gflop = 2 * compared * s.d_model * hooked.graph.n_edges / 1e9
    figures = {
        "benchmark": "circuit_speed", "model": MODEL, "method": cfg.method,
        "ig_steps": cfg.ig_steps if cfg.method == "eap-ig" else 1, "kv_readers": cfg.kv_readers,
        "relation": args.relation, "prompts": len(prompts.pairs), "tokens_per_run": tokens,
        "positions_compared": compared, "edges": hooked.graph.n_edges, "layers": s.n_layers, "heads": s.n_heads,
        "kv_heads": s.n_kv_heads, "threads": torch.get_num_threads(), "batch_size": cfg.batch_size,
        "random_draws": cfg.random_draws, "precision": "float32",
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "seconds_per_checkpoint": round(sum(seconds.values()), 2),
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()}, "cpu_seconds_per_checkpoint": round(sum(cpu.values()), 2),
        "peak_rss_gb": round(peak_gb(), 3), "rss_after_model_load_gb": round(rss_loaded, 3),
        "peak_rss_after_attribution_gb": round(rss_attribution, 3),
        "gflop_estimate": {"model_passes": round(model_gflop, 1), "edge_scores": round(score_gflop, 1)},
        "clean_metric": round(metrics["clean_metric"], 4), "corrupted_metric": round(metrics["corrupted_metric"], 4),
        "faithfulness": round(metrics["faithfulness"], 4), "faithfulness_curve": curve,
        "target_seconds": TARGET_SECONDS, "target_gb": TARGET_GB,
        "meets_target": seconds["attribution"] <= TARGET_SECONDS and peak_gb() <= TARGET_GB,
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
    }  # fmt: skip
    figures = json.loads(json.dumps(figures), parse_constant=lambda c: None)  # NaN (undefined faithfulness) → null
    print(dumps_json(figures), end="")
    write_json(Path(__file__).parent / "results" / "circuit_speed.json", figures)


if __name__ == "__main__":
    main()
