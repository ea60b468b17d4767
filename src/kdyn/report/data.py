"""Everything a report reads from a run directory, as dataframes (DESIGN.md "Run directory").

The metrics come from the analysis layer: RUN/analysis/*.parquet and summary.json. When they are missing
(or older than probes.parquet) `kdyn.analysis.analyze` writes them first; nothing is retrained and no
metric is re-derived here. Besides them: config.yaml, manifest.json, bench/ (names of entities, relations,
targets), train_log.parquet (the loss curve), probes.parquet (per-item correctness for the raster and the
model's answers), and, when circuits were computed, RUN/circuit_metrics.parquet and RUN/circuits/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from kdyn.analysis.load import read_columns
from kdyn.analysis.pipeline import TABLES
from kdyn.errors import KdynError
from kdyn.io import read_json, read_jsonl

CIRCUIT_TABLES = ("layer_share", "logit_lens", "faithfulness_curve", "dynamics")
CIRCUIT_METRIC_COLUMNS = ("step", "relation", "n_prompts", "n_edges", "faithfulness", "faithfulness_random",
                          "entropy", "jaccard_edges_prev", "jaccard_edges_final", "jaccard_edges_base",
                          "noise_floor_jaccard")  # fmt: skip


@dataclass
class CircuitData:
    """RUN/circuit_metrics.parquet and the RUN/circuits/ tables of the circuit output contract."""

    metrics: pd.DataFrame
    tables: dict[str, pd.DataFrame | None]  # CIRCUIT_TABLES; None when the file is absent
    change_point: dict[str, Any]


@dataclass
class RunData:
    path: Path
    label: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    bench_manifest: dict[str, Any]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]  # the analysis tables by name (analysis.pipeline.TABLES)
    train_log: pd.DataFrame | None
    correct: pd.DataFrame  # probe_id x step, bool
    answers: pd.DataFrame  # probe_id x step, the greedy output ('' when the probe has none)
    probes: pd.DataFrame  # bench probes: probe_id, fact_id, kind, probe_type, prompt, target (+ analysis kind)
    facts: pd.DataFrame  # bench facts: fact_id, entity_id, subject, relation, object, kind
    circuits: CircuitData | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[Any]:
        return list(self.summary["checkpoints"])

    @property
    def final_step(self) -> Any:
        return self.summary["final_step"]

    @property
    def base_step(self) -> Any:
        return self.summary["base_step"]

    def epochs(self) -> dict[Any, float]:
        """Epoch of each checkpoint step (from the curves table)."""
        c = self.tables["curves"]
        return dict(zip(c["step"], c["epoch"]))


def analysis_is_current(run: Path) -> bool:
    out = run / "analysis"
    files = [out / "summary.json", *[out / f"{t}.parquet" for t in TABLES]]
    if not all(f.is_file() for f in files):
        return False
    return min(f.stat().st_mtime for f in files) >= (run / "probes.parquet").stat().st_mtime


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise KdynError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return loaded if isinstance(loaded, dict) else {}


def _json(path: Path) -> dict[str, Any]:
    data = read_json(path) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def _jsonl_frame(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    rows = read_jsonl(path) if path.is_file() else []
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame:
            frame[col] = None
    return frame[list(columns)]


class UnreadableAnalysis(KdynError):
    def __init__(self, path: Path, run: Path):
        super().__init__(f"{path} cannot be read (corrupt or truncated); `kdyn analyze {run}` writes it again")
        self.path = path


def read_analysis(run: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """RUN/analysis/'s tables and summary; UnreadableAnalysis naming the first file that cannot be read."""
    tables = {}
    for t in TABLES:
        path = run / "analysis" / f"{t}.parquet"
        try:
            tables[t] = pd.read_parquet(path)
        except (OSError, pa.ArrowException):
            raise UnreadableAnalysis(path, run) from None
    try:
        summary = _json(run / "analysis" / "summary.json")
    except KdynError:
        raise UnreadableAnalysis(run / "analysis" / "summary.json", run) from None
    return tables, summary


