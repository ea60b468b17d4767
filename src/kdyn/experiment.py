"""ExperimentConfig: one YAML for a whole run (model, benchmark, probing, training, circuits, analysis).

Built-in configs live in kdyn/configs/*.yaml; `kdyn run quickstart` and `kdyn bench build quickstart`
read the same file (the latter only its `bench:` section).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdyn.analysis.config import AnalysisConfig
from kdyn.bench.config import BenchConfig
from kdyn.circuits.config import CircuitsConfig
from kdyn.config import load_config
from kdyn.models.registry import DEFAULT_MODEL
from kdyn.probe.scorer import ScoreConfig
from kdyn.train.config import TrainConfig


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    model: str = DEFAULT_MODEL
    bench: BenchConfig = field(default_factory=BenchConfig)
    probe: ScoreConfig = field(default_factory=ScoreConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    circuits: CircuitsConfig = field(default_factory=CircuitsConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def validate(self) -> None:
        b = self.bench
        trained = b.people * len(b.person_relations) + b.organisations * len(b.organisation_relations) + b.related + b.updated
        if not self.train.bench_dir and not trained:
            raise ValueError("bench: no fact to train on (people, organisations, related and updated make none), "
                             "so training would take 0 steps")  # fmt: skip


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """Write derived values out: augmentation blocks set the bench fields they stand for, and an
    `auto` strategy label becomes the blocks in use (so config.yaml says what actually ran)."""
    aug = cfg.train.augment
    if aug.formats:
        cfg.bench.formats = list(aug.formats)
    if aug.paraphrases > 0:
        cfg.bench.templates_per_fact = aug.paraphrases
    if cfg.train.strategy == "auto":
        cfg.train.strategy = cfg.train.strategy_label()
    return cfg


def load_experiment(name_or_path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return resolve(load_config(ExperimentConfig, name_or_path, overrides))


def load_bench_config(name_or_path: str | Path, overrides: list[str] | None = None) -> BenchConfig:
    """A bench config: the `bench:` section of an experiment config, or a bench-only YAML."""
    return load_config(BenchConfig, name_or_path, overrides, section="bench")
