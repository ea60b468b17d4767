"""Files in and out: atomic writes (temp name, then rename) and JSONL with line-numbered errors.

Every output kdyn writes goes through here so an interrupted command never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdyn.errors import KdynError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The result gets the permissions a plain `open()` would give it (0666 less the umask): tempfile makes its
    files private (0600), which would hide a run's results from the rest of a shared group."""
    path = Path(path)
    check_writable(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds (with the
    permissions of a plain `mkdir`, 0777 less the umask, not tempfile's private 0700)."""
    path = Path(path)
    check_writable(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(folder: str | Path) -> None:
    """KdynError unless files can be made in `folder`, or, where it does not exist yet, in the nearest folder above
    it (where it would be made). Commands call it before their work, so a read-only --out fails at once rather
    than after minutes of scoring or training."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise KdynError(f"cannot write to {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KdynError(f"cannot write to {folder}: {existing} is read-only for this user; make it writable or "
                        "choose another output folder")  # fmt: skip


# what atomic_path / atomic_dir leave when killed: `.NAME.<tempfile's 8 characters>.tmp` and `.NAME.old`
_LEFTOVER = re.compile(r"^\.(?P<name>.+?)(?:\.[a-z0-9_]{8}\.tmp|\.old)$")


def recover_atomic(folder: str | Path, names: str = "*") -> list[str]:
    """Tidy what a killed atomic_path / atomic_dir left in `folder` for entries matching the glob `names`: a
    `.NAME.old` whose NAME is missing (killed between atomic_dir's two renames) becomes NAME again, the last
    complete version; other `.NAME.old` and every temporary are deleted. Returns what it deleted or restored.
    Only for a folder no other process writes to meanwhile (a run folder under its lock, kdyn.lock)."""
    folder = Path(folder)
    done = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _LEFTOVER.match(entry.name)
        if match is None or not Path(match["name"]).match(names):
            continue
        target = folder / match["name"]
        if entry.name.endswith(".old") and not target.exists():
            os.replace(entry, target)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(entry.name)
    return done


def dumps_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no NaN surprises) so equal data gives equal bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps_json(obj), encoding="utf-8")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise KdynError(f"file not found: {path}")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise KdynError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; any other encoding raises KdynError naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise KdynError(f"{path}, line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None


def read_jsonl_numbered(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; a malformed line (bad JSON, not an
    object, not UTF-8) raises KdynError naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise KdynError(f"file not found: {path}")
    rows = []
    with open(path, "rb") as f:  # bytes, split at b"\n" only: a JSON string may hold U+2028
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise KdynError(f"{path}, line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise KdynError(f"{path}, line {lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise KdynError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line raises KdynError naming the file and line number."""
    return [row for _, row in read_jsonl_numbered(path)]


def write_parquet(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
