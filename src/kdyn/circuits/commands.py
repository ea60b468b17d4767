"""CLI command `kdyn circuits`: a thin wrapper over kdyn.circuits.circuits; the main CLI calls `register(app)`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kdyn.console import console, friendly
from kdyn.errors import KdynError


def parse_steps(text: str | None) -> list[int] | None:
    """'0,120,240' → [0, 120, 240]; None or 'all' → None (the config decides)."""
    if text is None or text.strip() == "all":
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise KdynError(f"--checkpoints takes comma-separated steps such as 0,120,240 (or 'all'), got '{text}'") from None


@friendly
def circuits_cmd(
    run: Annotated[Path, typer.Argument(help="run directory (made by kdyn train / kdyn run)")],
    checkpoints: Annotated[str | None, typer.Option("--checkpoints", help="steps, e.g. 0,120,240 (0 = base model); default: the config's choice")] = None,
    relation: Annotated[list[str] | None, typer.Option("--relation", help="relation of the cloze prompts (repeatable); default: the one with most new facts")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a setting: --set circuits.method=eap")] = None,
    force: Annotated[bool, typer.Option("--force", help="recompute checkpoints whose stored circuits match the settings")] = False,
) -> None:
    """Knowledge circuits (EAP-IG) at a run's checkpoints, their evolution and change point.

    Example: kdyn circuits runs/quickstart --checkpoints 0,42,84 --relation birth_city
    """
    from kdyn.circuits.run import circuits

    result = circuits(run, overrides=overrides, checkpoints=parse_steps(checkpoints), relations=relation, force=force,
                      console=console)  # fmt: skip
    console.print(metrics_table(result.metrics))
    for rel, series in result.change_point.items():
        for name, cp in series.items():
            where = (f"step {cp['step']} (p = {cp['p_value']:.3g} against one line; 95% CI {cp['ci_low']}–"
                     f"{cp['ci_high']}, {cp['n_boot']} bootstraps)" if cp["step"] is not None else cp["reason"])  # fmt: skip
            console.print(f"change point {rel} {name}: {where}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"circuits written to {result.out_dir} and {run / 'circuit_metrics.parquet'}")


def metrics_table(rows: list[dict[str, Any]]) -> Table:
    cols = {"relation": "relation", "step": "step", "n_prompts": "prompts", "n_edges": "edges",
            "faithfulness": "faithful", "faithfulness_random": "random", "faithfulness_random_sd": "± SD",
            "entropy": "entropy", "jaccard_edges_prev": "J prev", "jaccard_halves_prev": "J½ prev",
            "noise_floor_jaccard": "J½ noise"}  # fmt: skip
    table = Table(title="knowledge circuits per checkpoint (J: edge Jaccard; J½: of half-prompt circuits, "
                        "previous checkpoint and split-half noise floor; random: connected circuits, mean ± SD)")
    for c, header in cols.items():
        table.add_column(header, justify="left" if c == "relation" else "right")
    for r in rows:
        table.add_row(*[fmt(r[c]) for c in cols])
    return table


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def register(app: typer.Typer) -> None:
    app.command("circuits")(circuits_cmd)
