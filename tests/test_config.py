"""Config loading: built-ins validate, unknown keys get a suggestion, overrides apply, types are checked."""

import pytest

from kdyn.bench.config import BenchConfig
from kdyn.config import builtin_config_names, load_config
from kdyn.errors import KdynError
from kdyn.experiment import ExperimentConfig, load_bench_config, load_experiment


@pytest.mark.parametrize("name", builtin_config_names())
def test_every_builtin_config_loads(name):
    cfg = load_experiment(name)
    assert isinstance(cfg, ExperimentConfig) and cfg.name == name


def test_unknown_key_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("bench:\n  peeple: 3\n")
    with pytest.raises(KdynError, match=r"unknown config key 'bench.peeple' \(did you mean 'people'\?\)"):
        load_experiment(p)


def test_wrong_type_and_choice(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("people: many\n")
    with pytest.raises(KdynError, match="'people' must be an integer"):
        load_config(BenchConfig, p)
    p.write_text("exposure: {mode: exponentail}\n")
    with pytest.raises(KdynError, match="did you mean 'exponential'"):
        load_config(BenchConfig, p)


def test_overrides_and_sections():
    cfg = load_bench_config("tiny", ["people=7", "exposure.copies=4"])
    assert cfg.people == 7 and cfg.exposure.copies == 4
    assert load_experiment("tiny", ["bench.seed=3"]).bench.seed == 3


def test_missing_config_file():
    with pytest.raises(KdynError, match="neither a file nor a built-in config"):
        load_experiment("no-such-config.yaml")


def test_validate_names_field():
    with pytest.raises(KdynError, match="unknown format 'html'"):
        load_bench_config("tiny", ["formats=[html]"])
