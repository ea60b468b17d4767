"""`kdyn report` on a small real run (tiny-random-llama): sections, figures, escaping, determinism, circuits, comparison.

The run is trained on the tiny benchmark with one entity renamed `<script>alert(1)</script>`, a config name
and a run folder name that are HTML too, so every test also sees hostile user strings. The browser check
is in test_report_browser.py (same fixtures).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kdyn.analysis import analyze
from kdyn.bench.build import build_bench
from kdyn.cli import app
from kdyn.experiment import load_bench_config, load_experiment
from kdyn.io import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from kdyn.analysis.power import mdd_paired
from kdyn.plan import plan_of_run
from kdyn.report import report
from kdyn.report.data import load_run_data
from kdyn.report.power import power_line
from kdyn.train import train

ENTITY = "<script>alert(1)</script>"
RUN_NAME = "run <img src=x onerror=alert(2)>"  # a folder name the page shows
CONFIG_NAME = '<b onmouseover="alert(3)">tiny & co</b>'
RUN_SECTIONS = ["setup", "loss-knowledge", "transitions", "acquisition", "broken", "findings"]
RELATIONS = ["birth_city", 'a<b>&"rel"']


def hostile_bench(root: Path) -> Path:
    """The tiny benchmark with its first new entity renamed ENTITY in every record."""
    src, dst = root / "bench-src", root / "bench"
    build_bench(load_bench_config("tiny"), src)
    old = next(f["subject"] for f in read_jsonl(src / "facts.jsonl") if f["kind"] == "new")

    def swap(value):
        if isinstance(value, str):
            return value.replace(old, ENTITY)
        if isinstance(value, list):
            return [swap(v) for v in value]
        return {k: swap(v) for k, v in value.items()} if isinstance(value, dict) else value

    dst.mkdir()
    manifest = read_json(src / "manifest.json")
    for name in ("facts.jsonl", "documents.jsonl", "probes.jsonl"):
        write_jsonl(dst / name, [swap(r) for r in read_jsonl(src / name)])
        manifest["sha256"][name] = sha256_file(dst / name)
    write_json(dst / "manifest.json", manifest)
    return dst


def train_run(root: Path, name: str, seed: int, bench: Path) -> Path:
    cfg = load_experiment("tiny", [f"train.bench_dir={bench}", f"train.seed={seed}"])
    cfg.name = CONFIG_NAME
    out = root / name
    train(cfg, out, show_progress=False)
    analyze(out, bootstrap=200)
    return out


@functools.cache
def built_runs(root: Path) -> tuple[Path, Path]:
    """Two real tiny runs (seeds 0 and 1) on the hostile benchmark, built once per test session: the first
    through the library, the second through `kdyn run`, whose last line must be the report's path."""
    bench = hostile_bench(root)
    first = train_run(root / "runs", RUN_NAME, 0, bench)
    second = root / "runs" / "seed1"
    result = CliRunner().invoke(app, ["run", "tiny", "--out", str(second), "--set", f"train.bench_dir={bench}",
                                      "--set", "train.seed=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"report: {second / 'report.html'}"
    assert f"\n{power_line(plan_of_run(second))}\n" in result.output  # the plan's verdict, on one line of its own
    return first, second


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    return built_runs(tmp_path_factory.getbasetemp() / "report-runs")


def write_circuits(run: Path) -> None:
    """A small synthetic circuits output (the circuit output contract) for the run's checkpoints."""
    steps = sorted(pd.read_parquet(run / "probes.parquet", columns=["step"])["step"].unique().tolist())
    rng = np.random.default_rng(0)
    rows, share, lens, curve, dyn = [], [], [], [], []
    for rel in RELATIONS:
        for i, step in enumerate(steps):
            prev = np.nan if i == 0 else 0.4 + 0.1 * i
            rows.append({"step": step, "relation": rel, "n_prompts": 8, "n_unpaired": 1, "n_edges_total": 1200,
                         "n_edges": 60, "n_nodes": 25, "clean_metric": 2.0 + i, "corrupted_metric": 0.5,
                         "faithfulness": 0.6 + 0.1 * i, "faithfulness_random": 0.05, "faithfulness_flag": None,
                         "hit10_full": 0.5, "mrr_full": 0.3, "hit10_circuit": 0.4, "mrr_circuit": 0.25,
                         "hit10_random": 0.0, "mrr_random": 0.01, "faithfulness_auc": 0.5 + 0.05 * i,
                         "entropy": 5.0 - 0.4 * i, "jaccard_edges_prev": prev, "jaccard_nodes_prev": prev,
                         "jaccard_edges_final": 0.3 + 0.3 * i, "jaccard_nodes_final": 0.5, "jaccard_edges_base":
                         1.0 - 0.3 * i, "jaccard_nodes_base": 0.7, "mean_source_depth": 0.6 - 0.1 * i,
                         "noise_floor_jaccard": 0.55})  # fmt: skip
            p = rng.dirichlet(np.ones(4))
            share += [{"step": step, "relation": rel, "layer": lay, "share": float(p[lay])} for lay in range(4)]
            lens += [{"step": step, "relation": rel, "layer": lay, "mean_rank": 500.0 / (lay + 1 + i),
                      "median_rank": 300.0 / (lay + 1 + i)} for lay in range(4)]  # fmt: skip
            curve += [{"step": step, "relation": rel, "fraction": f, "n_edges": int(1200 * f),
                       "faithfulness": min(1.0, 0.2 + f * (3 + i))} for f in (0.01, 0.05, 0.1, 0.3)]  # fmt: skip
        for a, b in zip(steps[:-1], steps[1:]):
            dyn += [{"from_step": a, "to_step": b, "relation": rel, "group": g, "n_facts": 3, "mean_change": 0.2,
                     "ci_low": 0.1, "ci_high": 0.3} for g in ("forgotten", "retained", "acquired", "never")]  # fmt: skip
    pd.DataFrame(rows).to_parquet(run / "circuit_metrics.parquet")
    folder = run / "circuits"
    folder.mkdir(exist_ok=True)
    for name, frame in (("layer_share", share), ("logit_lens", lens), ("faithfulness_curve", curve), ("dynamics", dyn)):
        pd.DataFrame(frame).to_parquet(folder / f"{name}.parquet")
    write_json(folder / "change_point.json", {rel: {
        "entropy": {"step": steps[1], "ci_low": steps[1], "ci_high": steps[-1], "n_boot": 200},
        "jaccard_edges_prev": {"step": None, "ci_low": None, "ci_high": None, "n_boot": 0,
                               "reason": "fewer than 4 checkpoints"}} for rel in RELATIONS})  # fmt: skip


@functools.cache
def circuits_report(root: Path) -> tuple[Path, str]:
    """A copy of the first run with synthetic circuits, reported through the CLI: (run, CLI output)."""
    run = root / "report-circuits" / RUN_NAME
    shutil.copytree(built_runs(root / "report-runs")[0], run, ignore=shutil.ignore_patterns("plots", "report.html"))
    write_circuits(run)
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(run / "circuits-report.html")])
    assert result.exit_code == 0, result.output
    return run, result.output


