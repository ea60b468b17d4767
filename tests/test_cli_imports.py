"""`kdyn --help` answers at once: importing the CLI and printing every command's help loads none of the heavy
libraries (DESIGN.md "Performance goals": under 1 s; benchmarks/cli_speed.py times it). Deterministic: it
checks sys.modules in a fresh interpreter, it does not time anything."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "pandas", "pyarrow", "duckdb", "matplotlib", "accelerate", "scipy", "peft",
         "safetensors", "numpy")  # fmt: skip

# every command and sub-command's --help, read from the app itself, in one fresh interpreter
SCRIPT = """
import json, sys
import typer
from typer.testing import CliRunner
import kdyn.cli

def paths(group, prefix=()):
    out = [prefix]
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        out += paths(sub, prefix + (name,)) if hasattr(sub, "list_commands") else [prefix + (name,)]
    return out

after_import = sorted(m for m in HEAVY if m in sys.modules)
runner = CliRunner()
failed = []
commands = paths(typer.main.get_command(kdyn.cli.app))
for words in commands:
    result = runner.invoke(kdyn.cli.app, [*words, "--help"])
    if result.exit_code != 0 or "Usage" not in result.output:
        failed.append(" ".join(words))
print(json.dumps({"after_import": after_import, "after_help": sorted(m for m in HEAVY if m in sys.modules),
                  "commands": [" ".join(w) for w in commands], "failed": failed}))
"""


def test_cli_help_imports_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{SCRIPT}"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["after_import"] == [], f"`import kdyn.cli` imports {out['after_import']}; import them inside commands"
    assert {"train", "sweep", "bench build", "analyze"} <= set(out["commands"]) and out["failed"] == []
    assert out["after_help"] == [], f"`kdyn CMD --help` imports {out['after_help']}; import them inside commands"
