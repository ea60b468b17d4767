"""`kdyn sweep strategies --smoke` end to end through the real CLI (the issue's CI check): all eight strategies
run as separate processes, the comparison and report are written, a second sweep skips every run, and a run
whose config no longer matches the suite is reported and left alone."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from kdyn.sweep import load_suite, sweep
from kdyn.sweep.outputs import report_available

STRATEGIES = ["full", "lora", "replay", "kl", "sam", "formats", "sam+formats", "paraphrase"]


def findings_tables():
    """docs/findings_tables.py as a module (it is a script beside the docs, not part of the package)."""
    spec = importlib.util.spec_from_file_location("findings_tables", Path(__file__).parents[1] / "docs" / "findings_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kdyn_sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdyn", "sweep", "strategies", "--smoke", *args],
                          capture_output=True, text=True, timeout=1800)  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "strategies"
    done = kdyn_sweep("--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done


def test_every_strategy_runs_and_is_compared(smoke):
    out, done = smoke
    assert "sweep 'strategies-smoke': 8 runs (8 complete)" in done.stdout
    state = json.loads((out / "sweep.json").read_text())
    assert [p["name"] for p in state["points"]] == [f"{s}-s0" for s in STRATEGIES]
    assert all(p["outcome"] == "complete" and p["returncode"] == 0 for p in state["points"])
    for s in STRATEGIES:
        run = out / f"{s}-s0"
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["strategy"] == s
        assert (run / "analysis" / "summary.json").is_file() and not (run / "state").exists()
    config = yaml.safe_load((out / "formats-s0" / "config.yaml").read_text())
    assert config["bench"]["formats"] == ["prose", "json", "table"] and config["train"]["sam"]["rho"] == 0
    runs = pq.read_table(out / "comparison" / "compare_runs.parquet").to_pandas()
    assert sorted(set(runs["strategy"])) == sorted(STRATEGIES) and runs["n"].min() > 0
    tests = pq.read_table(out / "comparison" / "compare_tests.parquet").to_pandas()
    assert len(set(zip(tests["run_a"], tests["run_b"]))) == 8 * 7 // 2  # every pair, on the same probes
    exposure = pq.read_table(out / "comparison" / "exposure_runs.parquet").to_pandas()
    assert set(exposure["run"]) == {f"{s}-s0" for s in STRATEGIES} and set(exposure["bucket"]) == {"medium"}
    assert (out / "report.html").is_file() == report_available()


def test_a_second_sweep_skips_every_run(smoke):
    out, _ = smoke
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/probes.parquet")}
    (out / "lora-s0" / "state").mkdir()  # as a run finished by a scheduler (--print-commands) leaves it: GBs
    (out / "lora-s0" / "state" / "model.safetensors").write_bytes(b"resume state")
    again = kdyn_sweep("--out", str(out))
    assert again.returncode == 0 and again.stdout.count("finished earlier, skipped") == 8, again.stdout[-2000:]
    assert "lora-s0: finished earlier, skipped; its resume state deleted" in again.stdout
    assert not (out / "lora-s0" / "state").exists()
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/probes.parquet")} == before
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert all(p["outcome"] == "skipped" and p["seconds"] > 0 for p in points)  # earlier times are kept


def test_a_stale_run_is_reported_and_left_alone(smoke, tmp_path):
    out, _ = smoke
    shutil.copytree(out / "full-s0", tmp_path / "full-s0")
    config = yaml.safe_load((tmp_path / "full-s0" / "config.yaml").read_text())
    config["train"]["optimizer"]["lr"] = 0.5
    (tmp_path / "full-s0" / "config.yaml").write_text(yaml.safe_dump(config))
    result = sweep(load_suite("strategies", smoke=True), tmp_path, only=["full"], say=lambda s: None, compare=False)
    (run,) = [r for r in result.runs if r.outcome != "not selected"]
    assert run.outcome == "stale" and result.failed == ["full-s0"]
    assert "at train.optimizer.lr (0.5 → 0.0002)" in run.error
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_findings_tables_read_a_finished_sweep(smoke, capsys):
    """docs/findings_tables.py (the numbers of docs/findings.md) runs on a sweep folder: one row per strategy, and a
    paired contrast against `full` for every other strategy."""
    out, _ = smoke
    module = findings_tables()
    assert module.main([str(out.parent)]) == 0
    text = capsys.readouterr().out
    for s in STRATEGIES:
        assert f"| {s} | " in text
    assert text.count(" [+") + text.count(" [-") >= 7  # every contrast carries its interval
    # one epoch probes formats at the base and at 2.7x full's tokens only: no equal-token reading (was the base model)
    assert "| formats | no probed step within 25% of" in text
    assert module.main([str(out / "full-s0")]) == 1  # no suite folder under it


def test_findings_tables_compare_two_models(smoke, capsys, tmp_path):
    """The models table: one row per model (named by the run folders' labels) and the paired second − first
    contrast; two strategies of the smoke sweep stand in for two models' runs."""
    out, _ = smoke
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smollm2-s0").symlink_to(out / "full-s0")
    (tmp_path / "models" / "gemma3-s0").symlink_to(out / "kl-s0")
    module = findings_tables()
    assert module.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "## models" in text and "Models (2 finished runs; seeds per model: smollm2 1, gemma3 1)" in text
    assert text.index("| smollm2 | ") < text.index("| gemma3 | ")
    assert "Paired by probe, gemma3 − smollm2" in text


def test_findings_tables_read_control_runs_beside_the_suite(smoke, capsys, tmp_path):
    """Runs in SWEEPS/control (e.g. `full8`, an equal-token control) are paired against the strategies."""
    out, _ = smoke
    (tmp_path / "strategies").symlink_to(out)
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "full8-s0").symlink_to(out / "full-s0")
    module = findings_tables()
    assert module.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Controls (control/)" in text
    rows = [line for line in text.splitlines() if line.startswith("| full8 (1, ")]
    assert [r.split(" | ")[1] for r in rows] == ["full", "formats", "sam+formats", "paraphrase"]
    assert rows[0].count("+0.000 [+0.000, +0.000]") == 5  # the control here is full-s0 itself: no difference


