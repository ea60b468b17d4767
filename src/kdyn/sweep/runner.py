"""`kdyn sweep`: a suite's grid points one after another, each as its own `kdyn run` process, then compare.

    from kdyn.sweep import sweep
    result = sweep("strategies", out="runs/sweeps/strategies")      # result.failed: names of failed runs

What happens to a point depends only on its run directory, so a sweep can be stopped and started again:
    done    manifest.json says complete and analysis/summary.json exists  → skipped
    resume  state/ holds a resume point (interrupted, killed or failed)    → `kdyn run … --resume`
    new     nothing there yet                                              → `kdyn run …`
    stale   config.yaml differs from the suite's config for this point     → not run, reported as failed
A failed run is reported and the sweep goes on. Each run's output is appended to DIR/logs/<run>.log;
DIR/sweep.json records every point's command, outcome and seconds. Because each run is one process with
its own directory, `scheduler_commands` gives the shell lines a cluster scheduler can run in parallel.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from kdyn.io import write_json
from kdyn.sweep.suite import Point, Suite, load_suite, select
from kdyn.train.config import config_difference

Status = Literal["done", "resume", "new", "stale"]
Echo = Callable[[str], None] | None


@dataclass
class PointRun:
    """A point's state before the sweep touched it and what became of it."""

    point: Point
    run_dir: Path
    status: Status
    reason: str = ""
    outcome: str = ""  # skipped | complete | failed | stale | interrupted | not selected
    returncode: int | None = None
    seconds: float | None = None
    error: str = ""


@dataclass
class SweepResult:
    suite: Suite
    out: Path
    runs: list[PointRun]
    outputs: dict[str, Path] = field(default_factory=dict)  # comparison folder, report file
    stage_failures: list[str] = field(default_factory=list)  # "report", when its command failed
    comparison: Any = None  # kdyn.analysis.comparison.Comparison of the finished runs, once written

    @property
    def failed(self) -> list[str]:
        """Runs that failed or are stale, then failed output stages."""
        return [r.point.name for r in self.runs if r.outcome in ("failed", "stale")] + self.stage_failures

    @property
    def done_dirs(self) -> list[Path]:
        """Runs finished now or earlier (not stale), and points left out by --only that are done."""
        return [r.run_dir for r in self.runs if r.outcome in ("complete", "skipped") or
                (r.outcome == "not selected" and point_status(r.point, r.run_dir)[0] == "done")]  # fmt: skip


def default_out(suite: Suite) -> Path:
    return Path("runs") / "sweeps" / suite.name


