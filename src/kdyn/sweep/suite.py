"""Sweep suites: a base experiment, a grid of axes and seeds, expanded into one run per grid point.

A suite is YAML; the built-in ones live in kdyn/configs/suites/ and start with the command that runs them:

    name: strategies
    base: quickstart               # experiment config: built-in name or YAML path (relative to the suite's folder)
    overrides: [train.epochs=4]    # --set values for every run
    seeds: [0, 1, 2]               # each seed is written into every key of seed_keys
    seed_keys: [train.seed]        # the benchmark seed stays fixed, so all runs share their probes
    grid:                          # axes; the runs are the cartesian product of their choices
      strategy:
        - {label: full}
        - {label: lora, overrides: [train.lora.enabled=true, train.optimizer.lr=1.0e-3]}
    smoke:                         # --smoke: the same grid shrunk to minutes
      seeds: [0]
      overrides: [train.epochs=1, bench.people=4]
    keep_state: false              # delete RUN/state/ (only needed to resume) once a run is done

A grid point is named by its labels and seed (`lora-s1`) and runs as `kdyn run BASE --out DIR/<name>` with
--set values in this order (a later value wins): the suite's overrides, `train.strategy=<labels>` (so
`kdyn compare` groups seeds of one point), each choice's overrides, the seed keys, `train.keep_state=true` (with
`keep_state: true`), then (--smoke) the smoke overrides, then `kdyn sweep --set` values. Every point's config
is resolved when the suite loads, so a typo fails before any run.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kdyn.config import builtin_config_names, from_dict, read_config_source, to_dict
from kdyn.errors import KdynError, unknown
from kdyn.experiment import load_experiment

SUITES_DIR = "configs/suites"
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+]*(-[A-Za-z0-9.+]+)*$")  # safe in folder names and shells
AXIS = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_overrides(overrides: list[str], where: str) -> None:
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key or " " in key:
            raise ValueError(f"{where}: override '{item}' must look like key.path=value")


@dataclass
class Choice:
    """One value of an axis: a label (used in run names) and the --set overrides it stands for."""

    label: str = ""
    overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not LABEL.match(self.label):
            raise ValueError(f"label '{self.label}' must be letters, digits, '.', '+' or single '-' between them")
        check_overrides(self.overrides, f"choice '{self.label}'")


@dataclass
class SmokeConfig:
    """What --smoke changes: the seeds (empty: the suite's) and overrides that shrink every run."""

    seeds: list[int] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        check_overrides(self.overrides, "smoke")


@dataclass
class SuiteConfig:
    name: str = "sweep"
    base: str = "quickstart"
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    seed_keys: list[str] = field(default_factory=lambda: ["train.seed"])
    grid: dict[str, list[Choice]] = field(default_factory=dict)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    keep_state: bool = False  # keep RUN/state/ (optimizer and weights for --resume) after a run is done

    def validate(self) -> None:
        if not LABEL.match(self.name):
            raise ValueError(f"name '{self.name}' must be letters, digits, '.', '+' or single '-' between them")
        check_overrides(self.overrides, "overrides")
        for what, seeds in (("seeds", self.seeds), ("smoke.seeds", self.smoke.seeds)):
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"{what} lists a seed twice: {seeds}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        if not self.seed_keys:
            raise ValueError("seed_keys must name at least one config key, e.g. train.seed")
        if not self.grid:
            raise ValueError("grid must have at least one axis, e.g. grid: {strategy: [{label: full}]}")
        for axis, choices in self.grid.items():
            if not AXIS.match(axis):
                raise ValueError(f"grid axis '{axis}' must be a plain name (letters, digits, '_')")
            if not choices:
                raise ValueError(f"grid axis '{axis}' has no choices")
            labels = [c.label for c in choices]
            dup = next((x for x in labels if labels.count(x) > 1), None)
            if dup is not None:
                raise ValueError(f"grid axis '{axis}' has the label '{dup}' twice")


@dataclass(frozen=True)
class Point:
    """One run of a sweep."""

    name: str  # folder name under the sweep's output directory, e.g. "lora-s1"
    labels: tuple[str, ...]  # one label per axis, in axis order
    seed: int
    overrides: tuple[str, ...]  # every --set value, in the order they apply
    config: dict[str, Any] = field(compare=False, hash=False, repr=False)  # the resolved experiment config

    @property
    def tokens(self) -> set[str]:
        """What `--only` matches: the name, each label, and the seed as 's<seed>'."""
        return {self.name, *self.labels, f"s{self.seed}"}


@dataclass
class Suite:
    config: SuiteConfig
    source: str  # built-in name or the YAML path, for messages
    base: str  # built-in experiment name or an absolute YAML path
    smoke: bool
    points: list[Point]

    @property
    def name(self) -> str:
        return self.config.name + ("-smoke" if self.smoke else "")


def builtin_suites() -> list[str]:
    return builtin_config_names(SUITES_DIR)


def resolve_base(base: str, suite_path: Path | None) -> str:
    """A built-in experiment name stays; a path is made absolute. Relative paths start at the suite file's
    folder (for a built-in suite: kdyn/configs/suites/)."""
    if base in builtin_config_names():
        return base
    path = Path(base)
    builtin_folder = Path(str(resources.files("kdyn").joinpath(*SUITES_DIR.split("/"))))
    folder = suite_path.parent if suite_path is not None else builtin_folder
    if not path.is_absolute() and (folder / path).is_file():
        path = folder / path
    return str(path.resolve()) if path.is_file() else base


def yaml_string(text: str) -> str:
    """`text` as a --set value that YAML reads back as this string ('true', '1.5' and 'null' get quotes)."""
    return text if yaml.safe_load(text) == text else f"'{text}'"


def expand(cfg: SuiteConfig, smoke: bool, extra: list[str]) -> list[tuple[str, tuple[str, ...], int, tuple[str, ...]]]:
    """(name, labels, seed, overrides) per grid point: seeds outermost, so a first seed finishes early."""
    seeds = cfg.smoke.seeds if smoke and cfg.smoke.seeds else cfg.seeds
    out = []
    for seed in seeds:
        for choices in itertools.product(*cfg.grid.values()):
            labels = tuple(c.label for c in choices)
            overrides = [*cfg.overrides, f"train.strategy={yaml_string('-'.join(labels))}"]
            overrides += [o for c in choices for o in c.overrides]
            overrides += [f"{key}={seed}" for key in cfg.seed_keys]
            overrides += ["train.keep_state=true"] if cfg.keep_state else []  # else each run deletes its own
            overrides += (cfg.smoke.overrides if smoke else []) + extra
            out.append(("-".join(labels) + f"-s{seed}", labels, seed, tuple(overrides)))
    return out


def load_suite(name_or_path: str | Path, smoke: bool = False, overrides: list[str] | None = None) -> Suite:
    """Read and validate a suite (built-in name or YAML path); every grid point's config is resolved.
    `overrides` (`kdyn sweep --set`) apply to every run, after everything else (e.g. another model)."""
    data, label = read_config_source(name_or_path, SUITES_DIR, what="suite")
    cfg = from_dict(SuiteConfig, data, "", label)
    if smoke and not (cfg.smoke.seeds or cfg.smoke.overrides):
        raise KdynError(f"{label} has no smoke: section, so --smoke would run the full grid; add one "
                        "(smoke: {seeds: [0], overrides: [train.epochs=1]}) or leave out --smoke")  # fmt: skip
    try:
        check_overrides(list(overrides or []), "--set")
    except ValueError as e:
        raise KdynError(str(e)) from None
    path = None if str(name_or_path) in builtin_suites() else Path(name_or_path)
    base = resolve_base(cfg.base, path)
    points, seen = [], set()
    for name, labels, seed, point_overrides in expand(cfg, smoke, list(overrides or [])):
        if name in seen:
            raise KdynError(f"{label}: two grid points are both named '{name}'; make the labels distinct")
        seen.add(name)
        try:
            resolved = to_dict(load_experiment(base, list(point_overrides)))
        except KdynError as e:
            raise KdynError(f"{label}, run '{name}': {e}") from None
        points.append(Point(name, labels, seed, point_overrides, resolved))
    return Suite(cfg, str(name_or_path), base, smoke, points)


def select(points: list[Point], only: list[str]) -> list[Point]:
    """Points matching any of `only` (a name, a label or 's<seed>'); all points when `only` is empty."""
    wanted = [t.strip() for item in only for t in item.split(",") if t.strip()]
    if not wanted:
        return points
    known = set().union(*(p.tokens for p in points))
    for token in wanted:
        if token not in known:
            raise unknown("run or label (--only)", token, known)
    return [p for p in points if p.tokens & set(wanted)]