def test_findings_tables_contrast_kinds_with_an_entity_bootstrap(smoke, capsys, tmp_path):
    """The relevance tables give D1's kind contrasts (related and updated − new) and D2's exposure contrasts, each
    with an interval from a bootstrap over entities; the contrast itself is the difference of the levels' means."""
    out, _ = smoke
    (tmp_path / "relevance").mkdir()
    (tmp_path / "relevance" / "full-s0").symlink_to(out / "full-s0")
    module = findings_tables()
    assert module.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Kind contrasts" in text and "| probe | n new / related / updated (entities) | related − new | updated − new |" in text
    assert "Kind contrasts at new facts' exposure" in text
    per = pd.DataFrame({"probe_type": "cloze", "kind": ["new"] * 4 + ["related"] * 4, "correct": [0, 0, 1, 1, 1, 1, 1, 1.0],
                        "entity": ["a", "a", "b", "b", "c", "c", "d", "e"]})  # fmt: skip
    table = module.contrast(per, "kind", "new", ("related",), "t")
    row = table.splitlines()[-1]
    assert row.startswith("| cloze | 4 (2) / 4 (3) | +0.500 [")  # 1.0 − 0.5; new's 2 entities: all 0, all 1
    assert "[+0.000, +1.000]" in row  # resampling the 2 new entities gives 0, 0.5 or 1


def test_kind_contrast_at_equal_exposure_removes_a_difference_that_is_only_exposure():
    """Related facts seen less often look worse than new ones; weighted to new facts' exposure buckets they are
    level, as within every bucket they are."""
    module = findings_tables()
    per = pd.DataFrame({"probe_type": "qa", "kind": ["new"] * 4 + ["related"] * 4, "correct": [0, 0, 1, 1, 0, 0, 0, 1.0],
                        "bucket": ["low", "low", "high", "high", "low", "low", "low", "high"],
                        "entity": ["a", "a", "b", "b", "c", "d", "e", "f"]})  # fmt: skip
    raw = module.contrast(per, "kind", "new", ("related",), "t").splitlines()[-1]
    assert "| -0.250 [" in raw  # 0.25 − 0.5
    assert module.standardised_contrast(per, ("related",)).splitlines()[-1] == "| qa | +0.000 [+0.000, +0.000] |"


