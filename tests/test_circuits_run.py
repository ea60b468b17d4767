"""`kdyn circuits` on run directories: the output contract, reuse, determinism, bad input, LoRA, `kdyn run`.

Most tests use a synthetic run (the tiny benchmark, tiny random models saved as checkpoints, made-up probe
results): no training, so they take seconds. One test runs `kdyn run tiny` with circuits enabled.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from rich.console import Console
from safetensors import safe_open
from typer.testing import CliRunner

from kdyn.bench.build import build_bench
from kdyn.circuits.evolution import METRIC_COLUMNS
from kdyn.circuits.prompts import read_bench
from kdyn.circuits.run import circuits, load_step
from kdyn.cli import app
from kdyn.config import to_dict
from kdyn.experiment import load_experiment
from kdyn.io import write_parquet
from kdyn.models.tiny import tiny_random_llama
from kdyn.pipeline import run_experiment

STEPS = (0, 4, 8, 12)
SETTINGS = ["circuits.top_k=12", "circuits.bootstrap=20", "circuits.noise_splits=3", "circuits.n_prompts=10"]
CONTRACT = ("step, relation, n_prompts, n_unpaired, n_edges_total, n_edges, n_nodes, clean_metric, corrupted_metric, "
            "faithfulness, faithfulness_random, faithfulness_flag, hit10_full, mrr_full, hit10_circuit, mrr_circuit, "
            "hit10_random, mrr_random, faithfulness_auc, entropy, jaccard_edges_prev, jaccard_nodes_prev, "
            "jaccard_edges_final, jaccard_nodes_final, jaccard_edges_base, jaccard_nodes_base, mean_source_depth, "
            "noise_floor_jaccard").split(", ")  # fmt: skip


def synthetic_run(root: Path) -> Path:
    """A run directory as `kdyn train` leaves it, with random tiny models as its checkpoints."""
    cfg = load_experiment("tiny", ["bench.people=12"])
    build_bench(cfg.bench, root / "bench")
    (root / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    for seed, step in enumerate(STEPS[1:], start=1):
        model, tok = tiny_random_llama(seed=seed)
        model.save_pretrained(root / "checkpoints" / f"step-{step:06d}")
        tok.save_pretrained(root / "checkpoints" / f"step-{step:06d}")
    _, cloze = read_bench(root / "bench")
    rng = np.random.default_rng(0)
    rows = [{"step": s, "probe_id": p["probe_id"], "correct": bool(rng.random() < 0.5)} for s in STEPS for p in cloze]
    write_parquet(root / "probes.parquet", pa.Table.from_pylist(rows))
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("circuits") / "run")


def test_outputs_follow_the_contract(run: Path) -> None:
    result = circuits(run, overrides=SETTINGS)
    assert result.steps == list(STEPS) and len(result.computed) == len(STEPS)
    metrics = pq.read_table(run / "circuit_metrics.parquet").to_pandas()
    assert set(CONTRACT) <= set(metrics.columns) and list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["step"].tolist() == list(STEPS) and (metrics["relation"] == "birth_city").all()
    assert math.isnan(metrics["jaccard_edges_prev"][0]) and metrics["jaccard_edges_base"][0] == 1.0
    assert (metrics["n_edges"] <= 12).all() and (metrics["n_edges_total"] == 110).all()
    # honest NaN: faithfulness is undefined exactly when the flag says clean and corrupted barely differ
    assert (metrics["faithfulness"].isna() == metrics["faithfulness_flag"]).all()
    prompts = json.loads((run / "circuits" / "prompts.birth_city.json").read_text())
    assert (metrics["n_prompts"] == prompts["n_pairs"]).all() and (metrics["n_unpaired"] == prompts["n_unpaired"]).all()
    assert (metrics["n_prompts_configured"] == 10).all() and (metrics["random_draws"] == 10).all()
    assert metrics["prompt_usage"][0].startswith(f"birth_city: {prompts['n_pairs']} of the configured 10 prompt pairs used")
    tables = {name: pq.read_table(run / "circuits" / f"{name}.parquet").to_pandas()
              for name in ("layer_share", "logit_lens", "faithfulness_curve", "dynamics")}  # fmt: skip
    assert list(tables["layer_share"].columns) == ["step", "relation", "layer", "share"]
    assert sorted(set(tables["layer_share"]["layer"])) == [-1, 0, 1]
    assert list(tables["logit_lens"].columns) == ["step", "relation", "layer", "mean_rank", "median_rank"]
    assert len(tables["logit_lens"]) == 2 * len(STEPS)
    assert list(tables["faithfulness_curve"].columns) == ["step", "relation", "fraction", "n_edges", "faithfulness"]
    dyn = tables["dynamics"]
    assert list(dyn.columns) == ["from_step", "to_step", "relation", "group", "n_facts", "mean_change", "ci_low", "ci_high"]
    assert set(zip(dyn["from_step"], dyn["to_step"])) == {(0, 4), (4, 8), (8, 12), (0, 12)}
    assert (dyn.groupby(["from_step", "to_step"])["n_facts"].sum() == prompts["n_pairs"]).all()
    change = json.loads((run / "circuits" / "change_point.json").read_text())
    for name in ("entropy", "jaccard_edges_prev"):
        cp = change["birth_city"][name]
        assert {"status", "step", "ci_low", "ci_high", "n_boot", "p_value", "level", "reason"} <= set(cp)
        # four checkpoints are too few to test for a change point (it needs 5): said so, no step
        assert cp["status"] == "not tested" and cp["step"] is None and cp["reason"] == "not tested: 4 checkpoint(s), needs ≥ 5"
    with safe_open(str(run / "circuits" / "step-000004.birth_city.safetensors"), framework="pt") as f:
        assert set(f.keys()) == {"scores", "valid", "circuit", "scores_per_prompt"}
        assert f.get_tensor("scores").shape == (11, 27) and f.get_tensor("scores_per_prompt").shape == (10, 110)
        assert f.get_tensor("scores_per_prompt").dtype == torch.float32
        assert json.loads(f.metadata()["kdyn"])["writers"][0] == "input"


def test_results_are_reused_and_reproducible(run: Path) -> None:
    circuits(run, overrides=SETTINGS)
    files = sorted((run / "circuits").glob("*")) + [run / "circuit_metrics.parquet"]
    before = {p.name: p.read_bytes() for p in files}
    again = circuits(run, overrides=SETTINGS)
    assert again.computed == []  # stored checkpoints with the same settings are not recomputed
    forced = circuits(run, overrides=SETTINGS, force=True)
    assert len(forced.computed) == len(STEPS)
    assert {p.name: p.read_bytes() for p in files} == before  # same settings, same bytes
    subset = circuits(run, overrides=SETTINGS, checkpoints=[0, 12])
    assert subset.computed == [] and subset.steps == [0, 12]
    assert pq.read_table(run / "circuit_metrics.parquet")["step"].to_pylist() == [0, 12]
    assert "needs ≥ 5" in subset.change_point["birth_city"]["entropy"]["reason"]


def test_the_log_says_how_many_prompt_pairs_were_used_and_why(run: Path) -> None:
    log = io.StringIO()
    result = circuits(run, overrides=SETTINGS, console=Console(file=log, width=500))
    prompts = json.loads((run / "circuits" / "prompts.birth_city.json").read_text())
    line = result.prompt_usage["birth_city"]
    assert f"circuits {line}" in log.getvalue()
    assert line.startswith(f"birth_city: {prompts['n_pairs']} of the configured 10 prompt pairs used")
    assert prompts["n_paired"] == 11 and prompts["n_unpaired"] == 1  # the 12-person bench: one probe has no partner
    assert line.endswith("drawn at random from 11 probes that could be paired; 1 more could not be paired (1× no other "
                         "subject of this relation gives a prompt of the same token length with an object that starts "
                         "differently)")  # fmt: skip


@pytest.mark.parametrize("args, message", [
    (["--checkpoints", "0,5"], "checkpoint step 5 is not in this run"),
    (["--checkpoints", "0,x"], "--checkpoints takes comma-separated steps"),
    (["--relation", "birth_cty"], "did you mean 'birth_city'"),
    (["--set", "circuits.methd=eap"], "unknown config key 'circuits.methd'"),
    (["--set", "circuits.top_k=5", "--set", "circuits.threshold=0.1"], "set one of top_k and threshold"),
])  # fmt: skip
def test_bad_input_is_one_sentence_and_writes_nothing(run: Path, args: list[str], message: str) -> None:
    before = sorted(p.name for p in (run / "circuits").glob("*"))
    result = CliRunner().invoke(app, ["circuits", str(run), *args])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) <= 2
    assert sorted(p.name for p in (run / "circuits").glob("*")) == before


def test_missing_run_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["circuits", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "run directory not found" in result.output


def test_lora_checkpoints_are_merged_into_the_base(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: tiny-random-llama\n")
    base, tok = tiny_random_llama()
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero, which would make the adapter a no-op
    peft_model.save_pretrained(run / "checkpoints" / "step-000003")
    ids = torch.tensor([[5, 40, 41, 42]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        merged = load_step(run, "tiny-random-llama", 3).model(ids).logits
        plain = tiny_random_llama()[0](ids).logits
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=0)
    assert (merged - plain).abs().max() > 1e-3


def test_kdyn_run_computes_circuits_when_enabled(tmp_path: Path) -> None:
    result = run_experiment("tiny", tmp_path / "run", ["circuits.enabled=true", "circuits.top_k=10",
                                                       "circuits.bootstrap=10"], show_progress=False)  # fmt: skip
    out = result["outputs"]["circuits"]
    assert out == tmp_path / "run" / "circuits" and (out / "change_point.json").is_file()
    metrics = pq.read_table(tmp_path / "run" / "circuit_metrics.parquet").to_pandas()
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert metrics["step"].tolist() == [0, *saved]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["circuits"]["enabled"] is True
