"""The run directory's resumable state: result parts, model checkpoints, and the latest resume point.

Layout (DESIGN.md "Run directory", plus two private folders):
    parts/{probes,fact_loss,eval_loss,train_log}/step-NNNNNN.parquet   results of each probe point
    checkpoints/step-NNNNNN/     safetensors (LoRA: the adapter only), tokenizer, kdyn_config.yaml
    state/                       optimizer, scheduler, RNG and trainer.json: only the latest point
Order at a probe point: parts, checkpoint, then state (the commit). On resume everything after the
committed step is dropped, and the top-level parquet files are rebuilt from the parts atomically.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from kdyn.errors import KdynError
from kdyn.io import atomic_dir, read_json, recover_atomic, write_json, write_parquet

KINDS = ("probes", "fact_loss", "eval_loss", "train_log")


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def step_of(path: Path) -> int:
    return int(path.name.split("-")[1].split(".")[0])


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def part_paths(self, kind: str) -> list[Path]:
        return sorted((self.root / "parts" / kind).glob("step-*.parquet"), key=step_of)

    def write_part(self, kind: str, step: int, table: pa.Table) -> None:
        write_parquet(self.root / "parts" / kind / f"{step_name(step)}.parquet", table)

    def rebuild(self, schemas: dict[str, pa.Schema]) -> None:
        """Top-level probes / fact_loss / eval_loss / train_log .parquet = the concatenated parts, written atomically."""
        for kind in KINDS:
            tables = [pq.read_table(p) for p in self.part_paths(kind)]
            table = pa.concat_tables([t.cast(schemas[kind]) for t in tables]) if tables else schemas[kind].empty_table()
            write_parquet(self.root / f"{kind}.parquet", table)

    def read_parts(self, kind: str) -> list[dict[str, Any]]:
        return [r for p in self.part_paths(kind) for r in pq.read_table(p).to_pylist()]

    def save_checkpoint(self, model: Any, tokenizer: Any, step: int, config: dict[str, Any], keep_last: int) -> Path:
        path = self.root / "checkpoints" / step_name(step)
        with atomic_dir(path) as tmp, quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / "kdyn_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        if keep_last > 0:
            for old in self.checkpoint_dirs()[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def checkpoint_dirs(self) -> list[Path]:
        return sorted((self.root / "checkpoints").glob("step-*[0-9]"), key=step_of)

    def save_state(self, trainer: dict[str, Any], optimizer: Any, scheduler: Any,
                   tensors: dict[str, dict[str, torch.Tensor]]) -> None:  # fmt: skip
        """`tensors`: file stem → state dict (trainable weights, previous-epoch model), as safetensors."""
        with atomic_dir(self.root / "state") as tmp:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(rng_state(), tmp / "rng.pt")
            for stem, sd in tensors.items():
                save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / f"{stem}.safetensors"))
            write_json(tmp / "trainer.json", trainer)

    def load_state(self) -> dict[str, Any] | None:
        path = self.root / "state" / "trainer.json"
        return read_json(path) if path.is_file() else None

    def load_tensor_file(self, name: str) -> Any:
        path = self.root / "state" / name
        if not path.is_file():
            raise KdynError(f"{path} is missing; the run's state is incomplete and cannot be resumed")
        try:
            if name.endswith(".safetensors"):
                return load_file(str(path))
            return torch.load(path, weights_only=True)  # tensors and plain data only: never runs pickled code
        except pickle.UnpicklingError:
            why = "it holds Python objects other than tensors, which kdyn does not run"
            raise self.not_resume_state(name, why) from None
        except (SafetensorError, RuntimeError, EOFError, KeyError, ValueError):
            raise self.not_resume_state(name, "it is corrupt or truncated") from None

    def not_resume_state(self, name: str, why: str) -> KdynError:
        return KdynError(f"{self.root / 'state' / name} is not resume state kdyn wrote ({why}); this run cannot be "
                         f"resumed: start over with another --out, or delete {self.root} and train again")  # fmt: skip

    def drop_state(self) -> bool:
        """Delete state/ (a complete run never resumes; train.keep_state keeps it); True when there was one."""
        if not (self.root / "state").is_dir():
            return False
        shutil.rmtree(self.root / "state")
        return True

    def recover(self) -> list[str]:
        """Tidy what a kill in the middle of a write left behind (temporaries of atomic writes; a state/ or
        checkpoint that a kill between atomic_dir's two renames left as `.NAME.old` is put back, so the last
        committed point resumes). Only under the run's writer lock; a folder without config.yaml is not a run."""
        if not (self.root / "config.yaml").is_file():
            return []
        done = recover_atomic(self.root)
        done += recover_atomic(self.root / "checkpoints", "step-*")
        for kind in KINDS:
            done += recover_atomic(self.root / "parts" / kind, "step-*.parquet")
        return done

    def rollback(self, step: int) -> None:
        """Drop every part and checkpoint after `step` (they were written after the last commit)."""
        for kind in KINDS:
            for p in self.part_paths(kind):
                if step_of(p) > step:
                    p.unlink()
        for d in self.checkpoint_dirs():
            if step_of(d) > step:
                shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No 'Writing model shards' bars between our own progress bars."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def rng_state() -> dict[str, Any]:
    """Every RNG, as tensors and plain tuples only (so torch.load(weights_only=True) reads it back)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
                             "python": (version, list(internal), gauss_next)}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
