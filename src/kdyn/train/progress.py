"""What a run shows and reports: rich progress bars with ETA (epochs, steps, probing; plain lines every 30 s
when the output is piped, kdyn.progress), one dense log line per logging step, and Accelerate's trackers
(tensorboard / mlflow / wandb, offline unless configured). Only the main process shows or reports anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from kdyn.progress import LineProgress


def offline_tracker_defaults(run_dir: Path) -> None:
    """Trackers write locally unless the user configured them (WANDB_MODE, MLFLOW_TRACKING_URI)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(run_dir / "trackers"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", (run_dir / "trackers" / "mlruns").resolve().as_uri())


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → flat key/value pairs trackers accept (lists as strings)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flat(v, key + ".")
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def log_line(step: int, total: int, epoch: float, loss: float, lr: float, grad_norm: float, tok_s: float, mfu: float) -> str:
    return (f"step {step:05d}/{total:05d} | epoch {epoch:5.2f} | loss {loss:.4f} | lr {lr:.2e} | "
            f"gnorm {grad_norm:.3f} | tok/s {tok_s:,.0f} | mfu {f'{100 * mfu:.1f}%' if mfu <= 1 else '— (peak measured low)'}")  # fmt: skip


class Reporter:
    """Progress bars and log lines for the main process; a silent stand-in elsewhere."""

    def __init__(self, enabled: bool, total_steps: int, epochs: int, console: Console | None = None):
        self.enabled = enabled
        self.progress = LineProgress(TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(),
                                     disable=not enabled)  # fmt: skip
        self.epochs = self.progress.add_task("epochs", total=epochs)
        self.steps = self.progress.add_task("steps", total=total_steps)
        self.probing = self.progress.add_task("probing", total=1, visible=False)

    def __enter__(self) -> Reporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def print(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)  # one line in a log file

    def start_probing(self, total: int, label: str) -> None:
        self.progress.reset(self.probing, total=total, visible=self.enabled, description=label)

    def advance_probing(self, n: int) -> None:
        self.progress.advance(self.probing, n)

    def end_probing(self) -> None:
        self.progress.update(self.probing, visible=False)

    def at(self, step: int, epochs_done: float) -> None:
        self.progress.update(self.steps, completed=step)
        self.progress.update(self.epochs, completed=epochs_done)
