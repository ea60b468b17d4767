"""`kdyn circuits RUN`: knowledge circuits at a run's checkpoints, their evolution and the link to the dynamics.

    from kdyn.circuits import circuits
    result = circuits("runs/quickstart")                          # settings from RUN/config.yaml `circuits:`
    circuits("runs/quickstart", checkpoints=[0, 42], relations=["birth_city"], overrides=["circuits.method=eap"])

Reads the run directory only (config.yaml, bench/, checkpoints/, probes.parquet); step 0 is the base model
named in config.yaml, LoRA checkpoints are merged into it. Per checkpoint and relation it writes one
safetensors file (store.py), reused on the next call when its settings match; then the tables of the
circuit output contract over the chosen checkpoints: RUN/circuit_metrics.parquet and, in RUN/circuits/,
layer_share, logit_lens, faithfulness_curve, dynamics (.parquet), change_point.json, prompts.<relation>.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from kdyn.circuits.attribution import attribute
from kdyn.circuits.changepoint import change_points
from kdyn.circuits.config import CircuitsConfig
from kdyn.circuits.dynamics import DYNAMICS_COLUMNS, dynamics_table
from kdyn.circuits.evaluate import Evaluator, evaluate, logit_lens
from kdyn.circuits.evolution import METRIC_COLUMNS, evolution_tables
from kdyn.circuits.hooks import HookedLM
from kdyn.circuits.prompts import PromptSet, batches, build_prompts, default_relation, read_bench, usage
from kdyn.circuits.store import CircuitFile, load, mean_scores, path_for, save, settings_of
from kdyn.config import apply_overrides, from_dict
from kdyn.errors import KdynError
from kdyn.io import write_json, write_parquet
from kdyn.lock import run_lock
from kdyn.models.registry import LoadedModel, load_model
from kdyn.progress import LineProgress
from kdyn.train.checkpoints import quiet_transformers, step_of

STRING_COLUMNS = {"relation", "group", "method", "kv_readers", "selection", "prompt_usage"}
INT_COLUMNS = {"step", "from_step", "to_step", "layer", "n_prompts", "n_prompts_configured", "n_unpaired",
               "n_edges_total", "n_edges", "n_nodes", "n_facts", "ig_steps", "random_draws"}  # fmt: skip
TABLE_COLUMNS = {
    "layer_share": ("step", "relation", "layer", "share"),
    "logit_lens": ("step", "relation", "layer", "mean_rank", "median_rank"),
    "faithfulness_curve": ("step", "relation", "fraction", "n_edges", "faithfulness"),
    "dynamics": DYNAMICS_COLUMNS,
}


@dataclass
class CircuitsResult:
    out_dir: Path
    metrics: list[dict[str, Any]]
    change_point: dict[str, Any]
    steps: list[int]
    computed: list[tuple[int, str]] = field(default_factory=list)  # (step, relation) analysed in this call
    prompt_usage: dict[str, str] = field(default_factory=dict)  # relation → how many prompt pairs, and why
    notes: list[str] = field(default_factory=list)


def read_run_config(run: Path) -> dict[str, Any]:
    if not run.is_dir():
        raise KdynError(f"run directory not found: {run}")
    path = run / "config.yaml"
    if not path.is_file():
        raise KdynError(f"{path} not found; `kdyn circuits` reads a run made by `kdyn train` or `kdyn run`")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not data.get("model"):
        raise KdynError(f"{path} names no model; it is not a kdyn run config")
    return data


def circuits_config(run_config: dict[str, Any], overrides: list[str] | None = None) -> CircuitsConfig:
    """The run's `circuits:` section (defaults where absent) with `circuits.key=value` overrides applied."""
    data = {"circuits": dict(run_config.get("circuits") or {})}
    apply_overrides(data, list(overrides or []))
    extra = sorted(set(data) - {"circuits"})
    if extra:
        raise KdynError(f"override '{extra[0]}…': kdyn circuits only takes circuits.* settings")
    return from_dict(CircuitsConfig, data["circuits"], "circuits", "circuits config")


def available_steps(run: Path) -> list[int]:
    """Step 0 (the base model) and every saved checkpoint."""
    folders = [p for p in (run / "checkpoints").glob("step-*[0-9]") if (p / "config.json").is_file() or (p / "adapter_config.json").is_file()]
    return [0, *sorted({step_of(p) for p in folders} - {0})]


