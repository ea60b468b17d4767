"""Typed configs: dataclasses loaded from YAML (or a built-in name) with dotted overrides.

Every field is checked on load; an unknown key fails with the dotted path and a suggestion, a wrong
type names the field and what it expected. `to_dict` gives back the fully resolved config, which is
what every run and benchmark writes beside its outputs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from kdyn.errors import KdynError, did_you_mean

T = TypeVar("T")


def builtin_config_names(folder: str = "configs") -> list[str]:
    """Names of the built-in YAML files in kdyn/<folder> (experiment configs; `configs/suites` for sweeps)."""
    root = resources.files("kdyn").joinpath(*folder.split("/"))
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_config_source(name_or_path: str | Path, folder: str = "configs",
                       what: str = "config") -> tuple[dict[str, Any], str]:  # fmt: skip
    """Raw mapping from a built-in name (a YAML file in kdyn/<folder>) or a YAML path, plus a label for errors."""
    text_name = str(name_or_path)
    if text_name in builtin_config_names(folder):
        text = resources.files("kdyn").joinpath(*folder.split("/"), f"{text_name}.yaml").read_text(encoding="utf-8")
        label = f"built-in {what} '{text_name}'"
    else:
        path = Path(text_name)
        if not path.is_file():
            names = builtin_config_names(folder)
            hint = did_you_mean(text_name, names)
            raise KdynError(
                f"{what} '{text_name}' is neither a file nor a built-in {what}{hint}; "
                f"built-in: {', '.join(names)}"
            )
        from kdyn.io import read_text  # here: kdyn.io pulls in pyarrow, which a config needs not

        text = read_text(path)
        label = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KdynError(f"{label} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None or data == {}:  # not the defaults: an empty file is a mistake (a wrong path, a failed save)
        raise KdynError(f"{label} is an empty {what} (it sets nothing); write its settings or name a built-in {what}")
    if not isinstance(data, dict):
        got = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(type(data))
        raise KdynError(f"{label} must be a YAML mapping of keys to values, got {got or type(data).__name__}")
    return data, label


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise KdynError(f"override '{item}' must look like key.path=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise KdynError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def from_dict(cls: type[T], data: Any, where: str = "", label: str = "config") -> T:
    """Build dataclass `cls` from a mapping, validating every key and value."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KdynError(f"{label}: '{where or 'config'}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise KdynError(f"{label}: unknown config key '{dotted}'{did_you_mean(str(key), fields)}")
        kwargs[key] = _coerce(hints[key], value, dotted, label)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as e:
            raise KdynError(f"{label}: {where + ': ' if where else ''}{e}") from None
    return obj


def _coerce(tp: Any, value: Any, dotted: str, label: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, dotted, label)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, dotted, label)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise KdynError(
                f"{label}: '{dotted}' must be one of {', '.join(map(str, choices))}, got {value!r}"
                f"{did_you_mean(str(value), map(str, choices))}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise KdynError(f"{label}: '{dotted}' must be a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(item_tp, v, f"{dotted}[{i}]", label) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise KdynError(f"{label}: '{dotted}' must be a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {k: _coerce(val_tp, v, f"{dotted}.{k}", label) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise KdynError(f"{label}: '{dotted}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise KdynError(f"{label}: '{dotted}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KdynError(f"{label}: '{dotted}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise KdynError(f"{label}: '{dotted}' must be a string, got {value!r}")
        return str(value)
    return value


def load_config(
    cls: type[T], name_or_path: str | Path, overrides: list[str] | None = None, section: str | None = None
) -> T:
    """Load `cls` from a built-in name or YAML path; `section` picks a sub-mapping when present."""
    data, label = read_config_source(name_or_path)
    if section is not None and isinstance(data.get(section), dict):
        data = data[section]
    apply_overrides(data, list(overrides or []))
    return from_dict(cls, data, "", label)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
