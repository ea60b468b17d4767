"""Training throughput: kdyn's loop vs `transformers.Trainer` on the same model, data, batch and precision,
alternated in one process; model-FLOPs utilisation against the matmul peaks measured here.

    python benchmarks/train_throughput.py                       # smollm2-135m-instruct, quickstart documents
    python benchmarks/train_throughput.py --model tiny-random-llama --config tiny --steps 4
    python benchmarks/train_throughput.py --run runs/quickstart # also: probing share of that run's wall time
    python benchmarks/train_throughput.py --precision float32 --threads 1   # fp32; one thread on a busy machine
    python benchmarks/train_throughput.py --compile   # also kdyn with train.compile and the Trainer with torch_compile

Prints and writes JSON (default benchmarks/results/train_throughput.json). Each round times kdyn's steps, then
the Trainer's, then the fp32 and bf16 matmul peaks, so ratio and MFU compare figures taken under the same load
(on a shared machine trust those, not tok/s). Step CPU seconds are recorded too: with one thread they are the
work done, whatever the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from kdyn.bench.build import build_bench
from kdyn.bench.schema import load_benchmark
from kdyn.experiment import load_experiment
from kdyn.train.checkpoints import RunStore
from kdyn.train.flops import matmul_peak, model_flops_per_token
from kdyn.train.loop import Loop
from kdyn.train.session import make_accelerator


class Timer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

        self.cpu: list[float] = []

    def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003
        self.times.append(time.perf_counter() - self.t0)
        self.cpu.append(time.process_time() - self.c0)


class Rows(torch.utils.data.Dataset):
    def __init__(self, batches):  # noqa: ANN001
        self.rows = [(b.input_ids[i], b.labels[i], b.attention_mask[i]) for b in batches for i in range(len(b.input_ids))]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        ids, labels, mask = self.rows[i]
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pad_collate(items: list[dict]) -> dict:
    """Pad to the longest row in the batch, as kdyn's batches are."""
    width = max(len(x["input_ids"]) for x in items)
    out = {}
    for key, fill in (("input_ids", 0), ("labels", -100), ("attention_mask", 0)):
        out[key] = torch.stack([torch.nn.functional.pad(x[key], (0, width - len(x[key])), value=fill) for x in items])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="quickstart")
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round and trainer")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--run", default=None, help="a finished run directory: report its probing share")
    ap.add_argument("--precision", default="auto", choices=["auto", "bfloat16", "float32"], help="train.precision of both")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--trainer-optim", default=None, help="TrainingArguments.optim (default: the Trainer's default)")
    ap.add_argument("--compile", action="store_true", help="also time both with torch.compile (after a warm-up that compiles "
                    "every batch shape; its seconds are reported)")
    ap.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = ap.parse_args()
    overrides = ([f"model={args.model}"] if args.model else []) + [f"train.precision={args.precision}", f"train.threads={args.threads}"]
    cfg = load_experiment(args.config, overrides + ["train.checkpoints.save=false"])
    tmp = Path(tempfile.mkdtemp())
    build_bench(cfg.bench, tmp / "bench")
    acc = make_accelerator(cfg.train, str(tmp), [])
    loop = Loop(cfg, load_benchmark(tmp / "bench"), acc, RunStore(tmp))
    groups = loop.groups(0, set())
    batch_tokens = [sum(b.tokens for b in g) for g in groups]
    bf16 = acc.mixed_precision == "bf16"

    # the Trainer: same packed rows (same order), batch, precision, optimizer (AdamW, same lr), no probing;
    # its default AdamW is the fused one (torch >= 2.8), as kdyn's
    from kdyn.train.session import load_trainable

    hf_model = load_trainable(cfg.model, cfg.train, torch.device("cpu")).model
    rows = Rows([b for g in groups for b in g])
    timer = Timer()
    targs_kwargs = dict(output_dir=str(tmp / "hf"), per_device_train_batch_size=cfg.train.batch_size,
                        gradient_accumulation_steps=cfg.train.grad_accum, learning_rate=cfg.train.optimizer.lr,
                        max_steps=args.steps, bf16=bf16, use_cpu=True, report_to=[], save_strategy="no",
                        logging_strategy="no", dataloader_drop_last=True,
                        **({"optim": args.trainer_optim} if args.trainer_optim else {}))  # fmt: skip
    targs = TrainingArguments(**targs_kwargs)

    compiled, compile_seconds, hf_compiled = None, {}, None
    if args.compile:
        # the warm-up trains the model a few steps more: the timed steps are speed, not a result
        make_accelerator(cfg.train, str(tmp), [])  # TrainingArguments reset Accelerate's shared state
        compiled = torch.compile(loop.model)
        loop.train_forward, t0 = compiled, time.perf_counter()
        for g in {tuple(b.input_ids.shape for b in g): g for g in groups[: args.steps]}.values():
            loop.train_step(g)
        compile_seconds["kdyn"] = round(time.perf_counter() - t0, 1)
        loop.train_forward = loop.model
        hf_compiled = TrainingArguments(**targs_kwargs, torch_compile=True)
        t0 = time.perf_counter()  # the Trainer's warm-up: a first compiled run
        Trainer(model=hf_model, args=hf_compiled, train_dataset=rows, data_collator=pad_collate).train()
        compile_seconds["trainer"] = round(time.perf_counter() - t0, 1)

    def kdyn_steps(forward: torch.nn.Module) -> tuple[list[float], list[float]]:
        """Wall and CPU seconds of args.steps kdyn steps with `forward` as the training forward."""
        make_accelerator(cfg.train, str(tmp), [])  # TrainingArguments / Trainer reset Accelerate's shared state
        loop.train_forward, times, cpu = forward, [], []
        for i in range(args.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            loop.train_step(groups[i % len(groups)])
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        loop.train_forward = loop.model
        return times, cpu

    def trainer_steps(trainer_args: TrainingArguments) -> tuple[list[float], list[float]]:
        timer.times, timer.cpu = [], []
        Trainer(model=hf_model, args=trainer_args, train_dataset=rows, data_collator=pad_collate, callbacks=[timer]).train()
        return timer.times, timer.cpu

    timed: dict[str, list[float]] = {"kdyn_compiled": [], "trainer_compiled": []}
    kdyn_times, hf_times, kdyn_cpu, hf_cpu = [], [], [], []
    round_peaks: dict[str, list[float]] = {"bfloat16": [], "float32": []}
    for _ in range(args.rounds):
        times, cpu = kdyn_steps(loop.model)
        kdyn_times, kdyn_cpu = kdyn_times + times, kdyn_cpu + cpu
        times, cpu = trainer_steps(targs)
        hf_times, hf_cpu = hf_times + times, hf_cpu + cpu
        if compiled is not None:
            timed["kdyn_compiled"] += kdyn_steps(compiled)[0]
            timed["trainer_compiled"] += trainer_steps(hf_compiled)[0]
        for dtype in (torch.bfloat16, torch.float32):  # uncached: this round's load
            round_peaks[str(dtype).removeprefix("torch.")].append(matmul_peak.__wrapped__(dtype))
    tokens = statistics.median(batch_tokens[: args.steps])
    kdyn_tok_s = tokens / statistics.median(kdyn_times)
    hf_tok_s = tokens / statistics.median(hf_times)
    fpt = model_flops_per_token(loop.lm.model, cfg.train.seq_len)
    peaks = {k: statistics.median(v) for k, v in round_peaks.items()}
    result = {
        "model": cfg.model, "precision": "bfloat16" if bf16 else "float32", "batch": [cfg.train.batch_size, cfg.train.seq_len],
        "threads": torch.get_num_threads(), "tokens_per_step": tokens, "trainer_optim": str(targs.optim),
        "kdyn_tokens_per_s": round(kdyn_tok_s, 1), "trainer_tokens_per_s": round(hf_tok_s, 1),
        "ratio_vs_trainer": round(kdyn_tok_s / hf_tok_s, 3),
        "ratio_vs_trainer_cpu_seconds": round(statistics.median(hf_cpu) / statistics.median(kdyn_cpu), 3),
        "flops_per_token": fpt, "peak_flops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "mfu_vs_bf16_peak_pct": round(100 * kdyn_tok_s * fpt / peaks["bfloat16"], 1),
        "mfu_vs_fp32_peak_pct": round(100 * kdyn_tok_s * fpt / peaks["float32"], 1),
        "trainer_mfu_vs_fp32_peak_pct": round(100 * hf_tok_s * fpt / peaks["float32"], 1),
        "load_average_1m": os.getloadavg()[0],
        "step_seconds": {"kdyn": kdyn_times, "trainer": hf_times},
        "step_cpu_seconds": {"kdyn": kdyn_cpu, "trainer": hf_cpu},
        "round_peak_gflops": {k: [round(x / 1e9, 1) for x in v] for k, v in round_peaks.items()},
    }  # fmt: skip
    if compiled is not None:
        kc, hc = (tokens / statistics.median(timed[k]) for k in ("kdyn_compiled", "trainer_compiled"))
        result["compile"] = {
            "kdyn_tokens_per_s": round(kc, 1), "trainer_tokens_per_s": round(hc, 1),
            "kdyn_compiled_vs_eager": round(kc / kdyn_tok_s, 3), "kdyn_compiled_vs_trainer": round(kc / hf_tok_s, 3),
            "kdyn_compiled_vs_trainer_compiled": round(kc / hc, 3),
            "mfu_vs_bf16_peak_pct": round(100 * kc * fpt / peaks["bfloat16"], 1),
            "compile_seconds": compile_seconds, "step_seconds": timed,
        }  # fmt: skip
    if peaks["bfloat16"] < peaks["float32"]:
        result["mfu_vs_bf16_peak_pct"] = None  # an fp32 run measured against a slower bf16 peak is no utilisation
        result["note"] = ("this CPU has no native bf16 matmul (bf16 is slower than fp32 here), so training runs fp32, "
                          "MFU against the bf16 peak is not defined (null), and MFU against the fp32 peak is the "
                          "meaningful figure")  # fmt: skip
    if args.run:
        m = json.loads((Path(args.run) / "manifest.json").read_text())
        result["probing_share"] = round(m["probe_seconds"] / m["seconds"], 3)
        result["run_seconds"] = m["seconds"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "step_seconds"}, indent=2))


if __name__ == "__main__":
    main()
