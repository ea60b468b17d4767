"""`kdyn train`: an experiment config → a run directory (DESIGN.md "Run directory"), resumable.

    from kdyn.train import train
    result = train("quickstart", out="runs/quickstart")                  # or an ExperimentConfig
    train("quickstart", out="runs/quickstart", resume=True)              # after a crash or kill

Builds the benchmark into RUN/bench (unless train.bench_dir names one), writes config.yaml and
manifest.json (status running → complete / failed / interrupted), then runs the loop. Only the main
process writes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from kdyn import __version__
from kdyn.bench.build import build_bench
from kdyn.bench.schema import load_benchmark
from kdyn.config import to_dict
from kdyn.errors import KdynError
from kdyn.experiment import ExperimentConfig, load_experiment
from kdyn.io import atomic_path, read_json, write_json
from kdyn.train.checkpoints import RunStore
from kdyn.train.progress import Reporter, flat, offline_tracker_defaults


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def write_config(path: Path, cfg: ExperimentConfig) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def prepare_run_dir(cfg: ExperimentConfig, out: Path, resume: bool) -> Path:
    """Check `out`, (re)build the benchmark, write config.yaml; returns the benchmark directory."""
    if out.exists() and not out.is_dir():
        raise KdynError(f"run directory {out} exists and is not a directory")
    has_run = (out / "state").is_dir() or (out / "probes.parquet").is_file()
    if resume:
        if not (out / "config.yaml").is_file():
            raise KdynError(f"--resume: {out} has no config.yaml; start the run without --resume")
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        if saved != to_dict(cfg):
            raise KdynError(f"--resume: the config differs from {out / 'config.yaml'}; resume with the same config and --set values")
    elif has_run:
        raise KdynError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    bench_dir = Path(cfg.train.bench_dir) if cfg.train.bench_dir else out / "bench"
    if not cfg.train.bench_dir and not (resume and (bench_dir / "manifest.json").is_file()):
        build_bench(cfg.bench, bench_dir)
    if cfg.train.bench_dir and out / "bench" != bench_dir and not (out / "bench").exists():
        shutil.copytree(bench_dir, out / "bench")  # the run carries the probes it was scored on
    write_config(out / "config.yaml", cfg)
    return bench_dir


def train(config: str | Path | ExperimentConfig, out: str | Path, resume: bool = False, overrides: list[str] | None = None,
          report_to: list[str] | None = None, console: Console | None = None, show_progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train with interleaved probing into `out`; returns a summary (steps, seconds, tokens, paths)."""
    from kdyn.train.loop import Loop
    from kdyn.train.session import make_accelerator

    cfg = config if isinstance(config, ExperimentConfig) else load_experiment(config, overrides)
    if report_to:
        cfg.train.report_to = list(report_to)  # type: ignore[assignment]
    out = Path(out)
    offline_tracker_defaults(out)
    acc = make_accelerator(cfg.train, str(out / "trackers"), cfg.train.report_to)
    if acc.is_main_process:
        bench_dir = prepare_run_dir(cfg, out, resume)
    acc.wait_for_everyone()
    bench_dir = Path(cfg.train.bench_dir) if cfg.train.bench_dir else out / "bench"
    bench = load_benchmark(bench_dir)
    store = RunStore(out)
    state = store.load_state() if resume else None
    if resume and state is None:
        raise KdynError(f"--resume: {out} has no saved state yet (killed before the base model was probed); start it again without --resume")
    manifest_path = out / "manifest.json"
    manifest = read_json(manifest_path) if resume and manifest_path.is_file() else {}
    started = time.time()
    manifest |= {"kdyn_version": __version__, "git_sha": git_sha(), "model": cfg.model, "strategy": cfg.train.strategy,
                 "seed": cfg.train.seed, "bench_sha256": bench.manifest.get("sha256", {}), "status": "running",
                 "world_size": acc.num_processes, "precision": "bfloat16" if acc.mixed_precision == "bf16" else "float32",
                 "started": manifest.get("started", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))),
                 "resumed": manifest.get("resumed", 0) + (1 if resume else 0)}  # fmt: skip
    if acc.is_main_process:
        if state is not None:
            store.rollback(state["step"])
        write_json(manifest_path, manifest)
    acc.wait_for_everyone()
    if cfg.train.report_to:
        acc.init_trackers(cfg.name, config=flat(to_dict(cfg)))
    status = "failed"
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # SIGTERM ends as "interrupted"
    try:
        loop = Loop(cfg, bench, acc, store)
        with Reporter(acc.is_main_process and show_progress, loop.total_steps, cfg.train.epochs, console) as rep:
            summary = loop.fit(rep, state)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if acc.is_main_process:
            manifest |= {"status": status, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}
            write_json(manifest_path, manifest)
        if cfg.train.report_to:
            acc.end_training()
    seconds = time.time() - started
    manifest |= {"seconds": round(seconds, 1), "steps": summary["steps"], "probe_seconds": round(summary["probe_seconds"], 1),
                 "train_seconds": round(summary["train_seconds"], 1)}  # fmt: skip
    if acc.is_main_process:
        write_json(manifest_path, manifest)
    return summary | {"seconds": seconds, "run": out, "status": status, "is_main": acc.is_main_process}
