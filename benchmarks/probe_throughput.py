"""Probe-pass throughput: kdyn's scorer against landed main's scorer and lm-evaluation-harness, on the quickstart
probes with SmolLM2, in one process, alternated (the machine may be shared: each pair's ratio is reported).

    python benchmarks/probe_throughput.py [--repeats 2] [--bf16-repeats 1] [--subset N] [--threads 1] [--no-lm-eval] [--no-bf16]

- fp32, in turn each repeat: landed main's scorer (`--landed`, default 252123c: its probe modules exported from
  git into a temporary package, imported under another name), kdyn's, and lm-eval's HFLM wrapped around the same
  model (open targets and MCQ options as loglikelihood requests, open probes as generate_until with kdyn's
  budgets). Agreement with kdyn: greedy text identical, max |Δ log-prob|, `correct` identical.
- bf16 (only where `precision: auto` is bf16 here): kdyn with bf16 weights, kdyn under autocast (fp32 weights
  cast at every linear call) and landed's autocast, alternated; bf16-vs-fp32 agreement of kdyn's rows.
- work: forwards and tokens (padding included) each method ran. The pass is FLOP-bound on a CPU, so tokens are
  where the time goes.

Prints and saves JSON to benchmarks/results/probe_throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

from kdyn.bench.build import build_bench
from kdyn.bench.schema import load_benchmark
from kdyn.device import resolve_precision
from kdyn.experiment import load_experiment
from kdyn.models import load_model
from kdyn.probe.prompts import build_rows, render
from kdyn.probe.scorer import ScoreConfig, score_probes

REPO = Path(__file__).resolve().parents[1]
GOAL = 3.0


def landed_scorer(commit: str) -> ModuleType:
    """kdyn.probe.{scorer,metrics,prompts} as of `commit`, importable as kdyn_landed.probe.*."""
    root = Path(tempfile.mkdtemp(prefix="kdyn-landed-"))
    pkg = root / "kdyn_landed" / "probe"
    pkg.mkdir(parents=True)
    (root / "kdyn_landed" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    for name in ("scorer", "metrics", "prompts"):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:src/kdyn/probe/{name}.py"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        (pkg / f"{name}.py").write_text(src.replace("kdyn.probe", "kdyn_landed.probe"))
    sys.path.insert(0, str(root))
    return importlib.import_module("kdyn_landed.probe.scorer")


class Work:
    """Counts the model's forwards and the tokens they ran (batch x length, padding included)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.forwards = self.tokens = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _, args, kwargs) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is not None:
            self.forwards += 1
            self.tokens += ids.numel()

    def take(self) -> dict[str, int]:
        out = {"forwards": self.forwards, "tokens": self.tokens}
        self.forwards = self.tokens = 0
        return out


def lm_eval_pass(lm, tok, probes, cfg: ScoreConfig) -> list[dict]:
    """The same probes through lm-eval's HFLM: per probe its log-prob (MCQ: per option) and greedy text."""
    from lm_eval.api.instance import Instance

    ll_args, gen_args, where = [], [], []
    for i, p in enumerate(probes):
        text, sep, _ = render(p, tok)
        for j, option in enumerate(p.options if p.probe_type == "mcq" else [p.target]):
            where.append((i, j))
            ll_args.append((text, sep + option))
        if p.probe_type != "mcq":
            n = len(build_rows([p], tok)[0].continuation)
            budget = min(cfg.max_new_tokens, n + (cfg.chat_extra_new_tokens if p.chat else cfg.extra_new_tokens))
            gen_args.append((i, (text, {"until": [], "max_gen_toks": budget, "do_sample": False})))
    ll = lm.loglikelihood([Instance("loglikelihood", {}, a, k) for k, a in enumerate(ll_args)], disable_tqdm=True)
    gen = lm.generate_until([Instance("generate_until", {}, a, k) for k, (_, a) in enumerate(gen_args)], disable_tqdm=True)
    out = [{"option_logprobs": [], "greedy": None} for _ in probes]
    for (i, _), (lp, _) in zip(where, ll):
        out[i]["option_logprobs"].append(lp)
    for (i, _), text in zip(gen_args, gen):
        out[i]["greedy"] = text
    for p, row in zip(probes, out):
        lps = row["option_logprobs"]
        row["choice"] = max(range(len(lps)), key=lps.__getitem__) if p.probe_type == "mcq" else None
    return out


