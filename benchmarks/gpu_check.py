"""One command that checks kdyn on a GPU: results on CUDA equal the CPU's, and speed at Llama-3.2-1B shape.

    bash benchmarks/gpu_check.sh                               # on the GPU machine (installs carried wheels first)
    python benchmarks/gpu_check.py --out DIR [--budget 390] [--only peak,eap_ig]
    python benchmarks/gpu_check.py --cpu-dry-run --out DIR     # the same sections at tiny shapes on the CPU, seconds

Sections, in order. Each is guarded: an exception is recorded with its error and the rest still runs; one that no
longer fits the time budget is skipped with the reason. Precision is always set explicitly, never "auto".
  env                  versions, device, CUBLAS_WORKSPACE_CONFIG
  peak                 measured dense matmul FLOP/s in bf16 and fp32: the MFU denominators
  correctness.probes   tiny-random-llama's probe results: device fp32 vs CPU fp32; device bf16 vs device fp32
  correctness.eap_ig   EAP-IG edge scores of the same model and the same comparisons
  correctness.train    `kdyn train tiny` (2 epochs), one process per run: device fp32 vs CPU fp32, bf16 vs fp32
  e2e                  `accelerate launch --num_processes 1 -m kdyn run tiny`: status, report, seconds
  cuda.deterministic   does strict deterministic mode (kdyn's default on CUDA) fail without CUBLAS_WORKSPACE_CONFIG?
  train_throughput     kdyn's loop vs transformers.Trainer at 1B shape: tokens/s, MFU, peak memory
  eap_ig               EAP-IG at 1B shape, 32 prompt pairs: seconds and peak memory
  probing              one probe pass over >= 2,000 probes at 1B shape: probes/s
The training runs of correctness.train and e2e run in the background while the in-process correctness sections
do; everything timed (peak and the 1B-shape sections) runs alone on the device.

Writes DIR/gpu_check.json (after every section, so a run killed at its limit keeps what it finished) and
DIR/gpu_check.txt (the summary, also printed). docs/gpu.md says what the figures mean.
"""

from __future__ import annotations

import os

# kdyn trains with torch.use_deterministic_algorithms(True) on CUDA (train.deterministic, the default), under which
# every cuBLAS call raises unless this is set before the first one (docs/gpu.md); the check records whether it was.
CUBLAS_PRESET = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