@functools.cache
def comparison_report(root: Path) -> Path:
    return report(list(built_runs(root / "report-runs")))


@pytest.fixture(scope="session")
def page(runs) -> str:
    return report([runs[0]]).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def circuits(runs, tmp_path_factory) -> tuple[Path, str]:
    return circuits_report(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def comparison(runs, tmp_path_factory) -> Path:
    return comparison_report(tmp_path_factory.getbasetemp())


def section_ids(text: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', text)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_one_run_has_every_section_and_its_figures(runs, page):
    assert section_ids(page) == RUN_SECTIONS
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6
    assert all(min(png_size(base64.b64decode(b))) > 100 for b in images)
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)
    assert len(captions) == len(images) and all(re.search(r"\d", c) for c in captions)
    plots = sorted(p.name for p in (runs[0] / "plots").iterdir())
    assert [p for p in plots if p.endswith(".png")] == sorted(f"{n}.png" for n in re.findall(r'id="fig-([^"]+)"', page))
    assert len(plots) == 12 and all((runs[0] / "plots" / p).stat().st_size > 1000 for p in plots)


def test_self_contained_and_script_free(page):
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing to fetch
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page


def test_user_strings_are_escaped(page):
    for hostile in (ENTITY, RUN_NAME, CONFIG_NAME):
        assert hostile not in page
        assert html.escape(hostile) in page
    assert "onerror=" not in page.replace(html.escape("onerror="), "")


def test_numbers_match_the_analysis(runs, page):
    summary = json.loads((runs[0] / "analysis" / "summary.json").read_text())
    final = summary["final_step"]
    acc = next(m for m in summary["metrics"] if m["name"] == "accuracy" and m["kind"] == "new"
               and m["probe_type"] == "mcq" and m["step"] == final)  # fmt: skip
    lo, hi = acc["ci"]
    cell = f"{acc['value']:.2f} [{lo:.2f}–{hi:.2f}]"
    row = re.search(r"<tr><td>new MCQ \(k=4\)</td>(.*?)</tr>", page).group(1)
    assert cell in row
    # the training-set loss is measured at all 3 checkpoints, the base included; where accuracy never moves the
    # finding says why ρ is undefined instead of printing 0
    assert "fewer than 3 checkpoints with a loss value" not in page
    assert "ρ(−loss, accuracy) is undefined for" in page and "accuracy does not change over the checkpoints" in page


def test_same_run_same_bytes(runs, page, tmp_path):
    plots = {p.name: p.read_bytes() for p in (runs[0] / "plots").iterdir()}
    again = report([runs[0]], tmp_path / "again.html").read_text(encoding="utf-8")
    strip = functools.partial(re.sub, r"generated [0-9: -]+", "generated")
    assert strip(again) == strip(page)
    assert {p.name: p.read_bytes() for p in (runs[0] / "plots").iterdir()} == plots


def test_missing_analysis_is_recomputed(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs[1], run, ignore=shutil.ignore_patterns("checkpoints", "plots", "report.html"))
    shutil.rmtree(run / "analysis")
    data = load_run_data(run)
    assert (run / "analysis" / "summary.json").is_file() and data.summary["final_step"] == data.steps[-1]
    assert any("was missing or older than probes.parquet and was recomputed" in n for n in data.notes)


def test_circuits_section_from_the_contract(circuits):
    circuits_run, output = circuits
    out = circuits_run / "circuits-report.html"
    assert output.strip().splitlines()[-1] == f"report: {out}"  # the CLI's last line is the report's path
    text = out.read_text(encoding="utf-8")
    assert section_ids(text) == RUN_SECTIONS[:-1] + ["circuits", "findings"]
    for fig in ("circuit_evolution", "circuit_layers", "circuit_faithfulness_curves", "circuit_logit_lens"):
        assert f'id="fig-{fig}"' in text and (circuits_run / "plots" / f"{fig}.svg").is_file()
    assert html.escape(RELATIONS[1]) in text and RELATIONS[1] not in text
    assert "fewer than 4 checkpoints" in text  # an undefined change point says why
    assert "Circuit of &#x27;birth_city&#x27;: entropy change point step" in text


def test_comparison_report(runs, comparison):
    out = comparison
    assert out == runs[0].parent / "report.html"  # several runs: their common parent
    text = out.read_text(encoding="utf-8")
    assert section_ids(text) == ["setup", "comparison", "findings"]
    assert "McNemar" in text and "paired comparisons (run pair × group)" in text
    assert (runs[0].parent / "plots" / "compare_accuracy.svg").is_file()
    assert ENTITY not in text and html.escape(RUN_NAME) in text


def test_cli_bad_input(runs, tmp_path):
    cli = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in ((["report", str(tmp_path / "nope")], "run directory not found"),
                          (["report", str(empty)], "probes.parquet not found"),
                          (["report", str(runs[1]), "--out", str(tmp_path / "r.txt")], "must name an .html file")):  # fmt: skip
        result = cli.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "r.txt").exists() and not (empty / "report.html").exists()


