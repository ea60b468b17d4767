"""The README's own commands, run as written on the tiny config (litgpt's test_readme idea).

Every `kdyn …` line of the README's "Using it" block runs through the real CLI in a temporary folder,
with the embedded model and the quickstart config swapped for their tiny test twins; files a line
needs (a bench YAML, lm-eval sample files) are made first. The README's first lines must be the two
set-up commands, and `.ci/run` must call the README's test command.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml
from typer.testing import CliRunner

from kdyn.cli import app

from .conftest import SHARED_DATA
from .test_analysis_external import arc_line, write_lines

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SWAPS = {"smollm2-135m-instruct": "tiny-random-llama", "quickstart": "tiny"}


def using_it_commands() -> list[str]:
    block = README.split("## Using it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln.split("  #", 1)[0].strip() for ln in block.splitlines()]
    return [ln for ln in lines if ln.startswith("kdyn ")]


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln.split("#", 1)[0].strip() for ln in first_block.strip().splitlines()]
    assert commands == ["make quickstart", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_bench.yaml").write_text(yaml.safe_dump(yaml.safe_load(
        (ROOT / "src" / "kdyn" / "configs" / "tiny.yaml").read_text())["bench"]))  # fmt: skip
    for step in (100, 200):
        lines = [arc_line(i, int((i + step // 100) % 2 == 0)) for i in range(6)]
        write_lines(tmp_path / f"ckpt{step}" / "samples_arc_easy.jsonl", lines)
    commands = using_it_commands()
    assert len(commands) >= 8
    runner = CliRunner()
    for line in commands:
        for old, new in SWAPS.items():
            line = line.replace(old, new)
        args = shlex.split(line)[1:]
        if "fictional-knowledge" in args:
            fk = SHARED_DATA / "fictional_knowledge" / "fictional_knowledge.json"
            if not fk.is_file():
                continue  # only this line needs ../shared/data; CI has it beside the clone
            args = [str(fk) if a == "fictional_knowledge.json" else a for a in args]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, f"README command failed: {line}\n{result.output}"
    assert re.search(r"\d", result.output)