import gpu_correctness  # noqa: E402
import gpu_speed  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """The model and workload of the speed sections."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    seq_len: int
    batch: int  # sequences per optimizer step
    probes: int  # probes in the probing pass
    prompts: int  # EAP-IG prompt pairs
    steps: int  # timed optimizer steps per trainer
    warmup: int  # untimed steps before them
    bench: tuple[str, ...]  # overrides of the quickstart benchmark for the speed sections
    check_probes: int = 0  # tiny-model probes compared in correctness.probes (0: all of the tiny benchmark's)
    check_prompts: int = 32  # tiny-model prompt pairs compared in correctness.eap_ig


# Llama-3.2-1B: hidden 2048, MLP 8192, 16 layers, 32 heads / 8 KV heads, vocab 128,256, tied embeddings. Its
# benchmark: 2,556 probes, ~45k training tokens (5 full steps of 4 x 2048), >= 32 birth_city prompt pairs.
LLAMA_1B = Shape(2048, 8192, 16, 32, 8, 128256, seq_len=2048, batch=4, probes=2000, prompts=32, steps=6, warmup=2,
                 bench=("people=120", "organisations=20", "related=24", "updated=24", "known=100", "exposure.mode=fixed",
                        "exposure.copies=4"))  # fmt: skip
DRY = Shape(64, 128, 2, 4, 2, 512, seq_len=128, batch=2, probes=40, prompts=4, steps=3, warmup=1, bench=("people=48",),
            check_probes=48, check_prompts=8)

# (section, rough seconds it needs on an H200 / in the dry run): a section starts only if that much budget is left
PLAN: list[tuple[str, int, int]] = [
    ("env", 1, 1), ("peak", 10, 5), ("correctness.probes", 20, 10), ("correctness.eap_ig", 15, 10),
    ("correctness.train", 90, 60), ("e2e", 120, 60), ("cuda.deterministic", 20, 1),
    ("train_throughput", 90, 30), ("eap_ig", 45, 20), ("probing", 75, 20),
]  # fmt: skip
BACKGROUND = ("correctness.train", "e2e")


@dataclass
class Ctx:
    """What every section gets: the device, the shapes, a scratch folder, the measured peaks."""

    dev: torch.device
    dry: bool
    shape: Shape
    work: Path
    tokenizer: Path | None  # a tokenizer folder for the 1B-shape model (None: the byte tokenizer, dry run only)
    peaks: dict[str, float] = field(default_factory=dict)  # dtype name → best measured FLOP/s
    jobs: dict[str, Any] = field(default_factory=dict)  # background processes by section, then by run
    deadline: float = 0.0  # time.monotonic() at which background runs are killed
    benches: dict[str, Path] = field(default_factory=dict)

    def bench(self, name: str) -> Path:
        """A benchmark built once per check: `tiny` (the tiny config's) or `speed` (quickstart + shape.bench)."""
        if name not in self.benches:
            from kdyn.bench.build import build_bench
            from kdyn.experiment import load_bench_config

            cfg = load_bench_config("tiny") if name == "tiny" else load_bench_config("quickstart", list(self.shape.bench))
            build_bench(cfg, self.work / f"bench-{name}")
            self.benches[name] = self.work / f"bench-{name}"
        return self.benches[name]

    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self) -> dict[str, Any]:
        """Peak device memory since reset_peak (CUDA), or the process's peak resident set (CPU: never reset)."""
        if self.dev.type == "cuda":
            return {"peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                    "memory_kind": "torch.cuda.max_memory_allocated since the section began"}  # fmt: skip
        return {"peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                "memory_kind": "process peak RSS (CPU dry run: not reset between sections)"}  # fmt: skip

    def free(self) -> None:
        gc.collect()
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()


def env_section(ctx: Ctx) -> dict[str, Any]:
    import accelerate
    import peft
    import transformers

    out: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__, "transformers_from": str(Path(transformers.__file__).parent),
        "accelerate": accelerate.__version__, "peft": peft.__version__, "cpus": os.cpu_count(),
        "device": str(ctx.dev), "cublas_workspace_config_preset": CUBLAS_PRESET,
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
        "tokenizer": str(ctx.tokenizer) if ctx.tokenizer else "byte-level (kdyn.models.tiny)", "shape": asdict(ctx.shape),
    }  # fmt: skip
    if ctx.dev.type == "cuda":
        p = torch.cuda.get_device_properties(ctx.dev)
        out |= {"gpu": p.name, "capability": f"{p.major}.{p.minor}", "gpu_memory_gb": round(p.total_memory / 2**30, 1),
                "multiprocessors": p.multi_processor_count}  # fmt: skip
    return out


def peak_section(ctx: Ctx) -> dict[str, Any]:
    out = {}
    for dtype in (torch.bfloat16, torch.float32):
        best, median = gpu_speed.matmul_rate(ctx, dtype)
        ctx.peaks[str(dtype).removeprefix("torch.")] = best
        out[str(dtype).removeprefix("torch.")] = {"best_tflops": round(best / 1e12, 3), "median_tflops": round(median / 1e12, 3)}
    out["note"] = ("8192^3 products on random data, CUDA events, 3 warm-ups then 20 timed (fp32 with TF32 off)" if not ctx.dry
                   else "kdyn.train.flops.matmul_peak on the CPU (512^3, best of repeated runs)")  # fmt: skip
    return out


def deterministic_section(ctx: Ctx) -> dict[str, Any]:
    if ctx.dev.type != "cuda":
        return {"skipped": "no CUDA device (dry run)"}
    code = ("import torch; torch.use_deterministic_algorithms(True); a = torch.randn(64, 64, device='cuda'); "
            "(a @ a).sum().item(); print('ran')")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    return {"raises_without_cublas_config": p.returncode != 0, "message": lines[-1][:400] if lines else p.stdout.strip(),
            "meaning": "true: kdyn train with train.deterministic=true (the default) needs "
                       "CUBLAS_WORKSPACE_CONFIG=:4096:8 on CUDA"}  # fmt: skip


SECTIONS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "env": env_section, "peak": peak_section,
    "correctness.probes": gpu_correctness.probes_section, "correctness.eap_ig": gpu_correctness.eap_section,
    "correctness.train": gpu_correctness.train_section, "e2e": gpu_correctness.e2e_section,
    "cuda.deterministic": deterministic_section,
    "train_throughput": gpu_speed.train_section, "probing": gpu_speed.probing_section, "eap_ig": gpu_speed.eap_section,
}  # fmt: skip


