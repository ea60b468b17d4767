"""Read a run directory (DESIGN.md, "Run directory") into `Results`.

Reads RUN/probes.parquet (required), RUN/bench/{probes,facts}.jsonl for each probe's kind, type, k and
entity (falling back to the same columns in probes.parquet), RUN/eval_loss.parquet and
RUN/train_log.parquet for the loss curve, RUN/fact_loss.parquet for per-fact NLL, and model / strategy /
seed from config.yaml and manifest.json. Each probe's fact's `exposures` (copies per epoch, facts.jsonl)
rides along as an extra item column.

The loss curve over checkpoints is the training-set loss measured at every probe point, the base
included (eval_loss.parquet: the model at that checkpoint, eval mode, over every training document).
Runs made before kdyn wrote that file fall back to the mean training loss over the logging steps since
the previous checkpoint (s_prev < step <= s), which is NaN at the base, where nothing has been trained.
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from kdyn.analysis.results import Results, as_correct, as_steps, grid, item_table
from kdyn.errors import KdynError
from kdyn.io import read_json, read_jsonl

PROBE_COLUMNS = ("step", "probe_id", "correct")
OPTIONAL_PROBE_COLUMNS = ("epoch", "logprob", "rouge1_recall", "kind", "probe_type", "k", "fact_id", "entity_id")


def read_columns(path: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the named columns of a parquet file; a missing required column raises KdynError."""
    try:
        names = pq.read_schema(path).names
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise KdynError(f"{path} is not a readable parquet file ({type(e).__name__})") from None
    missing = [c for c in required if c not in names]
    if missing:
        raise KdynError(f"{path} is missing column(s) {', '.join(missing)}; it needs {', '.join(required)}")
    columns = list(required) + [c for c in optional if c in names]
    return pq.read_table(path, columns=columns).to_pandas()


def load_run(run_dir: str | Path) -> Results:
    """Load a run directory; bad or inconsistent files raise KdynError naming the file."""
    run = Path(run_dir)
    if not run.is_dir():
        raise KdynError(f"run directory not found: {run}")
    path = run / "probes.parquet"
    if not path.is_file():
        raise KdynError(f"{path} not found; a run directory needs probes.parquet (written by `kdyn train`)")
    df = read_columns(path, PROBE_COLUMNS, OPTIONAL_PROBE_COLUMNS)
    g = grid(df["probe_id"], as_steps(df["step"], str(path), "step"), str(path), "probe_id", "step")
    imported = (run / "import.json").is_file()  # written by analyze --from: its first checkpoint is the base
    if g.steps[0] != 0 and not imported:
        raise KdynError(f"{path} has no step 0; the base model must be probed before training")
    if len(g.steps) < 2:
        raise KdynError(f"{path} has only one checkpoint (step {g.steps[0]}); the analysis needs the base and "
                        f"at least one later checkpoint")  # fmt: skip
    correct = g.matrix(as_correct(df["correct"], str(path)), dtype=bool, fill=False)
    res = Results(source=str(run), items=probe_metadata(run, df, g.items, g.first_rows()), steps=g.steps,
                  correct=correct)  # fmt: skip
    if "logprob" in df:
        res.score = g.matrix(pd.to_numeric(df["logprob"], errors="coerce"))
    if "rouge1_recall" in df:
        res.rouge1 = g.matrix(pd.to_numeric(df["rouge1_recall"], errors="coerce"))
    if "epoch" in df:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs stay NaN
            res.epochs = np.nanmax(g.matrix(pd.to_numeric(df["epoch"], errors="coerce")), axis=0)
    if imported:
        res.nll = -res.score if res.score is not None else None
        res.notes.append("imported results: the first checkpoint is the base; AUROC uses −score as the NLL")
    else:
        res.eval_loss = eval_loss(run / "eval_loss.parquet", g.steps, res.notes)
        res.loss = train_loss(run / "train_log.parquet", g.steps, [] if res.eval_loss is not None else res.notes)
        res.nll = fact_nll(run / "fact_loss.parquet", g.steps, res.items["fact_id"].to_numpy(dtype=object), res.notes)
    res.meta = run_meta(run)
    return res


