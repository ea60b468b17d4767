"""Piped output gets a plain progress line at least every N seconds (kdyn.progress); rich alone draws nothing
until the end when stdout is not a terminal. A fake clock for the numbers, a tiny interval for the thread."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from kdyn.errors import KdynError
from kdyn.progress import LineProgress, clock, line_seconds
from kdyn.train.progress import Reporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def piped() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def wait_for(buf: io.StringIO, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in buf.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    return buf.getvalue()


def test_piped_line_every_interval_with_rate_and_eta():
    console, buf = piped()
    t = FakeClock()
    with LineProgress(console=console, get_time=t, every=30) as bar:
        task = bar.add_task("probing@6", total=100)
        for _ in range(2):  # 10 items per second
            t.now += 1
            bar.advance(task, 10)
        t.now = 1029.0  # 29 s after the start: not yet
        bar.tick()
        assert buf.getvalue() == ""
        t.now = 1031.0
        bar.tick()
        lines = buf.getvalue().splitlines()
        assert lines == ["probing@6 20/100 (20%) | 10/s | elapsed 0:31 | ETA 0:08"]
        t.now = 1045.0  # 14 s after the last line
        bar.tick()
        assert len(buf.getvalue().splitlines()) == 1
        t.now = 1061.0
        bar.tick()
        assert len(buf.getvalue().splitlines()) == 2


def test_stalled_work_still_prints_from_the_background_thread():
    console, buf = piped()
    with LineProgress(console=console, every=0.05) as bar:
        bar.add_task("circuits", total=4)  # no advance at all: one long step
        out = wait_for(buf, "\ncircuits 0/4")
    assert out.count("circuits 0/4 (0%) | rate ? |") >= 2


def test_terminal_and_disabled_bars_print_no_lines():
    buf = io.StringIO()
    bar = LineProgress(console=Console(file=buf, force_terminal=True), every=0.01)
    assert not bar.piped
    console, buf2 = piped()
    off = LineProgress(console=console, every=0.01, disable=True)
    with off:
        off.add_task("x", total=2)
        time.sleep(0.05)
    assert not off.piped and buf2.getvalue() == ""


def test_training_reporter_prints_lines_when_piped(monkeypatch):
    monkeypatch.setenv("KDYN_PROGRESS_SECONDS", "0.02")
    console, buf = piped()
    with Reporter(True, total_steps=10, epochs=2, console=console) as rep:
        rep.at(3, 0.6)
        out = wait_for(buf, "steps")
    assert "steps 3/10 (30%)" in out and "epochs 0.60/2 (30%)" in out


def test_interval_setting_is_validated(monkeypatch):
    monkeypatch.setenv("KDYN_PROGRESS_SECONDS", "12")
    assert line_seconds() == 12.0
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv("KDYN_PROGRESS_SECONDS", bad)
        with pytest.raises(KdynError, match="KDYN_PROGRESS_SECONDS must be a positive number"):
            line_seconds()
    assert clock(3725) == "1:02:05" and clock(None) == "?"