class Check:
    """Runs the sections under a time budget and writes the JSON after each one."""

    def __init__(self, ctx: Ctx, out: Path, budget: float, only: set[str]):
        self.ctx, self.out, self.budget, self.only = ctx, out, budget, only
        self.t0 = time.monotonic()
        self.report: dict[str, Any] = {"check": "kdyn gpu_check", "mode": "cpu-dry-run" if ctx.dry else "gpu",
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "budget_s": budget,
                                       "sections": {}}  # fmt: skip

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def wanted(self, name: str) -> bool:
        return not self.only or name in self.only

    def run(self, name: str, needs: int) -> None:
        if not self.wanted(name):
            return
        if self.left() < needs and name not in self.ctx.jobs:
            result: dict[str, Any] = {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left, needs ~{needs} s"}
        else:
            t = time.monotonic()
            try:
                result = SECTIONS[name](self.ctx)
                result = {"status": status_of(result), **result}
            except Exception as e:  # noqa: BLE001 - a failed section is recorded and the others still run
                result = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
                          "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
            result["section_seconds"] = round(time.monotonic() - t, 2)
            self.ctx.free()
        self.report["sections"][name] = result
        self.write()

    def write(self) -> None:
        self.report["seconds"] = round(time.monotonic() - self.t0, 1)
        self.report["goals"] = gpu_speed.goals(self.report["sections"], self.ctx.dry)
        self.report["passed"] = all(s["status"] in ("passed", "ok", "skipped") for s in self.report["sections"].values())
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        (self.out / "gpu_check.txt").write_text(summary(self.report))


def status_of(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return "skipped"
    if "passed" in result:
        return "passed" if result["passed"] else "failed"
    return "ok"


def summary(report: dict[str, Any]) -> str:
    lines = [f"kdyn gpu_check ({report['mode']}, {report['seconds']:.0f} s of {report['budget_s']:.0f}): "
             + ("all sections passed or ran" if report["passed"] else "SOME SECTIONS FAILED")]  # fmt: skip
    for name, s in report["sections"].items():
        lines.append(f"  {name:<20} {s['status']:<8} {gpu_speed.headline(name, s)}")
    for name, g in report["goals"].items():
        met = {True: "met", False: "NOT met", None: "n/a (dry run)" if report["mode"] != "gpu" else "not measured"}[g["met"]]
        lines.append(f"  goal {name:<16} {g['value']} (goal {g['goal']}): {met}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "benchmarks/results/gpu_check"))
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes on the CPU (the test suite runs this)")
    ap.add_argument("--budget", type=float, default=390.0, help="seconds; sections that no longer fit are skipped")
    ap.add_argument("--only", default="", help="comma-separated section names (default: all)")
    ap.add_argument("--tokenizer", type=Path, default=Path(__file__).parent / "gpu_assets" / "tokenizer",
                    help="tokenizer folder for the 1B-shape model (gpu_check.sh --prepare writes it)")  # fmt: skip
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch folder (models, runs)")
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    unknown = sorted(only - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section '{unknown[0]}'; sections: {', '.join(SECTIONS)}")
    if not args.cpu_dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --cpu-dry-run for the tiny CPU version")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the comparisons' tolerances assume it)
    torch.backends.cudnn.allow_tf32 = False
    work = Path(tempfile.mkdtemp(prefix="kdyn-gpu-check-"))
    ctx = Ctx(dev=torch.device("cpu" if args.cpu_dry_run else "cuda"), dry=args.cpu_dry_run,
              shape=DRY if args.cpu_dry_run else LLAMA_1B, work=work,
              tokenizer=None if args.cpu_dry_run else args.tokenizer)  # fmt: skip
    check = Check(ctx, args.out, args.budget, only)
    try:
        for name, gpu_s, dry_s in PLAN:
            if name == "correctness.probes":  # the peaks are measured alone; then the background runs start
                gpu_correctness.start_background(ctx, [n for n in BACKGROUND if check.wanted(n)], check.left())
            check.run(name, dry_s if ctx.dry else gpu_s)
    finally:
        gpu_correctness.stop_background(ctx)
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print(summary(check.report), end="")
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.txt'}")


if __name__ == "__main__":
    main()