def test_findings_tables_time_a_run_only_when_its_manifest_holds_the_whole_run(tmp_path):
    """A run resumed before kdyn summed its sessions' time records the last session alone (less than its own
    probing): no minutes for it, rather than a third of the run's."""
    module = findings_tables()
    for name, seconds in (("full-s0", 600.0), ("full-s1", 180.0)):
        (tmp_path / name / "analysis").mkdir(parents=True)
        (tmp_path / name / "analysis" / "summary.json").write_text("{}")
        (tmp_path / name / "manifest.json").write_text(json.dumps({"status": "complete", "seconds": seconds,
                                                                   "train_seconds": 80.0, "probe_seconds": 290.0}))
    minutes = module.load_runs(tmp_path).set_index("name")["minutes"]
    assert minutes["full-s0"] == 10.0 and math.isnan(minutes["full-s1"])


def test_forgetting_is_paired_over_the_probes_right_at_the_base():
    """F(B) − F(A) counts only the known probes right at the base (a probe wrong there and right at the end is
    backward transfer, not retention), each averaged over its seeds first."""
    module = findings_tables()

    def run(final: list[int]) -> pd.DataFrame:  # probes k0..k3 right at the base, k4 wrong there; one MCQ probe
        return pd.DataFrame({"probe_id": ["k0", "k1", "k2", "k3", "k4", "m0"], "kind": "known",
                             "probe_type": ["qa"] * 5 + ["mcq"], "correct": final, "base": [1, 1, 1, 1, 0, 1]})  # fmt: skip

    finals = {"a-s0": run([1, 1, 0, 0, 0, 1]), "b-s0": run([1, 0, 0, 0, 1, 1]), "b-s1": run([1, 1, 0, 0, 1, 0])}
    # F(a) = 2/4; b's seeds average to [1, 0.5, 0, 0] on k0..k3: F(b) = 2.5/4; k4 (BT) is left out
    assert module.paired_forgetting(finals, ["a-s0"], ["b-s0", "b-s1"], "qa").startswith("+0.125 [")
    assert module.paired_forgetting(finals, ["a-s0"], ["b-s0", "b-s1"], None).startswith("+0.200 [")  # 5 probes, + m0's 0.5
    assert module.paired_forgetting(finals, ["a-s0"], ["a-s0"], "qa") == "+0.000 [+0.000, +0.000]"
    assert module.paired_forgetting(finals, ["a-s0"], ["b-s0"], "cloze") == "—"


def test_findings_tables_read_a_forgetting_sweep(smoke, capsys, tmp_path):
    """The forgetting section: one row per recipe, each recipe against full, and full's second seed as the noise."""
    out, _ = smoke
    (tmp_path / "forgetting").mkdir()
    for name in ("full-s0", "lora-s0", "replay-s0", "kl-s0"):
        (tmp_path / "forgetting" / name).symlink_to(out / name)
    (tmp_path / "forgetting" / "full-s1").symlink_to(out / "full-s0")
    module = findings_tables()
    assert module.main([str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Forgetting (5 finished runs; seeds per recipe: full 2, lora 1, replay 1, kl 1)" in text
    assert [line.split(" | ")[0] for line in text.splitlines() if " − " in line and line.startswith("| ")][1:] == [
        "| lora − full", "| replay − full", "| kl − full", "| full-s1 − full-s0 (seeds of full: the noise)"]
    noise = next(line for line in text.splitlines() if line.startswith("| full-s1 − full-s0"))
    assert noise.endswith("| +0.000 [+0.000, +0.000] |")  # the same run twice: arithmetic differs by nothing
