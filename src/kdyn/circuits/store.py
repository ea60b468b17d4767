"""RUN/circuits/step-NNNNNN.<relation>.safetensors: one checkpoint's circuit, self-contained.

Tensors: `scores` [U, V] float32 (mean edge scores; 0 off the graph), `valid` [U, V] uint8 (which pairs
are edges), `circuit` [U, V] uint8 (the selected, pruned circuit), `scores_per_prompt` [N, E] float32
(each prompt's scores on the valid edges, row-major order of `valid`; float32 as computed, so a circuit
rebuilt from the file is the one selected in memory; float16 rounded 0.4–0.5% of them to exactly 0).
`scores` is mean_scores(scores_per_prompt), the one mean used everywhere. Metadata: one key, `kdyn`, whose
value is canonical JSON (NaN as null) with writers (row names), readers (column names), shape (rebuilds
the graph), settings (what produced it: a file is reused only when they match), prompts (probe and fact
ids, the rows of scores_per_prompt), metrics, curve (fraction, n_edges, faithfulness), lens (layer, mean
rank, median rank).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kdyn.circuits.adapters import Shape
from kdyn.circuits.graph import Graph, build_graph
from kdyn.errors import KdynError
from kdyn.io import atomic_path

FORMAT = "kdyn-circuit-1"


@dataclass
class CircuitFile:
    step: int
    relation: str
    shape: Shape
    kv_readers: str
    writers: list[str]
    readers: list[str]
    valid: np.ndarray  # [U, V] bool
    scores: np.ndarray  # [U, V] float32
    circuit: np.ndarray  # [U, V] bool
    per_prompt: np.ndarray  # [N, E] float32
    probe_ids: list[str]
    fact_ids: list[str]
    settings: dict[str, Any]
    metrics: dict[str, Any]
    curve: list[list[float]]
    lens: list[list[float]]

    def graph(self) -> Graph:
        return build_graph(self.shape, self.kv_readers)  # type: ignore[arg-type]

    def dense(self, flat: np.ndarray) -> np.ndarray:
        """Scores on the valid edges [E] → [U, V]."""
        out = np.zeros(self.valid.shape, dtype=np.float32)
        out[self.valid] = flat
        return out


def mean_scores(per_prompt: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """[N, E] → [E] float32: the mean over prompts (or the weighted sum, weights [N] summing to 1), added up
    in float64. The circuit in memory, the one rebuilt from a file and those of resamples all use this one
    function, so the same prompts always give the same scores, bit for bit, and so the same circuit."""
    n = per_prompt.shape[0]
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    return (w @ per_prompt.astype(np.float64, copy=False)).astype(np.float32)


def path_for(run: Path, step: int, relation: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", relation):
        raise KdynError(f"relation name '{relation}' cannot be part of a file name (letters, digits, _ . - only)")
    return run / "circuits" / f"step-{step:06d}.{relation}.safetensors"


def _json(obj: Any) -> str:
    """JSON with NaN written as null (strict JSON, stable bytes)."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), sort_keys=True, ensure_ascii=False, allow_nan=False)


def save(path: Path, cf: CircuitFile) -> None:
    tensors = {
        "scores": torch.from_numpy(cf.scores.astype(np.float32)),
        "valid": torch.from_numpy(cf.valid.astype(np.uint8)),
        "circuit": torch.from_numpy(cf.circuit.astype(np.uint8)),
        "scores_per_prompt": torch.from_numpy(cf.per_prompt.astype(np.float32)),
    }
    meta = {"format": FORMAT, "step": cf.step, "relation": cf.relation, "kv_readers": cf.kv_readers,
            "shape": dataclasses.asdict(cf.shape), "writers": cf.writers, "readers": cf.readers,
            "settings": cf.settings, "prompts": {"probe_ids": cf.probe_ids, "fact_ids": cf.fact_ids},
            "metrics": cf.metrics, "curve": cf.curve, "lens": cf.lens}  # fmt: skip
    with atomic_path(path) as tmp:  # one metadata key: the header's key order is not stable across saves
        save_file(tensors, str(tmp), metadata={"kdyn": _json(meta)})


def _nan(x: Any) -> Any:
    return math.nan if x is None else x


def _meta(path: Path) -> dict[str, Any] | None:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("kdyn", "{}"))
    return meta if meta.get("format") == FORMAT else None


def load(path: Path) -> CircuitFile:
    try:
        meta = _meta(path)
        if meta is None:
            raise KdynError(f"{path} is not a kdyn circuit file; rerun `kdyn circuits`")
        with safe_open(str(path), framework="pt") as f:
            t = {k: f.get_tensor(k) for k in ("scores", "valid", "circuit", "scores_per_prompt")}
    except KdynError:
        raise
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise KdynError(f"{path} is not a readable circuit file ({type(e).__name__}); rerun `kdyn circuits`") from None
    return CircuitFile(step=int(meta["step"]), relation=meta["relation"], shape=Shape(**meta["shape"]),
                       kv_readers=meta["kv_readers"], writers=meta["writers"], readers=meta["readers"],
                       valid=t["valid"].numpy().astype(bool), scores=t["scores"].numpy(),
                       circuit=t["circuit"].numpy().astype(bool), per_prompt=t["scores_per_prompt"].float().numpy(),
                       probe_ids=meta["prompts"]["probe_ids"], fact_ids=meta["prompts"]["fact_ids"],
                       settings=meta["settings"], metrics={k: _nan(v) for k, v in meta["metrics"].items()},
                       curve=[[_nan(v) for v in row] for row in meta["curve"]],
                       lens=[[_nan(v) for v in row] for row in meta["lens"]])  # fmt: skip


def settings_of(path: Path) -> dict[str, Any] | None:
    """The settings a stored file was made with (None when absent or unreadable: it is then recomputed)."""
    try:
        meta = _meta(path)
    except Exception:  # absent or damaged
        return None
    return meta["settings"] if meta is not None else None
