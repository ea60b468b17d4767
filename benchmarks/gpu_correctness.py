"""kdyn on the device gives the CPU's results: the sections correctness.* and e2e of gpu_check.py.

The reference is always fp32 on the CPU of the same machine: probes and EAP-IG in this process (a CPU copy of the
model), `kdyn train tiny` in its own process with CUDA hidden. Every run names its precision; none uses "auto".
Tolerances (a comparison passes when every limit holds; docs/gpu.md repeats them):

- fp32, device vs CPU. Probe log-probs within 1e-4 relative (|Δ| / max(1, |ref|)); greedy answers and correctness
  equal on >= 99% of probes (a greedy token may flip where two logits tie to ~1e-6). EAP-IG scores within 1e-3 of
  the largest |score|, and the top edges the same (Jaccard >= 0.9). Training: loss within 1e-3 at every step,
  final probe log-probs within 1e-3 relative, correctness equal on >= 98% of probes.
- bf16 vs fp32 on the device (bf16 rounds every matmul input, so these are agreement rates, stated in the JSON):
  probes' correctness agree on >= 90%, greedy answers on >= 80%, log-probs within 5% relative; EAP-IG scores
  Spearman >= 0.95 and top-edge Jaccard >= 0.5; training loss within 2% relative, final correctness >= 90%.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from gpu_check import Ctx

Limits = dict[str, tuple[str, float]]
FP32_PROBES: Limits = {"logprob_max_rel_diff": ("<=", 1e-4), "greedy_agreement": (">=", 0.99), "correct_agreement": (">=", 0.99)}
BF16_PROBES: Limits = {"logprob_max_rel_diff": ("<=", 0.05), "greedy_agreement": (">=", 0.8), "correct_agreement": (">=", 0.9)}
FP32_EAP: Limits = {"max_diff_over_max_score": ("<=", 1e-3), "top_edges_jaccard": (">=", 0.9)}
BF16_EAP: Limits = {"spearman": (">=", 0.95), "top_edges_jaccard": (">=", 0.5)}
FP32_TRAIN: Limits = {"loss_max_abs_diff": ("<=", 1e-3), "final_logprob_max_rel_diff": ("<=", 1e-3),
                      "final_correct_agreement": (">=", 0.98)}  # fmt: skip
BF16_TRAIN: Limits = {"loss_max_rel_diff": ("<=", 0.02), "final_correct_agreement": (">=", 0.9)}


def verdict(metrics: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The metrics with their limits and whether every one holds (NaN never does)."""
    ok = {k: (metrics[k] <= v if op == "<=" else metrics[k] >= v) for k, (op, v) in limits.items()}
    return metrics | {"limits": {k: f"{op} {v}" for k, (op, v) in limits.items()}, "passed": all(ok.values())}


