"""Wall time of `kdyn --help` and of every `kdyn CMD --help` in a fresh process (target: under 1 s each).

    .venv/bin/python benchmarks/cli_speed.py [--repeats 3]

Every command and sub-command is taken from the CLI itself (`bench build`, `bench import fictional-knowledge`,
...), so a new command is timed without editing this file. Each is run `--repeats` times through the `kdyn`
script installed beside this Python (else `python -m kdyn`); the median counts. Prints the figures as JSON
and saves them to benchmarks/results/cli_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from kdyn.cli import app
from kdyn.io import dumps_json, write_json

TARGET_SECONDS = 1.0


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's words below a click group, groups included (`()` is `kdyn` itself)."""
    out = [prefix]
    ctx = typer.Context(group)
    for name in sorted(group.list_commands(ctx)):
        sub = group.get_command(ctx, name)
        out += command_paths(sub, prefix + (name,)) if hasattr(sub, "list_commands") else [prefix + (name,)]
    return out


def kdyn_command() -> list[str]:
    script = Path(sys.executable).parent / "kdyn"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kdyn"]


def time_help(words: tuple[str, ...], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([*kdyn_command(), *words, "--help"], capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"`kdyn {' '.join(words)} --help` failed:\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    timings = {}
    for words in command_paths(typer.main.get_command(app)):
        runs = time_help(words, args.repeats)
        timings[" ".join(("kdyn", *words, "--help"))] = {"seconds": [round(s, 3) for s in runs],
                                                          "median": round(statistics.median(runs), 3)}  # fmt: skip
    slowest = max(timings, key=lambda k: timings[k]["median"])
    figures = {
        "benchmark": "cli_speed",
        "repeats": args.repeats,
        "command": " ".join(kdyn_command()),
        "timings": timings,
        "slowest": slowest,
        "slowest_median_seconds": timings[slowest]["median"],
        "target_seconds": TARGET_SECONDS,
        "meets_target": timings[slowest]["median"] < TARGET_SECONDS,
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
    }  # fmt: skip
    print(dumps_json(figures), end="")
    write_json(Path(__file__).parent / "results" / "cli_speed.json", figures)


if __name__ == "__main__":
    main()
