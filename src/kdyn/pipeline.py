"""`kdyn run`: the stages in order, each reading and writing the run directory.

At this stage of kdyn: build the benchmark into RUN/bench/ and score the base model (step 0) into
RUN/probes.parquet. Training, analysis, circuits and the report join as they come to exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kdyn import __version__
from kdyn.bench.build import build_bench
from kdyn.config import to_dict
from kdyn.errors import KdynError
from kdyn.experiment import load_experiment
from kdyn.io import atomic_path, write_json
from kdyn.probe.run import probe


def write_config(path: Path, cfg: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def run_experiment(
    config: str | Path, out: str | Path, overrides: list[str] | None = None,
    on_stage: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:  # fmt: skip
    cfg = load_experiment(config, overrides)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KdynError(f"run directory {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_config(out / "config.yaml", cfg)
    manifest: dict[str, Any] = {"kdyn_version": __version__, "model": cfg.model, "status": "running",
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))}  # fmt: skip
    write_json(out / "manifest.json", manifest)
    on_stage(f"1/2 building benchmark '{cfg.bench.name}' → {out / 'bench'}")
    bench_manifest = build_bench(cfg.bench, out / "bench")
    on_stage(f"2/2 scoring the base model '{cfg.model}' on {bench_manifest['counts']['probes']} probes")
    rows = probe(cfg.model, out / "bench", out / "probes.parquet", cfg.probe)
    manifest |= {"status": "complete", "bench_sha256": bench_manifest["sha256"],
                 "seconds": round(time.time() - started, 1)}  # fmt: skip
    write_json(out / "manifest.json", manifest)
    return {
        "base_rows": rows,
        "outputs": {"benchmark": out / "bench", "base model probes": out / "probes.parquet", "run": out},
    }
