"""A synthetic run directory with known structure, for the speed benchmark and integration tests.

    from kdyn.analysis.synthetic import write_synthetic_run
    write_synthetic_run("runs/synthetic", n_items=10_000, n_checkpoints=10)

Items are spread over the knowledge kinds and probe types of a real benchmark; each item's correctness
follows a noisy learning curve (new facts are learnt, known facts are slowly forgotten), so every table
has something in it. Written files follow DESIGN.md's run directory: probes.parquet, train_log.parquet,
fact_loss.parquet, bench/probes.jsonl, bench/facts.jsonl, config.yaml, manifest.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from kdyn.io import write_json, write_jsonl, write_parquet

KINDS = ("new", "related", "updated", "known", "skill")
TYPES = ("cloze", "qa", "mcq", "compositional")


def write_synthetic_run(run_dir: str | Path, n_items: int = 10_000, n_checkpoints: int = 10,
                        steps_per_checkpoint: int = 10, checkpoints_per_epoch: int = 5, seed: int = 0) -> Path:  # fmt: skip
    """Write a run with `n_items` probes scored at step 0 and `n_checkpoints` later checkpoints."""
    run = Path(run_dir)
    rng = np.random.default_rng(seed)
    fact_kind = np.array(KINDS)[rng.choice(len(KINDS), n_items // 3 + 1, p=[0.35, 0.1, 0.1, 0.35, 0.1])]
    kind = fact_kind[np.arange(n_items) // 3]  # three probes per fact share its kind
    ptype = np.where(kind == "skill", "arithmetic", np.array(TYPES)[rng.integers(0, len(TYPES), n_items)])
    k = np.where(ptype == "mcq", rng.choice([2, 4, 5], n_items), 0)
    fact = np.array([f"f{i // 3:06d}" for i in range(n_items)], dtype=object)
    fact[kind == "skill"] = None
    probe_ids = [f"p{i:06d}" for i in range(n_items)]
    steps = np.arange(n_checkpoints + 1) * steps_per_checkpoint
    epochs = np.arange(n_checkpoints + 1) / checkpoints_per_epoch
    # per-item learning speed; known facts start right and drift away
    speed = rng.uniform(0.0, 0.6, n_items)
    t = np.arange(n_checkpoints + 1)[None, :]
    p_new = 1.0 - np.exp(-speed[:, None] * t)
    p_known = 0.9 * np.exp(-0.03 * speed[:, None] * t)
    p = np.where((kind == "known")[:, None] | (kind == "skill")[:, None], p_known, p_new * 0.9)
    chance = np.where(k > 0, 1.0 / np.maximum(k, 1), 0.0)[:, None]
    p = chance + (1.0 - chance) * p
    correct = rng.random(p.shape) < p
    logprob = np.log(np.clip(p, 1e-4, 1.0)) + rng.normal(0.0, 0.2, p.shape)
    rouge = np.clip(p + rng.normal(0.0, 0.15, p.shape), 0.0, 1.0)
    rows = n_items * len(steps)
    write_parquet(run / "probes.parquet", pa.table({
        "step": np.repeat(steps[None, :], n_items, axis=0).ravel(),
        "epoch": np.repeat(epochs[None, :], n_items, axis=0).ravel(),
        "probe_id": np.repeat(np.array(probe_ids, dtype=object), len(steps)),
        "logprob": logprob.ravel(), "first_token_rank": np.zeros(rows, dtype=np.int64),
        "greedy": np.full(rows, "", dtype=object), "em": correct.ravel(), "contains": correct.ravel(),
        "rouge1_recall": rouge.ravel(), "choice": np.zeros(rows, dtype=np.int64), "correct": correct.ravel(),
    }))  # fmt: skip
    write_jsonl(run / "bench" / "probes.jsonl", (
        {"probe_id": probe_ids[i], "fact_id": fact[i], "family": "skill" if kind[i] == "skill" else "knowledge",
         "kind": str(kind[i]), "probe_type": str(ptype[i]), "k": int(k[i])} for i in range(n_items)))  # fmt: skip
    facts = sorted({(f, str(kind[i])) for i, f in enumerate(fact) if f is not None})
    write_jsonl(run / "bench" / "facts.jsonl", (
        {"fact_id": f, "entity_id": f"e{int(f[1:]) // 4:05d}", "kind": str(kd), "relation": "r", "exposures": 3}
        for f, kd in facts))  # fmt: skip
    log_steps = np.arange(1, steps[-1] + 1)
    write_parquet(run / "train_log.parquet", pa.table({
        "step": log_steps, "epoch": log_steps / (steps_per_checkpoint * checkpoints_per_epoch),
        "loss": 3.0 * np.exp(-log_steps / 40.0) + rng.normal(0, 0.05, len(log_steps)) + 0.5,
        "lr": np.full(len(log_steps), 5e-5), "grad_norm": np.ones(len(log_steps)),
        "tokens": log_steps * 1024, "seconds": log_steps * 0.1,
    }))  # fmt: skip
    fact_ids = np.array([f for f, _ in facts], dtype=object)
    nll = 4.0 * np.exp(-rng.uniform(0.05, 0.5, (len(fact_ids), 1)) * t)
    nll += rng.normal(0, 0.1, (len(fact_ids), len(steps)))
    write_parquet(run / "fact_loss.parquet", pa.table({
        "step": np.tile(steps, len(fact_ids)), "fact_id": np.repeat(fact_ids, len(steps)), "nll": nll.ravel(),
    }))  # fmt: skip
    (run / "config.yaml").write_text(f"model: synthetic\nstrategy: full\nseed: {seed}\n", encoding="utf-8")
    write_json(run / "manifest.json", {"model": "synthetic", "status": "complete", "seed": seed})
    return run