def agreement(a: list[dict], b: list[dict], same_metrics: bool = False) -> dict:
    """kdyn rows `a` against rows `b` of another scorer (or precision) on the same probes: greedy text, log-probs
    and MCQ choices, which decide `correct`; `correct` itself only when `b` comes from this kdyn too (landed main
    judged chat answers by an older rule)."""
    open_ = [(x, y) for x, y in zip(a, b) if x["greedy"] is not None]
    # every option's log-prob where both sides have them (landed main's rows hold the answer's only)
    lp = [(x["option_logprobs"], y["option_logprobs"]) if x["option_logprobs"] and y.get("option_logprobs")
          else ([x["logprob"]], [y.get("logprob", (y.get("option_logprobs") or [None])[0])]) for x, y in zip(a, b)]  # fmt: skip
    out = {"greedy_identical": sum(x["greedy"] == y["greedy"] for x, y in open_), "open_probes": len(open_),
           "max_abs_dlogprob": max(abs(u - v) for xs, ys in lp for u, v in zip(xs, ys))}  # fmt: skip
    mcq = [(x, y) for x, y in zip(a, b) if x["choice"] is not None]
    if all("choice" in y for _, y in mcq):
        out |= {"mcq_choice_identical": sum(x["choice"] == y["choice"] for x, y in mcq), "mcq_probes": len(mcq)}
    if same_metrics:
        out |= {"correct_identical": sum(x["correct"] == y["correct"] for x, y in zip(a, b)), "probes": len(a),
                "correct_differs": [x["probe_id"] for x, y in zip(a, b) if x["correct"] != y["correct"]]}  # fmt: skip
    return out


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registry name, HF id or checkpoint folder")
    ap.add_argument("--landed", default="252123c", help="commit whose scorer is the baseline")
    ap.add_argument("--subset", type=int, default=0, help="probes timed (a seeded sample; 0: all 462)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-lm-eval", action="store_true")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--bf16-repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    exp = load_experiment("quickstart")
    with tempfile.TemporaryDirectory() as tmp:
        build_bench(exp.bench, Path(tmp) / "bench")
        probes = load_benchmark(Path(tmp) / "bench").probes
    if args.subset:
        probes = random.Random(0).sample(probes, min(args.subset, len(probes)))
    lm = load_model(args.model)
    model, tok = lm.model, lm.tokenizer
    work = Work(model)
    fp32 = dataclasses.replace(exp.probe, precision="float32")
    landed = landed_scorer(args.landed)
    landed_cfg = landed.ScoreConfig(batch_size=fp32.batch_size, max_new_tokens=fp32.max_new_tokens, precision="float32",
                                    extra_new_tokens=fp32.extra_new_tokens,
                                    chat_extra_new_tokens=fp32.chat_extra_new_tokens)  # fmt: skip
    methods = {"landed": lambda: landed.score_probes(model, tok, probes, landed_cfg),
               "kdyn": lambda: score_probes(model, tok, probes, fp32)}  # fmt: skip
    if not args.no_lm_eval:
        try:
            from lm_eval.models.huggingface import HFLM
        except ImportError:
            print("lm-eval is not installed (pip install lm-eval): timing kdyn and landed only")
        else:
            harness = HFLM(pretrained=model, tokenizer=tok, batch_size=fp32.batch_size)
            methods["lm_eval"] = lambda: lm_eval_pass(harness, tok, probes, fp32)
    result: dict = {"model": args.model, "threads": torch.get_num_threads(), "probes": len(probes), "landed_commit": args.landed,
                    "batch_size": fp32.batch_size, "decode_batch_size": fp32.decode_batch_size,
                    "load_average_start": os.getloadavg()}  # fmt: skip
    warm = probes[:8]
    score_probes(model, tok, warm, fp32)
    landed.score_probes(model, tok, warm, landed_cfg)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    rows, result["work"] = {}, {}
    for r in range(args.repeats):
        for name, fn in methods.items():
            work.take()
            t, out = timed(fn)
            seconds[name].append(t)
            rows.setdefault(name, out)
            result["work"].setdefault(name, work.take())
            print(f"repeat {r}: {name} {t:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    kdyn = seconds["kdyn"]
    result["fp32"] = {
        "seconds": seconds,
        "kdyn_probes_per_s": len(probes) / statistics.median(kdyn),
        "speedup_vs_landed_per_pair": [a / b for a, b in zip(seconds["landed"], kdyn)],
        "speedup_vs_landed": statistics.median(seconds["landed"]) / statistics.median(kdyn),
        "goal": GOAL,
    }
    result["agreement_vs_landed"] = agreement(rows["kdyn"], rows["landed"])
    if "lm_eval" in seconds:
        result["fp32"] |= {"speedup_vs_lm_eval_per_pair": [a / b for a, b in zip(seconds["lm_eval"], kdyn)],
                           "speedup_vs_lm_eval": statistics.median(seconds["lm_eval"]) / statistics.median(kdyn)}  # fmt: skip
        result["agreement_vs_lm_eval"] = agreement(rows["kdyn"], rows["lm_eval"])
    if not args.no_bf16 and resolve_precision("auto", "cpu") == "bfloat16":
        result["bf16"] = bf16_section(model, tok, probes, fp32, landed, landed_cfg, rows["kdyn"], args.bf16_repeats)
    result["load_average_end"] = os.getloadavg()
    out = REPO / "benchmarks" / "results" / "probe_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def bf16_section(model, tok, probes, fp32: ScoreConfig, landed: ModuleType, landed_cfg, fp32_rows, repeats: int) -> dict:
    """bf16 weights vs autocast (kdyn's engine under torch.autocast, and landed's), and bf16 vs fp32 agreement."""
    bf16 = dataclasses.replace(fp32, precision="bfloat16")

    def kdyn_autocast():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return score_probes(model, tok, probes, fp32)

    landed_bf16 = dataclasses.replace(landed_cfg, precision="bfloat16")  # landed main: autocast
    methods = {"kdyn_bf16_weights": lambda: score_probes(model, tok, probes, bf16), "kdyn_autocast": kdyn_autocast,
               "landed_autocast": lambda: landed.score_probes(model, tok, probes, landed_bf16)}  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    rows = {}
    for r in range(repeats):
        for name, fn in methods.items():
            t, out = timed(fn)
            seconds[name].append(t)
            rows.setdefault(name, out)
            print(f"bf16 repeat {r}: {name} {t:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    return {"seconds": seconds,
            "bf16_weights_vs_autocast": med["kdyn_autocast"] / med["kdyn_bf16_weights"],
            "bf16_weights_vs_landed_autocast": med["landed_autocast"] / med["kdyn_bf16_weights"],
            "bf16_vs_fp32_agreement": agreement(rows["kdyn_bf16_weights"], fp32_rows, same_metrics=True)}  # fmt: skip


if __name__ == "__main__":
    main()