def choose_steps(available: list[int], cfg: CircuitsConfig, requested: list[int] | None) -> list[int]:
    wanted = requested if requested is not None else cfg.checkpoints
    if wanted:
        missing = [s for s in wanted if s not in available]
        if missing:
            raise KdynError(f"checkpoint step {missing[0]} is not in this run; available: {', '.join(map(str, available))} "
                            f"(0 is the base model; checkpoints.keep_last may have deleted older ones)")  # fmt: skip
        return sorted(set(wanted))
    if 0 < cfg.max_checkpoints < len(available):
        idx = np.unique(np.round(np.linspace(0, len(available) - 1, cfg.max_checkpoints)).astype(int))
        return [available[i] for i in idx]
    return available


def load_step(run: Path, model_name: str, step: int) -> LoadedModel:
    """The model at a step: the base for 0, a saved checkpoint otherwise (LoRA adapters merged into the base)."""
    from kdyn.device import default_device

    device = default_device()  # the GPU when there is one
    with quiet_transformers():
        if step == 0:
            return load_model(model_name, device=device)
        folder = run / "checkpoints" / f"step-{step:06d}"
        if not (folder / "adapter_config.json").is_file():
            return load_model(str(folder), device=device)
        from peft import PeftModel

        lm = load_model(model_name, device=device)
        lm.model = PeftModel.from_pretrained(lm.model, str(folder)).merge_and_unload().eval()
        return lm


def settings(cfg: CircuitsConfig, prompts: PromptSet) -> dict[str, Any]:
    """Everything that determines a checkpoint's result (a stored file is reused only when these match)."""
    digest = hashlib.sha256(json.dumps(prompts.to_json(), sort_keys=True).encode("utf-8")).hexdigest()
    return {"method": cfg.method, "ig_steps": cfg.ig_steps if cfg.method == "eap-ig" else 1,
            "kv_readers": cfg.kv_readers, "selection": cfg.selection(), "fractions": sorted(set(cfg.fractions)),
            "min_metric_gap": cfg.min_metric_gap, "batch_size": cfg.batch_size, "seed": cfg.seed,
            "random_baseline": "connected", "random_draws": cfg.random_draws, "prompts_sha256": digest}  # fmt: skip


def analyse(hooked: HookedLM, prompts: PromptSet, cfg: CircuitsConfig, step: int, pad_id: int) -> CircuitFile:
    """Attribute, select, evaluate and logit-lens one checkpoint on one relation's prompts."""
    bs = [b.to(hooked.device) for b in batches(prompts.pairs, cfg.batch_size, pad_id)]
    g = hooked.graph
    with hooked.attached():
        results = [attribute(hooked, b, cfg.method, cfg.ig_steps) for b in bs]
        per_prompt = torch.cat([r.scores for r in results]).cpu()[:, torch.from_numpy(g.valid)].numpy()  # [N, E]
        scores = np.zeros(g.valid.shape, dtype=np.float32)  # [U, V], as CircuitFile.dense(mean_scores(...))
        scores[g.valid] = mean_scores(per_prompt)
        circuit, metrics, curve = evaluate(Evaluator(hooked, bs, results, cfg.min_metric_gap), scores, cfg, prompts.relation)
        lens = logit_lens(hooked, bs, results)
    return CircuitFile(step=step, relation=prompts.relation, shape=hooked.shape, kv_readers=g.kv_readers,
                       writers=g.writers, readers=g.readers, valid=g.valid, scores=scores, circuit=circuit,
                       per_prompt=per_prompt,
                       probe_ids=[p.probe_id for p in prompts.pairs], fact_ids=[p.fact_id for p in prompts.pairs],
                       settings=settings(cfg, prompts), metrics=metrics | {"n_unpaired": len(prompts.unpaired),
                       "n_paired": prompts.n_paired, "unpaired_reasons": prompts.reasons()},
                       curve=curve, lens=lens)  # fmt: skip


def circuits(run_dir: str | Path, cfg: CircuitsConfig | None = None, overrides: list[str] | None = None,
             checkpoints: list[int] | None = None, relations: list[str] | None = None, force: bool = False,
             console: Console | None = None) -> CircuitsResult:  # fmt: skip
    """Circuits at the chosen checkpoints of a run, then every table; returns the metric rows and change points.
    Holds the run folder's writer lock (kdyn.lock) once the run and the settings are checked."""
    run = Path(run_dir)
    run_config = read_run_config(run)
    cfg = cfg if cfg is not None else circuits_config(run_config, overrides)
    steps = choose_steps(available_steps(run), cfg, checkpoints)
    with run_lock(run, "circuits"):
        return circuits_locked(run, run_config, cfg, steps, relations, force, console)