def probe_metadata(run: Path, df: pd.DataFrame, ids: np.ndarray, first: np.ndarray) -> pd.DataFrame:
    """Per-probe kind, probe_type, k, fact_id, entity_id: from RUN/bench/ when present, else probes.parquet."""
    bench = run / "bench" / "probes.jsonl"
    if not bench.is_file():
        frame = df.iloc[first][[c for c in ("kind", "probe_type", "k", "fact_id", "entity_id") if c in df]]
        frame = frame.reset_index(drop=True).assign(item_id=ids)
        return item_table(frame, str(run / "probes.parquet"))
    probes = pd.DataFrame(read_jsonl(bench))
    for col in ("probe_id", "kind", "probe_type"):
        if col not in probes:
            raise KdynError(f"{bench} has no '{col}' field; rebuild the benchmark with `kdyn bench build`")
    probes = probes.drop_duplicates("probe_id").set_index("probe_id")
    absent = [p for p in ids if p not in probes.index]
    if absent:
        raise KdynError(f"{run / 'probes.parquet'} scores probe {absent[0]!r} that is not in {bench} "
                        f"({len(absent)} such probes); the run and its bench/ copy disagree")  # fmt: skip
    frame = probes.reindex(ids).reset_index().rename(columns={"probe_id": "item_id"})
    facts_path = run / "bench" / "facts.jsonl"
    facts: dict[Any, dict[str, Any]] = {}
    if facts_path.is_file() and "fact_id" in frame:
        facts = {r.get("fact_id"): r for r in read_jsonl(facts_path)}
        frame["entity_id"] = [facts.get(f, {}).get("entity_id") if f is not None else None for f in frame["fact_id"]]
    items = item_table(frame, str(bench))
    if facts:  # copies per epoch of each probe's fact, for the exposure buckets (NaN: no trained fact)
        items["exposures"] = pd.to_numeric(pd.Series([facts.get(f, {}).get("exposures") for f in items["fact_id"]],
                                                     dtype=object), errors="coerce")  # fmt: skip
    return items


