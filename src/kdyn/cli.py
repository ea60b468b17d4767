"""The `kdyn` command line: thin wrappers over the library (each command ↔ one library function).

Bad input raises KdynError deep inside; `friendly` (kdyn.console) turns it into one line and exit 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kdyn.analysis.commands import register as register_analysis
from kdyn.circuits.commands import register as register_circuits
from kdyn.console import console, friendly
from kdyn.report.commands import register as register_report
from kdyn.sweep.commands import register as register_sweep

app = typer.Typer(help="Measure what continual pre-training teaches a language model, and what it breaks.",
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)  # fmt: skip
bench_app = typer.Typer(help="Build or import a knowledge benchmark.", no_args_is_help=True)
import_app = typer.Typer(help="Import an external benchmark.", no_args_is_help=True)
bench_app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")
register_analysis(app)  # analyze, compare, query
register_circuits(app)  # circuits
register_sweep(app)  # sweep
register_report(app)  # report
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override a config value: --set key.path=value")]
BenchDir = Annotated[Path | None, typer.Option("--bench", help="train on this benchmark folder (kdyn bench build / import) "
                                                "instead of building the config's bench: section")]  # fmt: skip


def with_bench(overrides: list[str] | None, bench: Path | None) -> list[str]:
    """`--bench DIR` is `--set train.bench_dir=DIR`, checked first so a wrong path fails before any work."""
    if bench is None:
        return list(overrides or [])
    from kdyn.bench.schema import load_benchmark

    load_benchmark(bench)  # one sentence naming the bad file or field, before a run folder exists
    return [*(overrides or []), f"train.bench_dir={json.dumps(str(bench))}"]  # quoted: a folder named 'yes' stays a string


@app.command("models")
@friendly
def models_cmd() -> None:
    """List the model registry.  Example: kdyn models"""
    from kdyn.models import list_models

    rows = list_models()
    table = Table(title="kdyn models (also: any Hugging Face id or local folder)")
    for col in rows[0]:
        table.add_column(col, no_wrap=col == "name")
    for r in rows:
        table.add_row(*r.values())
    console.print(table)


@bench_app.command("build")
@friendly
def bench_build_cmd(
    config: Annotated[str, typer.Argument(help="built-in name (quickstart, tiny) or YAML path")],
    out: Annotated[Path, typer.Option("--out", help="benchmark directory to write")],
    overrides: Overrides = None,
) -> None:
    """Build a controlled knowledge benchmark.  Example: kdyn bench build quickstart --out bench/"""
    from kdyn.bench.build import build_bench
    from kdyn.experiment import load_bench_config

    manifest = build_bench(load_bench_config(config, overrides), out)
    print_manifest(manifest, out)


@bench_app.command("validate")
@friendly
def bench_validate_cmd(bench: Annotated[Path, typer.Argument(help="benchmark directory")]) -> None:
    """Check every record of a benchmark (fields, types, ids, options).  Example: kdyn bench validate bench/"""
    from collections import Counter

    from kdyn.bench.schema import check_benchmark
    from kdyn.console import err

    loaded, errors = check_benchmark(bench)
    if loaded is None:
        for line in errors[:10]:
            err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        if len(errors) > 10:
            err.print(f"... and {len(errors) - 10} more", markup=False, highlight=False)
        raise typer.Exit(2)
    console.print(f"{bench}: valid: {len(loaded.facts)} facts {dict(sorted(Counter(f.kind for f in loaded.facts).items()))}, "
                  f"{len(loaded.documents)} documents, {len(loaded.probes)} probes", markup=False, highlight=False, soft_wrap=True)  # fmt: skip


@import_app.command("fictional-knowledge")
@friendly
def import_fk_cmd(
    file: Annotated[Path, typer.Argument(help="fictional_knowledge.json (Chang et al. 2024)")],
    out: Annotated[Path, typer.Option("--out", help="benchmark directory to write")],
    copies: Annotated[int, typer.Option(help="training copies of each passage per epoch")] = 1,
    paraphrases: Annotated[int, typer.Option(help="extra paraphrased copies (paraphrased file only)")] = 0,
) -> None:
    """Import Chang et al.'s Fictional Knowledge.  Example: kdyn bench import fictional-knowledge fk.json --out fk/"""
    from kdyn.bench.fictional import import_fictional_knowledge

    print_manifest(import_fictional_knowledge(file, out, copies, paraphrases), out)