def load_run_data(run_dir: str | Path, label: str | None = None) -> RunData:
    """Read one run for the report, running the analysis first when its outputs are missing or stale."""
    run = Path(run_dir)
    if not run.is_dir():
        raise KdynError(f"run directory not found: {run}")
    if not (run / "probes.parquet").is_file():
        raise KdynError(f"{run / 'probes.parquet'} not found; a report needs a trained run (kdyn train or kdyn run)")
    from kdyn.analysis import analyze

    notes = []
    if not analysis_is_current(run):
        analyze(run)
        notes.append("the analysis (RUN/analysis/) was missing or older than probes.parquet and was recomputed")
    try:
        tables, summary = read_analysis(run)
    except UnreadableAnalysis as e:  # derived from the run alone, like a stale analysis: rewrite it, say so
        analyze(run)
        notes.append(f"{e.path} could not be read (corrupt or truncated) and the analysis was recomputed")
        tables, summary = read_analysis(run)
    long = read_columns(run / "probes.parquet", ("step", "probe_id", "correct"), ("greedy", "choice"))
    correct = long.pivot(index="probe_id", columns="step", values="correct").astype(bool)
    probes = _jsonl_frame(run / "bench" / "probes.jsonl", ("probe_id", "fact_id", "kind", "probe_type", "prompt",
                                                             "target", "options"))  # fmt: skip
    answers = model_answers(long, probes).pivot(index="probe_id", columns="step", values="answer")
    traj = tables["trajectories"][["probe_id", "kind", "probe_type"]].rename(columns={"kind": "analysis_kind"})
    probes = traj.merge(probes.drop(columns=["probe_type"]), on="probe_id", how="left")
    facts = _jsonl_frame(run / "bench" / "facts.jsonl", ("fact_id", "entity_id", "subject", "relation", "object",
                                                           "kind"))  # fmt: skip
    train_log = None
    if (run / "train_log.parquet").is_file():
        train_log = read_columns(run / "train_log.parquet", ("step", "loss"), ("epoch",))
    return RunData(path=run, label=label or run.resolve().name, config=_yaml(run / "config.yaml"),
                   manifest=_json(run / "manifest.json"), bench_manifest=_json(run / "bench" / "manifest.json"),
                   summary=summary, tables=tables, train_log=train_log, correct=correct, answers=answers,
                   probes=probes, facts=facts, circuits=load_circuits(run), notes=notes)  # fmt: skip


def model_answers(long: pd.DataFrame, probes: pd.DataFrame) -> pd.DataFrame:
    """step, probe_id, answer: the greedy output, or for multiple choice the option the model chose ('' if none)."""
    answer = long["greedy"].fillna("").astype(str) if "greedy" in long else pd.Series("", index=long.index)
    if "choice" in long:
        options = dict(zip(probes["probe_id"], probes["options"]))
        chosen = [opts[int(c)] if isinstance(opts, list) and pd.notna(c) and 0 <= int(c) < len(opts) else None
                  for opts, c in zip(long["probe_id"].map(options), long["choice"])]  # fmt: skip
        answer = pd.Series([a if c is None else c for a, c in zip(answer, chosen)], index=long.index, dtype=object)
    return long[["step", "probe_id"]].assign(answer=answer)


def load_circuits(run: Path) -> CircuitData | None:
    """The circuit outputs when RUN/circuit_metrics.parquet exists (else None: no circuits section)."""
    path = run / "circuit_metrics.parquet"
    if not path.is_file():
        return None
    names = pq.read_schema(path).names
    missing = [c for c in CIRCUIT_METRIC_COLUMNS if c not in names]
    if missing:
        raise KdynError(f"{path} is missing column(s) {', '.join(missing)}; rerun `kdyn circuits` on this run")
    metrics = pd.read_parquet(path).sort_values(["relation", "step"], kind="stable").reset_index(drop=True)
    folder = run / "circuits"
    tables = {t: pd.read_parquet(folder / f"{t}.parquet") if (folder / f"{t}.parquet").is_file() else None
              for t in CIRCUIT_TABLES}  # fmt: skip
    change = _json(folder / "change_point.json")
    return CircuitData(metrics=metrics, tables=tables, change_point=change)


def finite(values: Any) -> np.ndarray:
    """The finite floats of a column (NA and None dropped)."""
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    return arr[np.isfinite(arr)]