def compare_probes(ref: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Agreement of two probe passes over the same probes (rows in the same order)."""
    assert [r["probe_id"] for r in ref] == [r["probe_id"] for r in rows], "probe passes in different orders"
    diff = [abs(a["logprob"] - b["logprob"]) if math.isfinite(a["logprob"]) and math.isfinite(b["logprob"]) else math.inf
            for a, b in zip(ref, rows)]  # fmt: skip
    rel = [d / max(1.0, abs(a["logprob"])) for d, a in zip(diff, ref)]
    gen = [(a, b) for a, b in zip(ref, rows) if a["probe_type"] != "mcq"]
    mcq = [(a, b) for a, b in zip(ref, rows) if a["probe_type"] == "mcq"]
    n = max(1, len(ref))
    return {
        "n": len(ref), "logprob_max_abs_diff": max(diff, default=0.0), "logprob_median_abs_diff": float(np.median(diff)),
        "logprob_max_rel_diff": max(rel, default=0.0),
        "greedy_agreement": sum(a["greedy"] == b["greedy"] for a, b in gen) / max(1, len(gen)),
        "mcq_choice_agreement": sum(a["choice"] == b["choice"] for a, b in mcq) / max(1, len(mcq)),
        "correct_agreement": sum(bool(a["correct"]) == bool(b["correct"]) for a, b in zip(ref, rows)) / n,
        "first_token_rank_agreement": sum(a["first_token_rank"] == b["first_token_rank"] for a, b in zip(ref, rows)) / n,
        "accuracy": [sum(bool(r["correct"]) for r in ref) / n, sum(bool(r["correct"]) for r in rows) / n],
    }  # fmt: skip


def probes_section(ctx: Ctx) -> dict[str, Any]:
    from kdyn.bench.schema import load_benchmark
    from kdyn.experiment import load_experiment
    from kdyn.models import load_model
    from kdyn.probe.scorer import score_probes

    probes = load_benchmark(ctx.bench("tiny")).probes
    if ctx.shape.check_probes:
        keep = set(random.Random(0).sample(range(len(probes)), min(ctx.shape.check_probes, len(probes))))
        probes = [p for i, p in enumerate(probes) if i in keep]
    cfg = dataclasses.replace(load_experiment("tiny").probe, precision="float32")
    lm = load_model("tiny-random-llama")  # fp32 on the CPU: the reference
    ref = score_probes(lm.model, lm.tokenizer, probes, cfg)
    model = copy.deepcopy(lm.model).to(ctx.dev)
    fp32 = score_probes(model, lm.tokenizer, probes, cfg)
    bf16 = score_probes(model, lm.tokenizer, probes, dataclasses.replace(cfg, precision="bfloat16"))
    a, b = verdict(compare_probes(ref, fp32), FP32_PROBES), verdict(compare_probes(fp32, bf16), BF16_PROBES)
    return {"model": "tiny-random-llama", "probes": len(probes), "fp32_vs_cpu": a, "bf16_vs_fp32": b,
            "passed": a["passed"] and b["passed"]}  # fmt: skip


def eap_scores(model: torch.nn.Module, prompts: Any, pad_id: int, dev: torch.device) -> np.ndarray:
    """Mean EAP-IG score (m = 5) of every valid edge over the prompts, as `kdyn circuits` computes it."""
    from kdyn.circuits.attribution import attribute
    from kdyn.circuits.hooks import HookedLM
    from kdyn.circuits.prompts import batches

    hooked = HookedLM(model, "query")
    with hooked.attached():
        results = [attribute(hooked, b.to(dev), "eap-ig", 5) for b in batches(prompts.pairs, 8, pad_id)]
    return torch.cat([r.scores for r in results]).mean(0).float().cpu().numpy()[hooked.graph.valid]


def compare_scores(ref: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    from scipy.stats import spearmanr

    k = max(10, round(0.01 * len(ref)))  # the top 1% of edges (kdyn's default circuit), at least 10
    top_ref, top_other = set(np.argsort(-np.abs(ref))[:k].tolist()), set(np.argsort(-np.abs(other))[:k].tolist())
    scale = float(np.abs(ref).max())
    return {"edges": len(ref), "max_abs_score": scale,
            "max_diff_over_max_score": float(np.abs(ref - other).max() / scale) if scale > 0 else math.inf,
            "spearman": float(spearmanr(ref, other)[0]), "top_k": k,
            "top_edges_jaccard": len(top_ref & top_other) / len(top_ref | top_other)}  # fmt: skip


def eap_section(ctx: Ctx) -> dict[str, Any]:
    from kdyn.circuits.prompts import build_prompts
    from kdyn.models import load_model

    lm = load_model("tiny-random-llama")
    prompts = build_prompts(ctx.bench("speed"), "birth_city", lm.tokenizer, ctx.shape.check_prompts, 0)
    pad = lm.tokenizer.pad_token_id
    ref = eap_scores(lm.model, prompts, pad, torch.device("cpu"))
    fp32 = eap_scores(copy.deepcopy(lm.model).to(ctx.dev), prompts, pad, ctx.dev)
    bf16 = eap_scores(copy.deepcopy(lm.model).to(ctx.dev, torch.bfloat16), prompts, pad, ctx.dev)
    a, b = verdict(compare_scores(ref, fp32), FP32_EAP), verdict(compare_scores(fp32, bf16), BF16_EAP)
    return {"model": "tiny-random-llama", "method": "eap-ig (m=5)", "prompts": len(prompts.pairs), "fp32_vs_cpu": a,
            "bf16_vs_fp32": b, "passed": a["passed"] and b["passed"]}  # fmt: skip


# ---- runs in their own processes (started early, collected later) ----------------------------------------------


@dataclass
class Job:
    cmd: list[str]
    out: Path
    log: Path
    proc: subprocess.Popen
    t0: float


def launch(ctx: Ctx, name: str, cmd: list[str], cpu: bool) -> Job:
    out, log = ctx.work / name, ctx.work / f"{name}.log"
    env = os.environ | ({"CUDA_VISIBLE_DEVICES": ""} if cpu or ctx.dry else {})  # kdyn picks cuda whenever it sees one
    with log.open("w") as fh:
        proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ctx.work)
    return Job(cmd, out, log, proc, time.monotonic())


TRAIN_RUNS = {  # name → (precision, on the CPU)
    "train-cpu-fp32": ("float32", True), "train-device-fp32": ("float32", False), "train-device-bf16": ("bfloat16", False),
}  # fmt: skip


def start_background(ctx: Ctx, sections: list[str], seconds: float) -> None:
    """Start the training runs of `sections` now; their sections collect them (and kill them at the deadline)."""
    ctx.deadline = time.monotonic() + seconds
    kdyn = [sys.executable, "-m", "kdyn"]
    if "correctness.train" in sections:
        ctx.jobs["correctness.train"] = {
            name: launch(ctx, name, [*kdyn, "train", "tiny", "--set", f"train.precision={p}", "--set", f"probe.precision={p}",
                                     "--set", "train.checkpoints.save=false"], cpu)
            for name, (p, cpu) in TRAIN_RUNS.items()
            if not (ctx.dry and name == "train-device-fp32")  # the dry run's device is the CPU: the reference serves
        }  # fmt: skip
    if "e2e" in sections:
        launch_cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", *(["--cpu"] if ctx.dry else [])]
        ctx.jobs["e2e"] = {"e2e": launch(ctx, "e2e", [*launch_cmd, "-m", "kdyn", "run", "tiny"], cpu=False)}


def stop_background(ctx: Ctx) -> None:
    for jobs in ctx.jobs.values():
        for job in jobs.values():
            if job.proc.poll() is None:
                job.proc.kill()
                job.proc.wait()


def finish(ctx: Ctx, job: Job) -> dict[str, Any]:
    """Wait for a job (until the check's deadline); its return code, seconds and, on failure, its log's end."""
    try:
        job.proc.wait(timeout=max(1.0, ctx.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        job.proc.kill()
        job.proc.wait()
        raise RuntimeError(f"`{' '.join(job.cmd[1:])}` did not finish within the time budget") from None
    out: dict[str, Any] = {"command": " ".join(["python", *job.cmd[1:], "--out", job.out.name]),
                           "returncode": job.proc.returncode, "seconds": round(time.monotonic() - job.t0, 1)}  # fmt: skip
    if job.proc.returncode != 0:
        out["log_tail"] = job.log.read_text(errors="replace")[-2500:]
    return out


def read_run(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(train_log rows by step, the final step's probe rows by probe id, manifest) of a finished run."""
    import json

    import pyarrow.parquet as pq

    log = sorted(pq.read_table(run / "train_log.parquet").to_pylist(), key=lambda r: r["step"])
    probes = pq.read_table(run / "probes.parquet").to_pylist()
    last = max(r["step"] for r in probes)
    final = sorted((r for r in probes if r["step"] == last), key=lambda r: r["probe_id"])
    return log, final, json.loads((run / "manifest.json").read_text())


def compare_runs(ref: Path, run: Path) -> dict[str, Any]:
    ref_log, ref_final, _ = read_run(ref)
    log, final, manifest = read_run(run)
    if [r["step"] for r in ref_log] != [r["step"] for r in log]:
        return {"steps": [len(ref_log), len(log)], "loss_max_abs_diff": math.inf, "loss_max_rel_diff": math.inf,
                "final_logprob_max_rel_diff": math.inf, "final_correct_agreement": 0.0,
                "note": "different step counts"}  # fmt: skip
    loss = [abs(a["loss"] - b["loss"]) for a, b in zip(ref_log, log)]
    probes = compare_probes(ref_final, final)
    return {"steps": len(log), "precision": manifest.get("precision"), "loss_max_abs_diff": max(loss, default=0.0),
            "loss_max_rel_diff": max((d / max(abs(a["loss"]), 1e-12) for d, a in zip(loss, ref_log)), default=0.0),
            "final_loss": [ref_log[-1]["loss"], log[-1]["loss"]] if log else None,
            "final_logprob_max_rel_diff": probes["logprob_max_rel_diff"],
            "final_correct_agreement": probes["correct_agreement"],
            "final_greedy_agreement": probes["greedy_agreement"]}  # fmt: skip


def train_section(ctx: Ctx) -> dict[str, Any]:
    jobs = ctx.jobs["correctness.train"]
    runs = {name: finish(ctx, job) for name, job in jobs.items()}
    failed = [n for n, r in runs.items() if r["returncode"] != 0]
    if failed:
        return {"runs": runs, "passed": False, "error": f"{failed[0]} exited with {runs[failed[0]]['returncode']}"}
    out = {n: jobs[n].out for n in jobs}
    device_fp32 = out.get("train-device-fp32", out["train-cpu-fp32"])
    a = verdict(compare_runs(out["train-cpu-fp32"], device_fp32), FP32_TRAIN)
    b = verdict(compare_runs(device_fp32, out["train-device-bf16"]), BF16_TRAIN)
    return {"config": "tiny (2 epochs)", "runs": runs, "fp32_vs_cpu": a, "bf16_vs_fp32": b, "passed": a["passed"] and b["passed"],
            **({"note": "dry run: the device is the CPU, so the fp32 run is the reference itself"} if ctx.dry else {})}


def e2e_section(ctx: Ctx) -> dict[str, Any]:
    import json

    job = ctx.jobs["e2e"]["e2e"]
    run = finish(ctx, job)
    manifest = json.loads((job.out / "manifest.json").read_text()) if (job.out / "manifest.json").is_file() else {}
    report = job.out / "report.html"
    out = run | {"status_in_manifest": manifest.get("status"), "precision": manifest.get("precision"),
                 "steps": manifest.get("steps"), "report_html_bytes": report.stat().st_size if report.is_file() else 0,
                 "analysis": (job.out / "analysis" / "summary.json").is_file()}  # fmt: skip
    out["passed"] = (run["returncode"] == 0 and out["status_in_manifest"] == "complete" and out["report_html_bytes"] > 0
                     and out["analysis"])
    return out
