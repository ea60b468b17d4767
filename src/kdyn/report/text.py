"""Numbers and names as the report writes them: values with CIs, group labels, short phrases.

Missing values print as '—' (never 0); the sentences in captions and findings are built from these.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from kdyn.analysis.render import num as _num
from kdyn.analysis.results import ALL, KIND_ORDER, KNOWN_WRONG_AT_BASE

__all__ = ["num", "with_ci", "ci_of", "is_num", "group_label", "pct", "arrow", "step_label", "count", "plural", "p_value",
           "LEARNED_KINDS", "ordered_kinds", "learning_rows", "learning_words", "interval_words"]

KIND_NAMES = {KNOWN_WRONG_AT_BASE: "known (wrong at base)", "skill": "skill"}
TYPE_NAMES = {"qa": "QA", "mcq": "MCQ"}


def is_num(value: Any) -> bool:
    """A finite number (not None, NA or NaN)."""
    if value is None or value is pd.NA:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def num(value: Any, digits: int = 3) -> str:
    """A number for the page: '—' when missing, a true minus sign for negatives."""
    text = _num(value, digits)
    if not is_num(value):
        return text
    if text.startswith("-") and not text.strip("-0."):
        text = text[1:]  # −0.00 is 0.00
    return text.replace("-", "−")


def p_value(p: Any) -> str:
    if not is_num(p):
        return "—"
    return "p < 0.0001" if float(p) < 1e-4 else f"p = {float(p):.4f}"


def with_ci(value: Any, lo: Any, hi: Any, digits: int = 2) -> str:
    """'0.59 [0.41–0.76]'; '−0.58 [−0.93 to −0.31]' when a bound is negative; '—' when missing."""
    if not is_num(value):
        return "—"
    if not (is_num(lo) and is_num(hi)):
        return num(value, digits)
    sep = " to " if min(float(lo), float(hi)) < 0 else "–"
    return f"{num(value, digits)} [{num(lo, digits)}{sep}{num(hi, digits)}]"


def ci_of(row: Any, name: str, digits: int = 2) -> str:
    """'0.59 [0.41–0.76]' from a row's `name`, `name_lo`, `name_hi`."""
    return with_ci(row[name], row[f"{name}_lo"], row[f"{name}_hi"], digits)


def interval_words(summary: dict[str, Any]) -> str:
    """How the run's [a–b] were made, short: 'Wilson for rates, bootstrap over entities otherwise'."""
    boot = summary.get("bootstrap", {}) if isinstance(summary, dict) else {}
    unit = boot.get("unit")
    if unit is None:  # an analysis written before the unit was recorded: a percentile bootstrap over items
        return "bootstrap over items"
    over = "entities" if unit == "entity" else "items"
    return (f"Wilson for rates{' (entity-clustered effective n)' if unit == 'entity' else ''}, "
            f"bootstrap over {over} otherwise")


def type_name(probe_type: str) -> str:
    return TYPE_NAMES.get(probe_type, probe_type)


def group_label(kind: str, probe_type: str) -> str:
    """'new cloze', 'known (wrong at base) QA', 'arithmetic'; imported results without kinds: 'all items'."""
    if kind == ALL and probe_type == ALL:
        return "all items"
    if kind in ("skill", ALL):
        return type_name(probe_type)
    if probe_type == ALL:
        return KIND_NAMES.get(kind, kind)
    return f"{KIND_NAMES.get(kind, kind)} {type_name(probe_type)}"


def pct(value: Any) -> str:
    return f"{100 * float(value):.0f}%" if is_num(value) else "—"


def arrow(a: Any, b: Any, digits: int = 2) -> str:
    """'0.00→0.62'."""
    return f"{num(_float(a), digits)}→{num(_float(b), digits)}"


def _float(value: Any) -> Any:
    return float(value) if is_num(value) else value


def step_label(step: Any) -> str:
    """A checkpoint step: '120' (whole numbers without decimals), '—' when missing."""
    if not is_num(step):
        return "—"
    value = float(step)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def count(value: Any) -> str:
    """A count: '3', or '—' when missing."""
    return str(int(value)) if is_num(value) else "—"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


LEARNED_KINDS = ("new", "related", "updated")  # what training is meant to teach
NOT_LEARNED = ("known", KNOWN_WRONG_AT_BASE, "skill")


def ordered_kinds(kinds: Any) -> list[str]:
    """Distinct kinds in the analysis' reading order; unknown kinds (e.g. 'all' of imported results) last."""
    present = list(dict.fromkeys(kinds))
    return [k for k in KIND_ORDER if k in present] + sorted(k for k in present if k not in KIND_ORDER)


def learning_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the kinds training should teach (new / related / updated); for results without those kinds
    (imported ones), every row that is not a known fact or a skill."""
    rows = frame[frame["kind"].isin(LEARNED_KINDS)]
    return rows if len(rows) else frame[~frame["kind"].isin(NOT_LEARNED)]


def learning_words(rows: pd.DataFrame) -> str:
    """How `learning_rows` reads in a sentence."""
    return "new, related and updated" if rows["kind"].isin(LEARNED_KINDS).any() else "imported"
