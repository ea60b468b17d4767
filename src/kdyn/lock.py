"""One writer per run folder: an exclusive OS lock (fcntl.flock) on RUN/.kdyn.lock while a command writes.

    from kdyn.lock import run_lock
    with run_lock("runs/quickstart", "train"):     # a second writer gets KdynError naming this process
        ...

`train`, `run`, `circuits`, `analyze` and `report` take it; readers (`query`, `compare`) never do and never
wait. The kernel drops the lock when its process ends, killed or not, so a dead writer never leaves a stale
lock; the file only says who holds it (pid, host, command, start time) and goes when the block ends.
Re-entrant within a thread: `kdyn run` holds it while the stages it calls take it again. A folder the lock
had to create is removed again (with any parents it made) when the block fails and leaves it empty, so bad
input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdyn.errors import KdynError

LOCK_FILE = ".kdyn.lock"
_held: dict[tuple[int, Path], int] = {}  # (thread, resolved folder) → depth of the run_lock blocks holding it


def holder(folder: str | Path) -> dict[str, Any] | None:
    """What the lock file of `folder` says about its writer (None when there is no readable record)."""
    try:
        data = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "another kdyn process (it has not written its name yet)"
    return (f"`{record.get('command', 'kdyn ?')}` (pid {record.get('pid', '?')} on {record.get('host', '?')}, "
            f"since {record.get('started', '?')})")  # fmt: skip


def _make(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, deepest first."""
    if folder.exists() and not folder.is_dir():
        raise KdynError(f"run directory {folder} exists and is not a directory")
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdynError(f"cannot write to {folder}: {e.strerror or e}") from None
    return missing


def _acquire(folder: Path, command: str) -> int:
    """An fd holding the exclusive lock on folder/.kdyn.lock, with this process's record written into it."""
    path = folder / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise KdynError(f"cannot write to {folder}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise KdynError(f"{folder} is being written by {describe(holder(folder))}; one writer per run "
                            f"folder: wait for it to finish or choose another folder") from None  # fmt: skip
        try:  # the last holder may have unlinked the file between our open and our flock: lock the live one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": f"kdyn {command}",
              "argv": " ".join(sys.argv), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    return fd


@contextlib.contextmanager
def run_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the run folder's writer lock for the block (creating the folder if needed); KdynError naming the
    holder when another process, or another thread of this one, holds it."""
    created = _make(Path(folder))
    run = Path(folder).resolve()
    key = (threading.get_ident(), run)
    if key in _held:  # this thread holds it already (kdyn run → its stages)
        _held[key] += 1
        try:
            yield run
        finally:
            _held[key] -= 1
        return
    try:
        fd = _acquire(run, command)
    except BaseException:
        _remove_empty(created)
        raise
    _held[key] = 1
    failed = True
    try:
        yield run
        failed = False
    finally:
        del _held[key]
        with contextlib.suppress(OSError):  # unlinked while still locked; _acquire's inode check covers the race
            (run / LOCK_FILE).unlink()
        os.close(fd)
        if failed:
            _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    for folder in created:  # deepest first; a folder something else wrote into stays
        with contextlib.suppress(OSError):
            folder.rmdir()
