"""`kdyn train`: an experiment config → a run directory (DESIGN.md "Run directory"), resumable.

    from kdyn.train import train
    result = train("quickstart", out="runs/quickstart")                  # or an ExperimentConfig
    train("quickstart", out="runs/quickstart", resume=True)              # after a crash or kill

Builds the benchmark into RUN/bench (unless train.bench_dir names one), writes config.yaml and
manifest.json (status running → complete / failed / interrupted), then runs the loop. Only the main
process writes. Bad input (a read-only folder, an unknown model, a bad bench_dir or replay corpus, a corrupt
resume state) fails before the loop and leaves nothing it made behind; the leftovers of a kill are tidied on the
next start. A complete run deletes its resume state (RUN/state/) unless `train.keep_state`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console

from kdyn import __version__
from kdyn.bench.build import build_bench
from kdyn.bench.schema import Benchmark, load_benchmark
from kdyn.config import to_dict
from kdyn.device import resolve_precision
from kdyn.errors import KdynError
from kdyn.experiment import ExperimentConfig, load_experiment
from kdyn.io import atomic_path, check_writable, read_json, write_json
from kdyn.lock import LOCK_FILE, run_lock
from kdyn.models.registry import check_model
from kdyn.train.checkpoints import RunStore
from kdyn.train.config import config_difference
from kdyn.train.progress import Reporter, flat, offline_tracker_defaults

if TYPE_CHECKING:
    from accelerate import Accelerator

    from kdyn.train.loop import Loop


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
    """config.yaml, unless it says this already (a resume leaves an earlier run's files as they were)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def is_complete(out: Path) -> bool:
    try:
        return read_json(out / "manifest.json").get("status") == "complete"
    except (KdynError, AttributeError):
        return False


def check_run_dir(cfg: ExperimentConfig, out: Path, resume: bool) -> None:
    """Everything that can be checked before anything is written: the folder, --resume, the model, bench_dir."""
    if out.exists() and not out.is_dir():
        raise KdynError(f"run directory {out} exists and is not a directory")
    has_run = (out / "state").is_dir() or (out / "probes.parquet").is_file()
    if resume:
        if not (out / "config.yaml").is_file():
            raise KdynError(f"--resume: {out} has no config.yaml; start the run without --resume")
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        # options added to kdyn after the run started are no difference (the sweep's rule: resumable across versions)
        found = config_difference(saved, to_dict(cfg)) if isinstance(saved, dict) else "the file is not a mapping"
        if found:
            raise KdynError(f"--resume: the config differs from {out / 'config.yaml'} at {found}; resume with the same "
                            f"config and --set values")  # fmt: skip
    elif has_run and is_complete(out):
        raise KdynError(f"{out} already holds a complete run; choose another --out (or delete it to train again)")
    elif has_run:
        raise KdynError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    check_model(cfg.model)
    if cfg.train.bench_dir and not load_benchmark(cfg.train.bench_dir).documents:  # KdynError naming what is wrong
        raise KdynError(f"{cfg.train.bench_dir} has no documents (documents.jsonl is empty): nothing to train on")


def prepare_run_dir(cfg: ExperimentConfig, out: Path, resume: bool) -> Path:
    """After check_run_dir: (re)build the benchmark, write config.yaml; returns the benchmark directory."""
    out.mkdir(parents=True, exist_ok=True)
    bench_dir = Path(cfg.train.bench_dir) if cfg.train.bench_dir else out / "bench"
    if not cfg.train.bench_dir and not (resume and (bench_dir / "manifest.json").is_file()):
        build_bench(cfg.bench, bench_dir)
    if cfg.train.bench_dir and out / "bench" != bench_dir and not (out / "bench").exists():
        shutil.copytree(bench_dir, out / "bench")  # the run carries the probes it was scored on
    write_config(out / "config.yaml", cfg)
    return bench_dir


def no_state(out: Path) -> KdynError:
    if (out / "probes.parquet").is_file():
        return KdynError(f"--resume: {out} has results but no resume state (state/ was deleted), so it cannot be "
                         f"continued; start over with another --out, or delete {out}")  # fmt: skip
    return KdynError(f"--resume: {out} has no resume state yet (it stopped before its first probe point, step 0, "
                     "was saved); start it again without --resume")  # fmt: skip


def already_complete(cfg: ExperimentConfig, out: Path, acc: Accelerator, console: Console | None) -> dict[str, Any]:
    """`--resume` of a complete run (its state/ may be gone already): nothing to train; the summary it ended with."""
    manifest = read_json(out / "manifest.json")
    if acc.is_main_process:
        if not cfg.train.keep_state:
            RunStore(out).drop_state()
        steps = manifest.get("steps", "?")
        (console or Console()).print(f"{out}: training is complete ({steps} steps); nothing to resume", highlight=False,
                                     soft_wrap=True)  # fmt: skip
    return {"steps": manifest.get("steps", 0), "train_seconds": manifest.get("train_seconds", 0.0), "tokens": 0,
            "probe_seconds": manifest.get("probe_seconds", 0.0), "seconds": manifest.get("seconds", 0.0), "run": out,
            "status": "complete", "is_main": acc.is_main_process}  # fmt: skip


def train(config: str | Path | ExperimentConfig, out: str | Path, resume: bool = False, overrides: list[str] | None = None,
          report_to: list[str] | None = None, console: Console | None = None, show_progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train with interleaved probing into `out`; returns a summary (steps, seconds, tokens, paths). The main
    process holds the run folder's writer lock (kdyn.lock) throughout; the other ranks write nothing."""
    from kdyn.train.session import make_accelerator

    cfg = config if isinstance(config, ExperimentConfig) else load_experiment(config, overrides)
    if report_to:
        cfg.train.report_to = list(report_to)  # type: ignore[assignment]
    out = Path(out)
    check_writable(out)  # before any work, and before the lock makes the folder
    offline_tracker_defaults(out)
    acc = make_accelerator(cfg.train, str(out / "trackers"), cfg.train.report_to)
    with run_lock(out, "train") if acc.is_main_process else contextlib.nullcontext():
        return train_locked(cfg, out, resume, acc, console, show_progress)


def train_locked(cfg: ExperimentConfig, out: Path, resume: bool, acc: Accelerator, console: Console | None,
                 show_progress: bool) -> dict[str, Any]:  # fmt: skip
    """`train` once the accelerator is made and (on the main process) the lock taken: checks are made under it."""
    store = RunStore(out)
    if acc.is_main_process:
        store.recover()  # what a kill left mid-write, before anything reads the folder
        check_run_dir(cfg, out, resume)
    acc.wait_for_everyone()
    if resume and is_complete(out):
        return already_complete(cfg, out, acc, console)
    status, loop = "failed", None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # SIGTERM ends as "interrupted"
    manifest_path = out / "manifest.json"
    manifest = read_json(manifest_path) if resume and manifest_path.is_file() else {}
    started = time.time()
    try:
        loop, bench, state = set_up(cfg, out, resume, acc, store)
        loop.started = started  # the run's clock (Loop.seconds) counts this session's set-up too
        manifest |= {"kdyn_version": __version__, "git_sha": git_sha(), "model": cfg.model, "strategy": cfg.train.strategy,
                     "seed": cfg.train.seed, "bench_sha256": bench.manifest.get("sha256", {}), "status": "running",
                     "world_size": acc.num_processes, "precision": "bfloat16" if acc.mixed_precision == "bf16" else "float32",
                     "probe_precision": resolve_precision(cfg.probe.precision, acc.device),
                     "started": manifest.get("started", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))),
                     "resumed": manifest.get("resumed", 0) + (1 if resume else 0)}  # fmt: skip
        if acc.is_main_process:
            if state is not None:
                store.rollback(state["step"])
            write_json(manifest_path, manifest)
        acc.wait_for_everyone()
        if cfg.train.report_to:
            acc.init_trackers(cfg.name, config=flat(to_dict(cfg)))
        with Reporter(acc.is_main_process and show_progress, loop.total_steps, cfg.train.epochs, console) as rep:
            summary = loop.fit(rep, resumed=state is not None)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if loop is not None:  # set-up failures leave no manifest (set_up removed what it made)
            if acc.is_main_process:
                manifest |= {"status": status, "ended": time.strftime("%Y-%m-%dT%H:%M:%S")}
                write_json(manifest_path, manifest)
            if cfg.train.report_to:
                acc.end_training()
    seconds = loop.seconds()  # over all sessions
    manifest |= {"seconds": round(seconds, 1), "steps": summary["steps"], "probe_seconds": round(summary["probe_seconds"], 1),
                 "train_seconds": round(summary["train_seconds"], 1)}  # fmt: skip
    if acc.is_main_process:
        write_json(manifest_path, manifest)
        if not cfg.train.keep_state:
            store.drop_state()  # only --resume reads it, and a complete run never resumes
    return summary | {"seconds": seconds, "run": out, "status": status, "is_main": acc.is_main_process}


def set_up(cfg: ExperimentConfig, out: Path, resume: bool, acc: Accelerator,
           store: RunStore) -> tuple[Loop, Benchmark, dict[str, Any] | None]:  # fmt: skip
    """Benchmark, config.yaml, model, data and (on --resume) the restored state. When any of it fails, what this
    call created in `out` is removed again (what an earlier run made stays), so bad input leaves nothing behind."""
    from kdyn.train.loop import Loop

    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    try:
        if acc.is_main_process:
            prepare_run_dir(cfg, out, resume)
        acc.wait_for_everyone()
        bench = load_benchmark(Path(cfg.train.bench_dir) if cfg.train.bench_dir else out / "bench")
        state = store.load_state() if resume else None
        if resume and state is None:
            raise no_state(out)
        loop = Loop(cfg, bench, acc, store)
        if state is not None:
            loop.restore(state)
    except BaseException:
        if acc.is_main_process and out.is_dir():
            for path in out.iterdir():
                if path.name not in before and path.name != LOCK_FILE:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise
    return loop, bench, state