def circuits_locked(run: Path, run_config: dict[str, Any], cfg: CircuitsConfig, steps: list[int],
                    relations: list[str] | None, force: bool, console: Console | None) -> CircuitsResult:  # fmt: skip
    """`circuits` once the run and settings are checked and the run's lock is held."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    facts, cloze = read_bench(run / "bench")
    relations = list(relations or cfg.relations or [default_relation(facts, cloze)])
    result = CircuitsResult(out_dir=run / "circuits", metrics=[], change_point={}, steps=steps)
    prompt_sets: dict[str, PromptSet] = {}
    bar = LineProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=console, disable=console is None, transient=True)  # fmt: skip
    with bar:
        task = bar.add_task("circuits", total=len(steps) * len(relations))
        for step in steps:
            lm: LoadedModel | None = None
            for relation in relations:
                bar.update(task, description=f"circuits: step {step}, {relation}")
                if relation not in prompt_sets:
                    lm = lm or load_step(run, run_config["model"], step)
                    ps = build_prompts(run / "bench", relation, lm.tokenizer, cfg.n_prompts, cfg.seed)
                    prompt_sets[relation] = ps
                    write_json(run / "circuits" / f"prompts.{relation}.json", ps.to_json())
                    result.prompt_usage[relation] = usage(relation, len(ps.pairs), cfg.n_prompts, ps.n_paired, ps.reasons())
                    if console is not None:
                        bar.console.print(f"circuits {result.prompt_usage[relation]}", highlight=False)
                path = path_for(run, step, relation)
                if force or settings_of(path) != settings(cfg, prompt_sets[relation]):
                    t0 = time.time()
                    lm = lm or load_step(run, run_config["model"], step)
                    save(path, analyse(HookedLM(lm.model, cfg.kv_readers), prompt_sets[relation], cfg, step, pad_id(lm)))
                    result.computed.append((step, relation))
                    if console is not None:
                        bar.console.print(summary_line(load(path), time.time() - t0), highlight=False)
                bar.advance(task)
            del lm
    write_tables(run, relations, steps, cfg, result)
    return result


def pad_id(lm: LoadedModel) -> int:
    tok = lm.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def summary_line(cf: CircuitFile, seconds: float) -> str:
    m = cf.metrics
    return (f"circuits step {cf.step:06d} {cf.relation}: {len(cf.probe_ids)} prompts ({m['n_unpaired']} unpaired), "
            f"{int(cf.circuit.sum())} of {int(cf.valid.sum())} edges, faithfulness {m['faithfulness']:.3f} "
            f"(random {m['faithfulness_random']:.3f} ± {m['faithfulness_random_sd']:.3f} SD over "
            f"{m['random_draws']} connected circuits), {seconds:.0f} s")  # fmt: skip


def write_tables(run: Path, relations: list[str], steps: list[int], cfg: CircuitsConfig, result: CircuitsResult) -> None:
    correct = probe_correctness(run / "probes.parquet")
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLE_COLUMNS}
    for relation in relations:
        files = [load(path_for(run, s, relation)) for s in steps]
        metrics, shares = evolution_tables(files, cfg)
        result.metrics += metrics
        tables["layer_share"] += shares
        for f in files:
            tables["logit_lens"] += [{"step": f.step, "relation": relation, "layer": int(row[0]), "mean_rank": row[1],
                                      "median_rank": row[2]} for row in f.lens]  # fmt: skip
            tables["faithfulness_curve"] += [{"step": f.step, "relation": relation, "fraction": row[0],
                                              "n_edges": int(row[1]), "faithfulness": row[2]} for row in f.curve]  # fmt: skip
        tables["dynamics"] += dynamics_table(files, correct, cfg, result.notes)
        result.change_point[relation] = change_points(files, cfg)
    write_parquet(run / "circuit_metrics.parquet", table_of(result.metrics, METRIC_COLUMNS))
    for name, columns in TABLE_COLUMNS.items():
        write_parquet(run / "circuits" / f"{name}.parquet", table_of(tables[name], columns))
    write_json(run / "circuits" / "change_point.json", result.change_point)


def probe_correctness(path: Path) -> dict[tuple[str, int], bool]:
    if not path.is_file():
        return {}
    t = pq.read_table(path, columns=["step", "probe_id", "correct"]).to_pydict()
    return {(p, int(s)): bool(c) for s, p, c in zip(t["step"], t["probe_id"], t["correct"]) if c is not None}


def table_of(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pa.Table:
    def kind(c: str) -> pa.DataType:
        if c in STRING_COLUMNS:
            return pa.string()
        if c in INT_COLUMNS:
            return pa.int64()
        return pa.bool_() if c == "faithfulness_flag" else pa.float64()

    schema = pa.schema([(c, kind(c)) for c in columns])
    return pa.Table.from_pylist([{c: r[c] for c in columns} for r in rows], schema=schema)