def test_plan_of_run_sizes_groups_from_the_base_answers_without_rescoring(runs, monkeypatch):
    """Known groups count the probes right at step 0 of probes.parquet; nothing is scored again."""
    import kdyn.probe.scorer

    monkeypatch.setattr(kdyn.probe.scorer, "score_probes", lambda *a, **k: pytest.fail("plan_of_run re-scored probes"))
    probes = pd.read_parquet(runs[0] / "probes.parquet")
    base = probes[probes["step"] == probes["step"].min()]
    plan = plan_of_run(runs[0])
    groups = {(g.kind, g.probe_type): g for g in plan.groups}
    for (kind, ptype), part in base.groupby(["kind", "probe_type"]):
        g = groups[(kind, ptype)]
        assert g.n == (int(part["correct"].sum()) if kind == "known" else len(part)), (kind, ptype)
        assert g.base_accuracy == pytest.approx(part["correct"].mean())
    assert {c["claim"] for c in plan.claims} >= {"M4", "M5", "H1", "D1"}  # the tiny bench holds all four kinds
    line = power_line(plan)
    n_new = len(base[(base["kind"] == "new") & (base["probe_type"] == "cloze")])
    assert f"≥ {mdd_paired(n_new):.2f} in new accuracy (cloze, MCQ, QA; n = {n_new} each)" in line
    assert "\n" not in line and "cannot decide M4, M5, H1, D1" in line


def test_report_shows_what_each_headline_number_can_detect(runs, page, comparison):
    probes = pd.read_parquet(runs[0] / "probes.parquet")
    base = probes[probes["step"] == probes["step"].min()]
    n_mcq = len(base[(base["kind"] == "new") & (base["probe_type"] == "mcq")])
    row = re.search(r"<tr><td>new MCQ \(k=4\)</td>(.*?)</tr>", page).group(1)
    assert row.endswith(f"<td class=\"num\">Δ ≥ {mdd_paired(n_mcq):.2f}</td>")  # the transitions table's last column
    right = int(base[(base["kind"] == "known") & (base["probe_type"] == "mcq")]["correct"].sum())
    known = re.search(r"<tr><td>known MCQ \(k=4\)</td>(.*?)</tr>", page).group(1)
    assert known.endswith("<td class=\"num\">Δ: none</td>") and right < 14  # too few right at the base for any change
    text = comparison.read_text(encoding="utf-8")
    headline = re.search(r"<caption>Headline per run.*?</table>", text, re.S).group(0)
    assert headline.count(f"Δ ≥ {mdd_paired(n_mcq):.2f}") == 3 * 2  # new cloze, MCQ and QA (n = 28 each), both runs
    assert "the smallest change from another run on the same items that a paired test detects" in headline


def test_setup_line_gives_the_precisions_the_run_used_not_auto():
    from kdyn.report.setup import training_line

    cfg = {"train": {"epochs": 2, "precision": "auto"}, "probe": {"precision": "auto"}}
    line = training_line(cfg, {"precision": "bfloat16", "probe_precision": "float32"})
    assert "precision: training bfloat16, probing float32" in line and "auto" not in line
    assert "precision auto" in training_line(cfg, {})  # an old run without the manifest fields: the config's word
