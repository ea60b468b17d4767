"""Bad input as a new user gives it: each case is one sentence (KdynError; exit 2 from the CLI), never a hang,
a traceback, a silently smaller benchmark or a benchmark record taken as it is. `kdyn bench validate` lists
what is wrong with a benchmark folder."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest
from typer.testing import CliRunner

from kdyn.bench.schema import load_benchmark, validate_bench
from kdyn.cli import app
from kdyn.errors import KdynError
from kdyn.experiment import load_bench_config, load_experiment

runner = CliRunner()


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def at_most(message: str) -> int:
    return int(re.search(r"at most (\d+)", message).group(1))


# --- counts: checked against the name pools and the catalog before anything is built -----------------------------


@pytest.mark.parametrize("override", ["organisations=30000", "people=300000", "related=1000", "known=100000",
                                      "updated=5000", "probes.arithmetic_one_step=1000",
                                      "probes.arithmetic_multi_step=100000"])  # fmt: skip
def test_count_beyond_what_the_data_holds_names_the_maximum(override):
    # before: organisations/people looped forever, related raised IndexError, known/updated were quietly capped
    with pytest.raises(KdynError, match=r"is more than the \d+ .*at most \d+"):
        load_bench_config("tiny", [override])


def test_catalog_maxima_are_exact():
    from kdyn.bench.build import make_records

    for key, other in (("known", "updated=0"), ("updated", "known=0"), ("related", "related=0")):
        with pytest.raises(KdynError) as info:
            load_bench_config("tiny", [other, f"{key}=100000"])
        most = at_most(str(info.value))  # the maximum the message names (the catalog grows: not a constant here)
        with pytest.raises(KdynError):
            load_bench_config("tiny", [other, f"{key}={most + 1}"])
        facts, _, _ = make_records(load_bench_config("tiny", [other, f"{key}={most}"]))
        assert sum(f.kind == key for f in facts) == most  # reachable (related beyond it: IndexError before)


def test_bench_build_with_too_many_organisations_leaves_nothing(tmp_path):
    out = tmp_path / "b"
    msg = one_line_error(runner.invoke(app, ["bench", "build", "tiny", "--set", "organisations=30000", "--out", str(out)]))
    assert "organisations: 30000" in msg and "at most 23328" in msg
    assert not out.exists() and not list(tmp_path.iterdir())


def test_distractor_sets_are_computed_once_per_relation(monkeypatch):
    # computed per fact they made a build quadratic: 23,328 organisations took ~10 minutes, 100,000 people hours
    from kdyn.bench import probes
    from kdyn.bench.build import make_records

    calls = []
    real = probes._object_set
    monkeypatch.setattr(probes, "_object_set", lambda fact, facts: calls.append(fact.relation) or real(fact, facts))
    facts, _, _ = make_records(load_bench_config("tiny", ["people=40"]))
    assert len(calls) <= 2 * len({f.relation for f in facts}) < len(facts) // 4  # (relation, real or fictional)


def test_skipping_banned_values_samples_like_the_filtered_list():
    from kdyn.bench.probes import _Without

    for n in (5, 30, 300):  # both of random.sample's ways: a copied pool (small n) and a set of picks
        values = [f"v{i}" for i in range(n)]
        drop = [0, n // 2, n - 1]
        kept = [v for i, v in enumerate(values) if i not in drop]
        view = _Without(values, drop)
        assert len(view) == len(kept) and list(view) == kept
        for seed in range(5):
            assert random.Random(seed).sample(view, 2) == random.Random(seed).sample(kept, 2)


def test_mcq_options_beyond_the_founding_years_is_refused(tmp_path):
    # before: the distractor loop for founded_year (66 years) never ended
    with pytest.raises(KdynError, match="founded_year: too few distinct values for 80 options"):
        from kdyn.bench.build import build_bench

        only_years = ["people=0", "related=0", "updated=0", "known=0", "organisation_relations=[founded_year]"]
        build_bench(load_bench_config("tiny", [*only_years, "probes.mcq_options=80"]), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_probe_batch_size_zero_is_refused(tiny_bench, tmp_path):
    out = tmp_path / "r.parquet"
    args = ["probe", "--model", "tiny-random-llama", "--bench", str(tiny_bench), "--out", str(out), "--batch-size", "0"]
    assert "batch_size must be >= 1, got 0" in one_line_error(runner.invoke(app, args))
    assert not out.exists()


def test_nothing_to_train_on_is_refused(tiny_bench, tmp_path):
    zero = [f"bench.{k}=0" for k in ("people", "organisations", "related", "updated")]
    with pytest.raises(KdynError, match="no fact to train on"):
        load_experiment("tiny", zero)
    with pytest.raises(KdynError, match="the benchmark would be empty"):
        load_bench_config("tiny", [k.removeprefix("bench.") for k in zero]
                          + ["known=0", "probes.arithmetic_one_step=0", "probes.arithmetic_multi_step=0"])  # fmt: skip
    bench = tmp_path / "bench"
    shutil.copytree(tiny_bench, bench)
    (bench / "documents.jsonl").write_text("")
    run = tmp_path / "run"
    msg = one_line_error(runner.invoke(app, ["train", "tiny", "--set", f"train.bench_dir={bench}", "--out", str(run)]))
    assert "has no documents" in msg and not run.exists()


# --- config files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [("", "is an empty config"), ("# nothing yet\n", "is an empty config"),
                                           ("{}\n", "is an empty config"), ("- a\n- b\n", "got a list"),
                                           ("0\n", "got a number"), ("[]\n", "got a list"), ("quickstart\n", "got a string")])  # fmt: skip
def test_config_that_is_not_a_mapping_is_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    out = tmp_path / "b"  # (kdyn train read an empty file as the full default experiment)
    result = runner.invoke(app, ["bench", "build", str(path), "--out", str(out)])
    assert message in one_line_error(result) and not out.exists()


def test_config_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    msg = one_line_error(runner.invoke(app, ["bench", "build", str(path), "--out", str(tmp_path / "b")]))
    assert "c.yaml, line 1: not UTF-8 text" in msg and not (tmp_path / "b").exists()


def test_smoke_without_a_smoke_section_is_refused(tmp_path):
    from kdyn.sweep import load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: demo\nbase: tiny\ngrid:\n  strategy:\n    - {label: full}\n")
    load_suite(path)  # fine without --smoke
    with pytest.raises(KdynError, match="has no smoke: section, so --smoke would run the full grid"):
        load_suite(path, smoke=True)


# --- benchmark folders: every record typed and its ids checked on load --------------------------------------------


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _mcq(rows):
    return next(r for r in rows if r["probe_type"] == "mcq")


CHANGES = [
    ("facts.jsonl", lambda rows: rows[0].update(object=1992), "line 1: field 'object' must be a string, got 1992"),
    ("facts.jsonl", lambda rows: rows[1].update(exposures="two"), "line 2: field 'exposures' must be an integer, got \"two\""),
    ("facts.jsonl", lambda rows: rows[2].update(fact_id=rows[0]["fact_id"]), "line 3: duplicate fact_id"),
    ("facts.jsonl", lambda rows: rows[0].update(kind="fresh"), "line 1: field 'kind': 'fresh' is not one of"),
    ("documents.jsonl", lambda rows: rows[1].update(doc_id=rows[0]["doc_id"]), "line 2: duplicate doc_id"),
    ("documents.jsonl", lambda rows: rows[0].update(fact_ids="person-000-major"), "field 'fact_ids' must be a list of strings"),
    ("probes.jsonl", lambda rows: rows[0].update(target=7), "line 1: field 'target' must be a string, got 7"),
    ("probes.jsonl", lambda rows: _mcq(rows).update(answer_index="1"), "field 'answer_index' must be an integer or null"),
    ("probes.jsonl", lambda rows: _mcq(rows).update(answer_index=-1), "answer_index must index into options"),
    ("probes.jsonl", lambda rows: _mcq(rows).update(k=9), "needs k == len(options)"),
    ("probes.jsonl", lambda rows: rows[0].update(kind="skill"), "kind 'skill' differs from its fact's kind"),
    ("probes.jsonl", lambda rows: rows[0].update(fact_id=None), "a knowledge probe needs a fact_id"),
    ("probes.jsonl", lambda rows: rows[0].update(fact_id="ghost"), "fact_id 'ghost' is not in facts.jsonl"),
    ("probes.jsonl", lambda rows: rows.clear(), "holds no probes"),
]  # fmt: skip


@pytest.mark.parametrize("file, change, message", CHANGES)
def test_bad_record_names_file_line_and_field(tiny_bench, tmp_path, file, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    rows = _rows(bad / file)
    change(rows)
    _write(bad / file, rows)
    with pytest.raises(KdynError, match=re.escape(message)) as info:
        load_benchmark(bad)
    assert str(bad / file) in str(info.value)
    errors = validate_bench(bad)
    assert errors and message in errors[0]


@pytest.mark.parametrize("file", ["facts.jsonl", "probes.jsonl", "manifest.json"])
def test_bench_file_that_is_not_utf8(tiny_bench, tmp_path, file):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    data = (bad / file).read_bytes()
    (bad / file).write_bytes(data.replace(b"a", b"\xe9", 1))
    with pytest.raises(KdynError, match=re.escape(f"{file}, line ") + r"\d+: not UTF-8 text"):
        load_benchmark(bad)


@pytest.mark.parametrize("text, message", [("[1, 2]", "must hold a JSON object, got a list"),
                                           ('{"schema_version": "1"}', "schema_version '1' is not 1")])  # fmt: skip
def test_manifest_that_is_not_a_manifest(tiny_bench, tmp_path, text, message):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    (bad / "manifest.json").write_text(text)
    with pytest.raises(KdynError, match=re.escape(message)):
        load_benchmark(bad)


def test_bench_validate_command(tiny_bench, tmp_path):
    ok = runner.invoke(app, ["bench", "validate", str(tiny_bench)])
    lines = ok.output.strip().splitlines()
    n_probes = len(_rows(tiny_bench / "probes.jsonl"))
    assert ok.exit_code == 0 and len(lines) == 1 and "valid" in lines[0] and f"{n_probes} probes" in lines[0], ok.output
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bench, bad)
    facts = _rows(bad / "facts.jsonl")
    facts[0]["object"], facts[4]["exposures"] = 1992, "two"
    _write(bad / "facts.jsonl", facts)
    result = runner.invoke(app, ["bench", "validate", str(bad)])
    assert result.exit_code == 2, result.output
    assert "facts.jsonl, line 1: field 'object'" in result.output and "facts.jsonl, line 5: field 'exposures'" in result.output
    with pytest.raises(KdynError, match=r"\(and 1 more: `kdyn bench validate .*` lists them\)"):  # no echoes in probes
        load_benchmark(bad)
