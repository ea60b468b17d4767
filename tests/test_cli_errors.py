"""Bad input gets one clear sentence, exit code 2 and no partial output (README promise)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kdyn.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_unknown_config_key_suggests(tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("bench:\n  organisatons: 3\n")
    msg = one_line_error(run("bench", "build", str(cfg), "--out", str(tmp_path / "out")))
    assert "organisatons" in msg and "did you mean 'organisations'" in msg
    assert not (tmp_path / "out").exists()


def test_missing_file(tmp_path):
    msg = one_line_error(run("bench", "build", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")))
    assert "nope.yaml" in msg
    msg = one_line_error(run("bench", "import", "fictional-knowledge", str(tmp_path / "fk.json"), "--out", str(tmp_path / "o")))
    assert "file not found" in msg and not (tmp_path / "o").exists()


def test_malformed_jsonl_line_names_line(tiny_bench, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    lines = (bad / "probes.jsonl").read_text().splitlines()
    lines[6] = lines[6][:-5]  # truncate line 7
    (bad / "probes.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.parquet"
    msg = one_line_error(run("probe", "--model", "tiny-random-llama", "--bench", str(bad), "--out", str(out)))
    assert "probes.jsonl, line 7: malformed JSON" in msg
    assert not out.exists()


def test_missing_field_names_line(tiny_bench, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    rows = [json.loads(x) for x in (bad / "facts.jsonl").read_text().splitlines()]
    del rows[2]["object"]
    (bad / "facts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    msg = one_line_error(run("probe", "--model", "tiny-random-llama", "--bench", str(bad), "--out", str(tmp_path / "r.parquet")))
    assert "facts.jsonl, line 3: missing field(s) object" in msg


def test_unknown_model_lists_registry(tiny_bench, tmp_path):
    out = tmp_path / "r.parquet"
    msg = one_line_error(run("probe", "--model", "smollm2-135m", "--bench", str(tiny_bench), "--out", str(out)))
    assert "unknown model 'smollm2-135m'" in msg and "did you mean 'smollm2-135m-instruct'" in msg
    assert "tiny-random-llama" in msg and not out.exists()


def test_models_lists_registry():
    result = run("models")
    assert result.exit_code == 0
    for name in ("smollm2-135m-instruct", "gemma3-270m", "tiny-random-llama"):
        assert name in result.output


def test_probe_command_writes_results(tiny_bench, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "r.parquet"
    result = run("probe", "--model", "tiny-random-llama", "--bench", str(tiny_bench), "--out", str(out))
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    n_probes = sum(1 for _ in open(tiny_bench / "probes.jsonl"))
    from kdyn.device import resolve_precision

    said = " ".join(result.output.split())  # the table title wraps at the terminal width
    assert len(table) == n_probes and "accuracy per kind and probe type" in said
    assert f"({resolve_precision('auto')})" in said and "(auto)" not in said  # what auto became here
    known = [r for r in table if r["kind"] == "known"]
    assert all(r["known_wrong_at_base"] == (not r["correct"]) for r in known)
    assert all(r["known_wrong_at_base"] is None for r in table if r["kind"] != "known")
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_help_has_examples():
    for cmd in (["bench", "build"], ["probe"], ["run"], ["models"], ["bench", "import", "fictional-knowledge"]):
        result = run(*cmd, "--help")
        assert result.exit_code == 0 and "Example" in result.output
