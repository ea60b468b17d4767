"""Speed of `kdyn analyze` on a synthetic run: 10,000 items x base + 10 checkpoints (target: under 5 s).

    .venv/bin/python benchmarks/analysis_speed.py [--items 10000] [--checkpoints 10] [--repeats 3]

Times the library call (read the run, compute every table with 1,000 bootstrap replicates, write
analysis/) several times, and once the command in a fresh process (Python start-up and imports included).
Prints the figures as JSON and saves them to benchmarks/results/analysis_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kdyn.analysis import analyze
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.io import dumps_json, write_json

TARGET_SECONDS = 5.0
CLI = "import sys, typer; from kdyn.analysis.commands import register; app = typer.Typer(); register(app); app()"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--checkpoints", type=int, default=10, help="checkpoints after the base (step 0)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = write_synthetic_run(Path(tmp) / "run", n_items=args.items, n_checkpoints=args.checkpoints)
        library = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = analyze(run)
            library.append(time.perf_counter() - start)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CLI, "analyze", str(run)], capture_output=True, text=True)
        cli = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"the analyze command failed:\n{proc.stderr}")
    figures = {
        "benchmark": "analysis_speed",
        "items": args.items,
        "checkpoints": args.checkpoints + 1,
        "rows": args.items * (args.checkpoints + 1),
        "bootstrap_replicates": result.summary["bootstrap"]["replicates"],
        "tables": {name: int(len(t) if hasattr(t, "__len__") else t.num_rows) for name, t in result.tables.items()},
        "library_seconds": [round(s, 3) for s in library],
        "library_seconds_median": round(statistics.median(library), 3),
        "command_seconds_fresh_process": round(cli, 3),
        "target_seconds": TARGET_SECONDS,
        "meets_target": max(statistics.median(library), cli) < TARGET_SECONDS,
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()},
    }  # fmt: skip
    print(dumps_json(figures), end="")
    write_json(Path(__file__).parent / "results" / "analysis_speed.json", figures)


if __name__ == "__main__":
    main()