@import_app.command("qa")
@friendly
def import_qa_cmd(
    items: Annotated[Path, typer.Argument(help="ITEMS.jsonl: one fact per line (question, answer, ...)")],
    out: Annotated[Path, typer.Option("--out", help="benchmark directory to write")],
    documents: Annotated[Path | None, typer.Option("--documents", help="training text: .jsonl (text, or prompt + completion) or .txt (blank-line-separated)")] = None,
    known: Annotated[str, typer.Option("--known", help="forgetting set: builtin (kdyn's real facts), none, or a FILE")] = "builtin",
    overrides: Overrides = None,
) -> None:
    """Import your own facts (and corpus).  Example: kdyn bench import qa facts.jsonl --documents corpus.txt --out bench/mine"""
    from kdyn.bench.qa_import import import_qa

    manifest = import_qa(items, out, documents, known, overrides)
    for warning in manifest["warnings"]:
        console.print(f"warning: {warning}", markup=False, highlight=False)
    print_manifest(manifest, out)


@app.command("probe")
@friendly
def probe_cmd(
    bench: Annotated[Path, typer.Option("--bench", help="benchmark directory")],
    out: Annotated[Path, typer.Option("--out", help="results file (.parquet)")],
    model: Annotated[str, typer.Option("--model", help="registry name, HF id or folder")] = "smollm2-135m-instruct",
    batch_size: Annotated[int, typer.Option(help="sequences per forward pass")] = 32,
    precision: Annotated[str, typer.Option(help="auto (bfloat16 where the hardware makes it faster, else float32), "
                                           "float32 or bfloat16")] = "auto",  # fmt: skip
) -> None:
    """Score one model once on a benchmark's probes.  Example: kdyn probe --model smollm2-135m-instruct --bench bench/ --out base.parquet"""
    from kdyn.device import default_device, resolve_precision
    from kdyn.probe.run import probe
    from kdyn.probe.scorer import ScoreConfig

    t0 = time.time()
    rows = probe(model, bench, out, ScoreConfig(batch_size=batch_size, precision=precision))  # type: ignore[arg-type]
    used = resolve_precision(precision, default_device())  # type: ignore[arg-type]  # what 'auto' became here
    print_accuracy(rows, f"{model} ({used}): accuracy per kind and probe type ({time.time() - t0:.0f} s)")
    console.print(f"results: {out}")


@app.command("export")
@friendly
def export_cmd(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path, typer.Option("--out", help="folder to write (new or empty)")],
    fmt: Annotated[str, typer.Option("--format", help="lm-eval: lm_eval --log_samples files, one per checkpoint and probe group")] = "lm-eval",
) -> None:
    """Export a run's per-probe results.  Example: kdyn export runs/quickstart --format lm-eval --out exports/qs"""
    from kdyn.analysis.export import export_run

    files = export_run(run, out, fmt)
    console.print(f"{len(files)} files written to {out} (read them back with: kdyn analyze --from {out}/*.jsonl --out DIR)",
                  markup=False, highlight=False)  # fmt: skip


