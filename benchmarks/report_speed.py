"""Speed and size of `kdyn report` on synthetic runs: quickstart-sized and large (its share of the quickstart's
20-minute end-to-end budget; target: under 60 s and under 5 MB for the quickstart-sized run).

    .venv/bin/python benchmarks/report_speed.py [--repeats 2]

Each run is analysed first (not timed), then the report is rendered `--repeats` times: read the run, draw and
save every figure (PNG + SVG), write the HTML. Prints the figures as JSON and saves them to
benchmarks/results/report_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

from kdyn.analysis import analyze
from kdyn.analysis.synthetic import write_synthetic_run
from kdyn.io import dumps_json, write_json
from kdyn.report import report

TARGET_SECONDS = 60.0
TARGET_BYTES = 5_000_000
SIZES = {"quickstart-sized": (462, 6), "large": (10_000, 10)}  # items, checkpoints after the base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (items, checkpoints) in SIZES.items():
            run = write_synthetic_run(Path(tmp) / name, n_items=items, n_checkpoints=checkpoints,
                                      checkpoints_per_epoch=1)  # fmt: skip
            analyze(run)
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = report([run])
                seconds.append(time.perf_counter() - start)
            plots = list((run / "plots").iterdir())
            cases[name] = {"items": items, "checkpoints": checkpoints + 1, "seconds": [round(s, 2) for s in seconds],
                           "seconds_median": round(statistics.median(seconds), 2), "html_bytes": out.stat().st_size,
                           "figures": len(plots) // 2, "plot_bytes": sum(p.stat().st_size for p in plots)}  # fmt: skip
    qs = cases["quickstart-sized"]
    figures = {
        "benchmark": "report_speed",
        "cases": cases,
        "target_seconds": TARGET_SECONDS,
        "target_html_bytes": TARGET_BYTES,
        "meets_target": qs["seconds_median"] < TARGET_SECONDS and qs["html_bytes"] < TARGET_BYTES,
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "matplotlib": matplotlib.__version__,
                    "platform": platform.platform()},
    }  # fmt: skip
    print(dumps_json(figures), end="")
    write_json(Path(__file__).parent / "results" / "report_speed.json", figures)


if __name__ == "__main__":
    main()