def train_loss(path: Path, steps: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """Mean training loss over the logging steps in (previous checkpoint, checkpoint]; NaN at the base."""
    if not path.is_file():
        notes.append(f"no {path.name}: the loss curve is the mean per-fact NLL where fact_loss.parquet exists")
        return None
    log = read_columns(path, ("step", "loss"))
    log_steps = log["step"].to_numpy(dtype=np.float64)
    loss = pd.to_numeric(log["loss"], errors="coerce").to_numpy(dtype=np.float64)
    idx = np.searchsorted(steps, log_steps, side="left")
    keep = (idx > 0) & (idx < len(steps)) & np.isfinite(loss)
    total = np.bincount(idx[keep], weights=loss[keep], minlength=len(steps))
    count = np.bincount(idx[keep], minlength=len(steps))
    out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    out[0] = np.nan
    return out


def eval_loss(path: Path, steps: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """The training-set loss at each checkpoint (NaN where not measured); None, with the reason, without the file."""
    if not path.is_file():
        notes.append(f"no {path.name} (a run made before kdyn measured the training-set loss at every probe "
                     f"point): loss vs knowledge uses the mean training loss since the previous checkpoint, "
                     f"undefined at the base, so the base→first-checkpoint interval is not counted")  # fmt: skip
        return None
    log = read_columns(path, ("step", "loss"))
    dup = log["step"].duplicated()
    if dup.any():
        raise KdynError(f"{path} has {int(dup.sum())} duplicate step(s) (e.g. {log['step'][dup].iloc[0]}); write "
                        f"one training-set loss per checkpoint")  # fmt: skip
    out = pd.to_numeric(log.set_index("step")["loss"], errors="coerce").reindex(steps).to_numpy(dtype=np.float64)
    missing = [s.item() for s, v in zip(steps, out) if not np.isfinite(v)]
    if missing:
        notes.append(f"{path.name} has no training-set loss at step(s) {', '.join(map(str, missing))} (e.g. a run "
                     f"resumed across a kdyn upgrade); loss vs knowledge leaves those checkpoints out")  # fmt: skip
    return out


def fact_nll(path: Path, steps: np.ndarray, fact_ids: np.ndarray, notes: list[str]) -> np.ndarray | None:
    """Per-item NLL of its fact at each checkpoint (items x steps); NaN where the fact or step is absent."""
    if not path.is_file():
        notes.append(f"no {path.name}: AUROC of per-fact NLL is not computed")
        return None
    fl = read_columns(path, ("step", "fact_id", "nll"))
    dup = fl.duplicated(["fact_id", "step"])
    if dup.any():
        row = fl[dup].iloc[0]
        raise KdynError(f"{path} has {int(dup.sum())} duplicate row(s) for the same fact_id and step (e.g. "
                        f"{row['fact_id']!r} at step {row['step']}); write one NLL per fact per checkpoint")  # fmt: skip
    wide = fl.pivot(index="fact_id", columns="step", values="nll").reindex(columns=steps)
    matrix = wide.to_numpy(dtype=np.float64)
    pos = pd.Index(wide.index.astype(str)).get_indexer(pd.Series(fact_ids, dtype=object).astype(str))
    pos = np.where(pd.isna(pd.Series(fact_ids, dtype=object)).to_numpy(), -1, pos)
    out = np.full((len(fact_ids), len(steps)), np.nan)
    out[pos >= 0] = matrix[pos[pos >= 0]]
    return out


def run_meta(run: Path) -> dict[str, Any]:
    """model / strategy / seed from config.yaml and manifest.json when present (all optional)."""
    config: dict[str, Any] = {}
    path = run / "config.yaml"
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise KdynError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
        config = loaded if isinstance(loaded, dict) else {}
    manifest = read_json(run / "manifest.json") if (run / "manifest.json").is_file() else {}
    manifest = manifest if isinstance(manifest, dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    model = manifest.get("model") or config.get("model")
    if isinstance(model, dict):
        model = model.get("name")
    strategy = config.get("strategy", train.get("strategy"))
    seed = config.get("seed", train.get("seed", manifest.get("seed")))
    return {"run": run.name, "model": _label(model), "strategy": _label(strategy), "seed": seed}


def _label(value: Any) -> str | None:
    """A short label for a config value: strings as they are, a mapping by its name or enabled keys."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("name"), str):
            return value["name"]
        on = [k for k, v in value.items() if v not in (None, False, 0, {}, [], "none")]
        return "+".join(sorted(map(str, on))) or "none"
    return str(value)



def expand_run_dirs(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Run directories from paths and globs (a glob keeps only folders holding probes.parquet), in order."""
    out: list[Path] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            hits = [Path(p) for p in sorted(glob.glob(pattern)) if (Path(p) / "probes.parquet").is_file()]
            if not hits:
                raise KdynError(f"no run directory (a folder with probes.parquet) matches '{pattern}'")
            out += hits
        else:
            path = Path(pattern)
            if not path.is_dir():
                raise KdynError(f"run directory not found: {path}")
            out.append(path)
    if not out:
        raise KdynError("no run directories given")
    return list(dict.fromkeys(out))


def run_labels(paths: list[Path]) -> list[str]:
    """Short unique names for runs: folder names, or paths below their common parent when names clash."""
    names = [p.name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    resolved = [p.resolve() for p in paths]
    common = Path(os.path.commonpath(resolved))
    return [str(p.relative_to(common)) or p.name for p in resolved]
