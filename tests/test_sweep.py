"""Sweep suites without running anything: validation, grid expansion, --only, run-directory status, and
the scheduler commands. Every shipped suite must load (litgpt's test_config_hub idea)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdyn.cli import app
from kdyn.config import to_dict
from kdyn.errors import KdynError
from kdyn.experiment import load_experiment
from kdyn.sweep import builtin_suites, load_suite, scheduler_commands
from kdyn.sweep.runner import point_status
from kdyn.sweep.suite import select, yaml_string

SUITES = Path(__file__).resolve().parents[1] / "src" / "kdyn" / "configs" / "suites"
GRID = """
name: demo
base: tiny
overrides: [train.epochs=1]
seeds: [0, 1]
grid:
  strategy:
    - {label: full}
    - {label: lora, overrides: [train.lora.enabled=true, train.optimizer.lr=1.0e-3]}
  data:
    - {label: prose}
    - {label: fmt, overrides: ["train.augment.formats=[prose, json]"]}
smoke:
  seeds: [7]
  overrides: [train.optimizer.lr=0.5, bench.people=1]
"""


def write_suite(tmp_path: Path, text: str = GRID, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(*args: str) -> str:
    result = CliRunner().invoke(app, ["sweep", *args])
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


BAD = [
    ("seeds: [0, 1]", "seeds: [0, 1]\nseed_kys: [train.seed]", "unknown config key 'seed_kys' (did you mean 'seed_keys'?)"),
    ("- {label: fmt,", "- {label: prose,", "grid axis 'data' has the label 'prose' twice"),
    ("overrides: [train.epochs=1]", "overrides: [train.epochs]", "override 'train.epochs' must look like key.path=value"),
    ("train.lora.enabled=true", "train.lora.enabld=true", "run 'lora-prose-s0': built-in config 'tiny': unknown config key 'train.lora.enabld' (did you mean 'enabled'?)"),
    ("base: tiny", "base: tiyn", "config 'tiyn' is neither a file nor a built-in config (did you mean 'tiny'?)"),
    ("{label: prose}", "{label: my prose}", "label 'my prose' must be letters, digits"),
    ("seeds: [0, 1]", "seeds: []", "seeds must list at least one seed"),
    ("seeds: [0, 1]", "seeds: [0, 0]", "seeds lists a seed twice"),
    ("    - {label: prose}\n    - {label: fmt, overrides: [\"train.augment.formats=[prose, json]\"]}", "    []", "grid axis 'data' has no choices"),
]  # fmt: skip


@pytest.mark.parametrize("old,new,message", BAD, ids=[m.split(" ")[0] + str(i) for i, (_, _, m) in enumerate(BAD)])
def test_bad_suites_fail_with_one_sentence(tmp_path, old, new, message):
    assert old in GRID
    path = write_suite(tmp_path, GRID.replace(old, new))
    assert message in one_line_error(str(path), "--dry-run")
    assert not (tmp_path / "runs").exists()


def test_unknown_suite_name_suggests_a_builtin():
    assert "suite 'strategy' is neither a file nor a built-in suite (did you mean 'strategies'?)" in one_line_error("strategy")


def test_grid_expands_seeds_outermost_with_overrides_in_order(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    assert [p.name for p in suite.points] == ["full-prose-s0", "full-fmt-s0", "lora-prose-s0", "lora-fmt-s0",
                                              "full-prose-s1", "full-fmt-s1", "lora-prose-s1", "lora-fmt-s1"]  # fmt: skip
    p = suite.points[3]
    assert p.labels == ("lora", "fmt") and p.seed == 0
    assert p.overrides == ("train.epochs=1", "train.strategy=lora-fmt", "train.lora.enabled=true",
                           "train.optimizer.lr=1.0e-3", "train.augment.formats=[prose, json]", "train.seed=0")  # fmt: skip
    assert p.config == to_dict(load_experiment("tiny", list(p.overrides)))
    assert p.config["train"]["strategy"] == "lora-fmt" and p.config["bench"]["formats"] == ["prose", "json"]
    assert p.config["train"]["lora"]["enabled"] and p.config["train"]["epochs"] == 1


def test_smoke_replaces_seeds_and_its_overrides_win(tmp_path):
    suite = load_suite(write_suite(tmp_path), smoke=True)
    assert suite.name == "demo-smoke" and [p.seed for p in suite.points] == [7] * 4
    lora = next(p for p in suite.points if p.name == "lora-prose-s7")
    assert lora.config["train"]["optimizer"]["lr"] == 0.5 and lora.config["bench"]["people"] == 1
    assert lora.config["train"]["seed"] == 7


def test_base_path_is_relative_to_the_suite_file(tmp_path):
    (tmp_path / "cfg").mkdir()
    experiment = tmp_path / "cfg" / "mine.yaml"
    experiment.write_text("name: mine\nmodel: tiny-random-llama\ntrain: {epochs: 5}\n")
    suite = load_suite(write_suite(tmp_path / "cfg", GRID.replace("base: tiny", "base: mine.yaml")))
    assert suite.base == str(experiment.resolve())
    assert suite.points[0].config["name"] == "mine" and suite.points[0].config["train"]["epochs"] == 1


def test_labels_that_yaml_would_read_as_other_types_stay_strings(tmp_path):
    assert yaml_string("true") == "'true'" and yaml_string("1.5") == "'1.5'" and yaml_string("sam+formats") == "sam+formats"
    suite = load_suite(write_suite(tmp_path, GRID.replace("{label: full}", "{label: 'yes'}")))
    assert suite.points[0].config["train"]["strategy"] == "yes-prose"


def test_only_selects_by_name_label_or_seed(tmp_path):
    points = load_suite(write_suite(tmp_path)).points
    assert [p.name for p in select(points, ["lora-fmt-s1"])] == ["lora-fmt-s1"]
    assert [p.name for p in select(points, ["fmt", "s1"])] == ["full-fmt-s0", "lora-fmt-s0", "full-prose-s1",
                                                              "full-fmt-s1", "lora-prose-s1", "lora-fmt-s1"]  # fmt: skip
    assert len(select(points, ["lora,full"])) == 8
    with pytest.raises(KdynError, match="unknown run or label \\(--only\\) 'loar' \\(did you mean 'lora'\\?\\)"):
        select(points, ["loar"])


def fake_run(run_dir: Path, config: dict, status: str | None = None, state: bool = False, analysed: bool = False) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if status:
        (run_dir / "manifest.json").write_text(json.dumps({"status": status}))
    if state:
        (run_dir / "state").mkdir()
        (run_dir / "state" / "trainer.json").write_text("{}")
    if analysed:
        (run_dir / "analysis").mkdir()
        (run_dir / "analysis" / "summary.json").write_text("{}")


def test_status_comes_from_the_run_directory(tmp_path):
    p = load_suite(write_suite(tmp_path)).points[0]
    assert point_status(p, tmp_path / "absent") == ("new", "")
    fake_run(tmp_path / "done", p.config, "complete", analysed=True)
    assert point_status(p, tmp_path / "done") == ("done", "")
    fake_run(tmp_path / "killed", p.config, "running", state=True)
    assert point_status(p, tmp_path / "killed") == ("resume", "training running")
    fake_run(tmp_path / "unanalysed", p.config, "complete", state=True)
    assert point_status(p, tmp_path / "unanalysed") == ("resume", "trained, not analysed")
    fake_run(tmp_path / "early", p.config)  # killed before the base model was probed: start again
    assert point_status(p, tmp_path / "early") == ("new", "")
    other = p.config | {"train": p.config["train"] | {"epochs": 9}}
    fake_run(tmp_path / "stale", other, "complete", analysed=True)
    status, reason = point_status(p, tmp_path / "stale")
    assert status == "stale" and "differs from the suite's config for this run at train.epochs (9 → 1)" in reason
    older = {k: v for k, v in p.config.items() if k != "probe"}  # a run made before an option existed
    fake_run(tmp_path / "older", older, "complete", analysed=True)
    assert point_status(p, tmp_path / "older") == ("done", "")


def test_print_commands_lists_what_is_left_and_each_line_rebuilds_its_config(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    out = tmp_path / "sweep"
    first, second = suite.points[:2]
    fake_run(out / first.name, first.config, "complete", analysed=True)
    fake_run(out / second.name, second.config, "interrupted", state=True)
    lines = scheduler_commands(suite, out)
    assert len(lines) == 7 and not any(f"/{first.name} " in ln for ln in lines)
    for line, p in zip(lines, suite.points[1:]):
        args = shlex.split(line)
        assert args[:5] == ["python", "-m", "kdyn", "run", "tiny"] and args[6] == str(out / p.name)
        assert ("--resume" in args) == (p is second)
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        assert to_dict(load_experiment("tiny", sets)) == p.config
    result = CliRunner().invoke(app, ["sweep", str(write_suite(tmp_path)), "--out", str(out), "--print-commands",
                                      "--only", "s1"])  # fmt: skip
    assert result.exit_code == 0 and result.stdout.strip().splitlines() == scheduler_commands(suite, out, ["s1"])


@pytest.mark.parametrize("name", builtin_suites())
def test_shipped_suites_load_and_start_with_their_command(name):
    assert (SUITES / f"{name}.yaml").read_text().startswith(f"# kdyn sweep {name}")
    for smoke in (False, True):
        suite = load_suite(name, smoke=smoke)
        assert suite.points and all(p.config["train"]["strategy"] == "-".join(p.labels) for p in suite.points)
    assert len({p.seed for p in load_suite(name).points}) >= 3  # CIs over seeds


def test_shipped_suites_are_the_three_of_the_issue():
    assert {"strategies", "relevance", "models"} <= set(builtin_suites())
    labels = [p.labels[0] for p in load_suite("strategies").points if p.seed == 0]
    assert labels == ["full", "lora", "replay", "kl", "sam", "formats", "sam+formats", "paraphrase"]
    assert {p.seed for p in load_suite("strategies").points} == {0, 1, 2}
    models = {p.config["model"] for p in load_suite("models").points}
    assert models == {"smollm2-135m-instruct", "gemma3-270m"}
    base = SUITES / "base" / "cpu-small.yaml"  # spelled out in full, so the suites do not drift with the quickstart
    assert {load_suite(n).base for n in ("strategies", "relevance", "models")} == {str(base.resolve())}
    config = load_experiment(str(base))
    assert not config.circuits.enabled and not config.train.checkpoints.save and config.train.epochs == 3


def test_cli_set_applies_to_every_run_last_and_launcher_replaces_python(tmp_path):
    suite = load_suite(write_suite(tmp_path), overrides=["model=Qwen/Qwen2.5-0.5B-Instruct", "train.seed=5"])
    assert {p.config["model"] for p in suite.points} == {"Qwen/Qwen2.5-0.5B-Instruct"}
    assert {p.config["train"]["seed"] for p in suite.points} == {5} and suite.points[0].overrides[-1] == "train.seed=5"
    line = scheduler_commands(suite, tmp_path / "o", ["full-prose-s0"], launcher="accelerate launch --num_processes 1")
    assert shlex.split(line[0])[:8] == ["accelerate", "launch", "--num_processes", "1", "-m", "kdyn", "run", "tiny"]
    assert "--set: override 'model' must look like key.path=value" in one_line_error(str(write_suite(tmp_path)), "--set", "model", "--dry-run")


def test_models_suite_runs_smollm2_exactly_as_the_strategies_suite_runs_full():
    full = {p.seed: p.config for p in load_suite("strategies").points if p.labels == ("full",)}
    for p in load_suite("models").points:
        if p.labels == ("smollm2",):
            assert p.config["train"] | {"strategy": "full"} == full[p.seed]["train"]
            assert {k: v for k, v in p.config.items() if k != "train"} == {k: v for k, v in full[p.seed].items() if k != "train"}


def test_config_difference_ignores_blocks_off_in_both():
    """A finished run stays finished when kdyn changes a default inside a block the run had switched off (its
    config.yaml records every default), and is stale when the block was on or a real setting changed."""
    from kdyn.sweep.runner import config_difference

    saved = {"train": {"lr": 1e-4}, "circuits": {"enabled": False, "min_metric_gap": 0.1}}
    assert config_difference(saved, {"train": {"lr": 1e-4}, "circuits": {"enabled": False, "min_metric_gap": 0.5}}) is None
    on = {"train": {"lr": 1e-4}, "circuits": {"enabled": True, "min_metric_gap": 0.5}}
    assert config_difference({**saved, "circuits": {"enabled": True, "min_metric_gap": 0.1}}, on) == \
        "circuits.min_metric_gap (0.1 → 0.5)"
    assert config_difference(saved, {**saved, "train": {"lr": 2e-4}}) == "train.lr (0.0001 → 0.0002)"
    assert config_difference(saved, {"train": {"lr": 1e-4}, "circuits": {"enabled": True, "min_metric_gap": 0.1}}) == \
        "circuits.enabled (False → True)"