def point_status(point: Point, run_dir: Path, check_config: bool = True) -> tuple[Status, str]:
    """What the sweep will do with this point's run directory, and why."""
    config = run_dir / "config.yaml"
    if check_config and config.is_file():
        try:
            saved = yaml.safe_load(config.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            saved = None
        found = config_difference(saved, point.config) if isinstance(saved, dict) else "the file is not a mapping"
        if found:
            return "stale", (f"{config} differs from the suite's config for this run at {found}; delete "
                             f"{run_dir} or sweep into another --out")  # fmt: skip
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    status = manifest.get("status", "no manifest") if isinstance(manifest, dict) else "unreadable manifest"
    if status == "complete" and (run_dir / "analysis" / "summary.json").is_file():
        return "done", ""
    if status == "complete":  # `kdyn run --resume` skips the training (its state/ may be gone: train.keep_state)
        return "resume", "trained, not analysed"
    if (run_dir / "state" / "trainer.json").is_file():
        return "resume", f"training {status}"
    return "new", ""


def command(suite: Suite, point: Point, run_dir: Path, resume: bool, launcher: str = "") -> list[str]:
    """The `kdyn run` command line of one point; `launcher` replaces `python` (e.g. 'accelerate launch')."""
    head = shlex.split(launcher) if launcher else [sys.executable]
    cmd = [*head, "-m", "kdyn", "run", suite.base, "--out", str(run_dir), *(["--resume"] if resume else [])]
    return cmd + [x for o in point.overrides for x in ("--set", o)]


def scheduler_commands(suite: Suite, out: Path, only: list[str] | None = None, launcher: str = "python") -> list[str]:
    """One shell line per point still to run (new or resumable), for a scheduler."""
    lines = []
    for p in select(suite.points, list(only or [])):
        status, _ = point_status(p, out / p.name)
        if status in ("new", "resume"):
            lines.append(shlex.join(command(suite, p, out / p.name, status == "resume", launcher)))
    return lines


def plan(suite: Suite, out: Path, only: list[str] | None = None) -> list[PointRun]:
    """Every point with its current status; points left out by `only` are marked 'not selected'."""
    chosen = {p.name for p in select(suite.points, list(only or []))}
    runs = []
    for p in suite.points:
        status, reason = point_status(p, out / p.name)
        runs.append(PointRun(p, out / p.name, status, reason, outcome="" if p.name in chosen else "not selected"))
    return runs


def last_error(log: Path) -> str:
    """The line that says why a run failed: its last 'error:' line, else its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1][:300]


def run_logged(cmd: list[str], log: Path, echo: Echo = None) -> int:
    """Run `cmd`, appending its output to `log` (and passing each line to `echo`); returns the exit code.
    An interrupt (Ctrl-C, SIGTERM) stops the child too — `kdyn train` then marks its run interrupted."""
    log.parent.mkdir(parents=True, exist_ok=True)
    columns = shutil.get_terminal_size((120, 24)).columns  # the child's tables fit this terminal (or 120)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                env=os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": str(columns)})  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                f.flush()
                if echo is not None:
                    echo(line)
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def write_state(result: SweepResult, started: str) -> None:
    """DIR/sweep.json: the suite, and per point its command, status, outcome and time."""
    points = []
    for r in result.runs:
        resume = r.status == "resume"
        points.append({"name": r.point.name, "labels": list(r.point.labels), "seed": r.point.seed,
                       "run_dir": str(r.run_dir), "status_before": r.status, "outcome": r.outcome or "pending",
                       "returncode": r.returncode, "seconds": r.seconds, "error": r.error or r.reason or None,
                       "command": shlex.join(command(result.suite, r.point, r.run_dir, resume, "python"))})  # fmt: skip
    write_json(result.out / "sweep.json", {"suite": result.suite.config.name, "source": result.suite.source,
                                           "smoke": result.suite.smoke, "base": result.suite.base, "started": started,
                                           "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "points": points})  # fmt: skip


def previous_seconds(out: Path) -> dict[str, float]:
    """Seconds each run took in earlier sweeps into `out` (sweep.json), so skipped runs keep their time."""
    try:
        data = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
        return {p["name"]: p["seconds"] for p in data.get("points", []) if p.get("seconds") is not None}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def drop_resume_state(run_dir: Path, suite: Suite) -> bool:
    """Delete a finished run's state/ unless the suite keeps it (resume state is GBs per real model, and a done run
    never resumes); True when there was one to delete."""
    state = run_dir / "state"
    if suite.config.keep_state or not state.is_dir():
        return False
    shutil.rmtree(state, ignore_errors=True)
    return True


def sweep(suite: str | Path | Suite, out: str | Path | None = None, smoke: bool = False,
          only: list[str] | None = None, say: Callable[[str], None] = print, echo: Echo = None,
          compare: bool = True, launcher: str = "") -> SweepResult:  # fmt: skip
    """Run every selected point that is not done, then write the comparison (and the report, when available).
    `launcher` replaces this Python in each run's command (e.g. 'accelerate launch --mixed_precision bf16')."""
    from kdyn.sweep.outputs import write_outputs

    suite = suite if isinstance(suite, Suite) else load_suite(suite, smoke)
    out = Path(out) if out is not None else default_out(suite)
    result = SweepResult(suite, out, plan(suite, out, only))
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    earlier = previous_seconds(out)
    todo = [r for r in result.runs if r.outcome != "not selected"]
    for i, r in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {r.point.name}"
        if r.status == "done":
            r.outcome, r.seconds = "skipped", earlier.get(r.point.name)
            freed = drop_resume_state(r.run_dir, suite)  # a run finished elsewhere (--print-commands) keeps it
            say(f"{head}: finished earlier, skipped" + ("; its resume state deleted (keep_state: false)" if freed else ""))
            continue
        if r.status == "stale":
            r.outcome, r.error = "stale", r.reason
            say(f"{head}: not run: {r.reason}")
            continue
        cmd = command(suite, r.point, r.run_dir, r.status == "resume", launcher)
        log = out / "logs" / f"{r.point.name}.log"
        say(f"{head}: {'resuming (' + r.reason + ')' if r.status == 'resume' else 'starting'}; log {log}")
        write_state(result, started)
        t0 = time.time()
        try:
            r.returncode = run_logged(cmd, log, echo)
        except KeyboardInterrupt:  # the run marked itself interrupted; the next sweep resumes it
            r.outcome, r.seconds = "interrupted", round(time.time() - t0, 1)
            write_state(result, started)
            raise
        r.seconds = round(time.time() - t0, 1)
        after, why = point_status(r.point, r.run_dir, check_config=False)  # kdyn may have changed meanwhile
        if r.returncode == 0 and after == "done":
            r.outcome = "complete"
            drop_resume_state(r.run_dir, suite)
            say(f"{head}: complete in {r.seconds / 60:.1f} min")
        else:
            r.outcome = "failed"
            r.error = (last_error(log) or f"exit code {r.returncode}") if r.returncode else \
                f"the run exited 0 but is not done ({after}: {why or 'no complete manifest or no analysis'})"  # fmt: skip
            say(f"{head}: FAILED (exit code {r.returncode}): {r.error}  [log: {log}]")
        write_state(result, started)
    if compare:
        write_outputs(result, say)
    write_state(result, started)
    return result


def summary_line(result: SweepResult) -> str:
    counts: dict[str, int] = {}
    for r in result.runs:
        counts[r.outcome or "pending"] = counts.get(r.outcome or "pending", 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    return f"sweep '{result.suite.name}': {len(result.runs)} runs ({parts})"


def describe(runs: list[PointRun]) -> list[dict[str, Any]]:
    """Rows for a dry-run table."""
    return [{"run": r.point.name, "status": r.status if r.outcome != "not selected" else "not selected",
             "note": r.reason, "dir": str(r.run_dir)} for r in runs]  # fmt: skip
