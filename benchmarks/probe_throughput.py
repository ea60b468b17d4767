"""Probe scorer throughput vs a one-probe-at-a-time loop, on the quickstart probes with SmolLM2.

    python benchmarks/probe_throughput.py [--subset 160]

The baseline is what a hand-written script does: for each probe, one forward for the target log-prob and
`model.generate` for the greedy answer (mcq: one forward per option). Both run on the same probes (a
seeded subset, every probe type represented) in one process, alternated (median of the repeats; each pair's ratio is reported too, since the
machine may be shared), fp32. Prints and saves JSON to
benchmarks/results/probe_throughput.json. Target (DESIGN.md): >= 5x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdyn.bench.build import build_bench
from kdyn.bench.schema import load_benchmark
from kdyn.experiment import load_experiment
from kdyn.models import load_model
from kdyn.probe.prompts import build_rows
from kdyn.probe.scorer import score_probes


@torch.inference_mode()
def one_at_a_time(model, tokenizer, probes, max_new_tokens: int, extra: int) -> None:
    for row in build_rows(probes, tokenizer):
        ids = torch.tensor([row.context + row.continuation])
        torch.log_softmax(model(ids).logits[0, len(row.context) - 1 : -1].float(), -1)
        if row.generate:
            ctx = torch.tensor([row.context])
            n = min(max_new_tokens, len(row.continuation) + extra)
            model.generate(ctx, attention_mask=torch.ones_like(ctx), max_new_tokens=n, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--subset", type=int, default=120, help="probes timed with both methods")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_experiment("quickstart")
    with tempfile.TemporaryDirectory() as tmp:
        build_bench(cfg.bench, Path(tmp) / "bench")
        probes = load_benchmark(Path(tmp) / "bench").probes
    subset = random.Random(0).sample(probes, min(args.subset, len(probes)))
    lm = load_model(args.model)
    score_cfg = cfg.probe
    score_probes(lm.model, lm.tokenizer, subset[:8], score_cfg)  # warm-up
    t_batched, t_single = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        score_probes(lm.model, lm.tokenizer, subset, score_cfg)
        t_batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        one_at_a_time(lm.model, lm.tokenizer, subset, score_cfg.max_new_tokens, score_cfg.extra_new_tokens)
        t_single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    score_probes(lm.model, lm.tokenizer, probes, score_cfg)
    t_full = time.perf_counter() - t0
    result = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "probes_timed": len(subset),
        "batched_probes_per_s": len(subset) / statistics.median(t_batched),
        "one_at_a_time_probes_per_s": len(subset) / statistics.median(t_single),
        "speedup": statistics.median(t_single) / statistics.median(t_batched),
        "speedup_per_pair": [s / b for s, b in zip(t_single, t_batched)],  # alternated, so pairs share load
        "load_average_1m": os.getloadavg()[0],
        "target_speedup": 5.0,
        "full_quickstart_probes": len(probes),
        "full_quickstart_seconds": t_full,
        # the whole probe set batches far better than a small subset: its rate vs the one-at-a-time rate
        "full_set_probes_per_s": len(probes) / t_full,
        "speedup_full_set": (len(probes) / t_full) / (len(subset) / statistics.median(t_single)),
        "batch_size": score_cfg.batch_size,
        "seconds_batched": t_batched,
        "seconds_one_at_a_time": t_single,
    }
    out = Path(__file__).parent / "results" / "probe_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