@app.command("plan")
@friendly
def plan_cmd(
    config: Annotated[str, typer.Argument(help="built-in config or suite name (quickstart, relevance, strategies, ...) or YAML path")],
    probe_base: Annotated[bool, typer.Option("--probe-base", help="score the base model once: known facts right at the base, base rates")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
    effect: Annotated[float, typer.Option(help="the smallest difference worth detecting")] = 0.15,
    halfwidth: Annotated[float, typer.Option(help="the widest 95% half-width a magnitude claim accepts")] = 0.10,
    overrides: Overrides = None,
) -> None:
    """Before a run: group sizes, interval widths, detectable differences, and which claims it can decide.  Example: kdyn plan relevance --probe-base"""
    from kdyn.plan import make_plan

    plan = make_plan(config, overrides, probe_base, effect, halfwidth).as_json()
    if as_json:
        print(json.dumps(plan, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"kdyn plan: {plan['source']} (95% intervals; differences at 80% power, worst case)")
    for col in ("kind", "probe type", "n", "± accuracy", "± F", "paired diff. ≥"):
        table.add_column(col, justify="left" if col in ("kind", "probe type") else "right")
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for g in plan["groups"]:
        n = f"{g['n']} of {g['n_all']}" if g.get("n_all") is not None and g.get("base_accuracy") is not None else str(g["n"])
        table.add_row(g["kind"], g["probe_type"], n, fmt(g["acc_halfwidth"]), fmt(g["f_halfwidth"]), fmt(g["mdd_paired"]))
    console.print(table)
    for c in plan["circuits"]:
        console.print(f"circuits: {c['relation']}: {c['prompts_used']} of {c['prompts_configured']} prompt pairs usable "
                      f"({c['prompts_pairable']} pairable), {c['checkpoints']} checkpoints", markup=False, highlight=False)  # fmt: skip
    for c in plan["claims"]:
        console.print(f"{c['claim']}: {c['verdict']} — {c['why']}", markup=False, highlight=False)


@app.command("train")
@friendly
def train_cmd(
    config: Annotated[str, typer.Argument(help="built-in name (quickstart, tiny) or YAML path")],
    out: Annotated[Path | None, typer.Option("--out", help="run directory (default runs/<config name>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out from its last checkpoint")] = False,
    bench: BenchDir = None,
    overrides: Overrides = None,
    report_to: Annotated[list[str] | None, typer.Option("--report-to", help="tensorboard, mlflow or wandb (offline unless configured); repeatable")] = None,
) -> None:
    """Continual pre-training with probes inside the loop.  Example: kdyn train quickstart --out runs/quickstart"""
    from kdyn.experiment import load_experiment
    from kdyn.train import train

    cfg = load_experiment(config, with_bench(overrides, bench))
    check_trackers(report_to or [])
    if bench is not None:
        from kdyn.pipeline import bench_name

        console.print(f"benchmark '{bench_name(cfg)}' ({bench})", markup=False, highlight=False)
    result = train(cfg, out or Path("runs") / cfg.name, resume=resume, report_to=report_to, console=console)
    if result["is_main"]:  # under torchrun every process returns here; one line is enough
            console.print(f"run: {result['run']} ({result['status']}, {result['steps']} steps, {result['seconds']:.0f} s; "
                      f"probing {result['probe_seconds']:.0f} s)")  # fmt: skip


def check_trackers(names: list[str]) -> None:
    import importlib.util

    from kdyn.errors import KdynError, unknown

    for name in names:
        if name not in ("tensorboard", "mlflow", "wandb"):
            raise unknown("tracker (--report-to)", name, ["tensorboard", "mlflow", "wandb"])
        if importlib.util.find_spec(name) is None:
            raise KdynError(f"--report-to {name} needs the '{name}' package: pip install {name}")


@app.command("run")
@friendly
def run_cmd(
    config: Annotated[str, typer.Argument(help="built-in name (quickstart, tiny) or YAML path")],
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/experiment"),
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted run in --out")] = False,
    bench: BenchDir = None,
) -> None:
    """Run an experiment end to end (bench, train, analyze, report).  Example: kdyn run quickstart --out runs/quickstart"""
    from kdyn.pipeline import run_experiment

    result = run_experiment(config, out, with_bench(overrides, bench), on_stage=lambda s: console.print(f"[bold]{s}[/]"), resume=resume,
                            console=console)  # fmt: skip
    if not result["is_main"]:
        return  # rank 0 prints
    print_accuracy(result["base_rows"], "base model: accuracy per kind and probe type (step 0)")
    print_accuracy(result["final_rows"], f"after training: accuracy per kind and probe type (step {result['final_step']})")
    from kdyn.plan import plan_of_run
    from kdyn.report.power import power_line

    console.print(power_line(plan_of_run(out)), markup=False, highlight=False, soft_wrap=True)  # one line, unwrapped
    for label, path in result["outputs"].items():
        console.print(f"{label}: {path}")


def print_manifest(manifest: dict[str, Any], out: Path) -> None:
    c = manifest["counts"]
    console.print(f"benchmark written to {out}: {c['documents']} documents ({c['document_words']} words), "
                  f"{c['probes']} probes, facts {c['facts_by_kind']}")  # fmt: skip


def print_accuracy(rows: list[dict[str, Any]], title: str) -> None:
    from kdyn.probe.results import accuracy_by_group

    table = Table(title=title)
    for col in ("kind", "probe type", "correct", "n", "accuracy"):
        table.add_column(col, justify="right" if col in ("correct", "n", "accuracy") else "left")
    for (kind, ptype), (k, n) in accuracy_by_group(rows).items():
        table.add_row(kind, ptype, str(k), str(n), f"{k / n:.3f}")
    console.print(table)
