"""Progress bars that still say something when the output is piped (a log file, `| tee`, a scheduler).

On a terminal `LineProgress` is a plain rich progress bar. Elsewhere rich draws nothing until the end, so
it also prints one line per running task at least every `every` seconds (default 30; the environment
variable KDYN_PROGRESS_SECONDS changes it), from a background thread, so a step that takes minutes still
shows the run is alive:

    probing@42 231/462 (50%) | 7.7/s | elapsed 0:30 | ETA 0:30

    with LineProgress(TextColumn("{task.description}"), BarColumn(), console=console) as bar:
        task = bar.add_task("probing", total=n)
        bar.advance(task, k)
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

from rich.progress import Progress, Task

from kdyn.errors import KdynError

DEFAULT_SECONDS = 30.0
ENV = "KDYN_PROGRESS_SECONDS"


def line_seconds() -> float:
    """Seconds between plain progress lines: KDYN_PROGRESS_SECONDS, else 30."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise KdynError(f"{ENV} must be a positive number of seconds, got '{raw}'")
    return value


def clock(seconds: float | None) -> str:
    """0:30, 12:05, 1:02:03; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def amount(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def task_line(task: Task) -> str:
    """`description done/total (pct%) | rate | elapsed | ETA` for one task."""
    total = task.total
    done = f"{amount(task.completed)}/{amount(total)} ({task.percentage:.0f}%)" if total else amount(task.completed)
    rate = task.speed  # rich's estimate over the last 30 s of updates (a resume's jump is not counted)
    speed = "rate ?" if not rate else f"{rate:.3g}/s"
    return f"{task.description} {done} | {speed} | elapsed {clock(task.elapsed)} | ETA {clock(task.time_remaining)}"


class LineProgress(Progress):
    """A rich Progress that prints `task_line` for each running task every `every` s when not on a terminal."""

    def __init__(self, *columns: Any, every: float | None = None, **kwargs: Any):
        super().__init__(*columns, **kwargs)
        self.every = every if every is not None else line_seconds()
        self._last: float | None = None
        self._tick_lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def piped(self) -> bool:
        return not self.disable and not self.console.is_terminal and not self.console.is_jupyter

    def start(self) -> None:
        super().start()
        if self.piped and self._thread is None:
            self._last = self.get_time()
            self._stopped.clear()
            self._thread = threading.Thread(target=self._beat, name="kdyn-progress-lines", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopped.set()
            self._thread.join()
            self._thread = None
        super().stop()

    def _beat(self) -> None:
        while not self._stopped.wait(min(self.every, 1.0)):
            self.tick()

    def lines(self) -> list[str]:
        return [task_line(t) for t in self.tasks if t.visible and t.started and not t.finished]

    def tick(self) -> bool:
        """Print the lines if `every` seconds have passed since the last print (or the start); True if printed."""
        with self._tick_lock:
            now = self.get_time()
            if self._last is not None and now - self._last < self.every:
                return False
            self._last = now
            for line in self.lines():
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return True
