"""Every built-in suite says in its header which claims `kdyn plan` lets it decide ("# kdyn plan SUITE [--effect E]:
can decide C1, C2"), and the fast plan (no --probe-base: group sizes from the benchmark alone) agrees. The circuits
suite's plan tokenises its prompts with SmolLM2's tokenizer, so its case is an integration test."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from kdyn.plan import make_plan
from kdyn.sweep.suite import builtin_suites

LINE = re.compile(r"^# kdyn plan (?P<suite>\S+)(?: --effect (?P<effect>[0-9.]+))?: can decide (?P<claims>[A-Z0-9, ]+)$", re.M)
NEEDS_MODEL = {"circuits"}  # circuits on: the plan pairs the prompts with the model's tokenizer


def header(name: str) -> str:
    text = resources.files("kdyn").joinpath("configs", "suites", f"{name}.yaml").read_text(encoding="utf-8")
    return text[: text.index("\nname:")]


def stated(name: str) -> list[tuple[float, list[str]]]:
    out = []
    for m in LINE.finditer(header(name)):
        assert m["suite"] == name, f"{name}.yaml states the plan of '{m['suite']}'"
        out.append((float(m["effect"] or 0.15), [c.strip() for c in m["claims"].split(",")]))
    return out


def cases() -> list:
    return [pytest.param(name, marks=[pytest.mark.integration] if name in NEEDS_MODEL else [])
            for name in builtin_suites()]  # fmt: skip


def test_every_builtin_suite_states_its_plan_and_its_time_measured_or_estimated():
    assert {"strategies", "relevance", "models", "circuits"} <= set(builtin_suites())
    for name in builtin_suites():
        assert stated(name), f"{name}.yaml has no '# kdyn plan {name}: can decide ...' line"
        assert re.search(r"Estimated, not measured|Measured \d{4}-\d{2}-\d{2}", header(name)), name


@pytest.mark.parametrize("name", cases())
def test_the_plan_decides_what_the_suite_header_says(name):
    for effect, claims in stated(name):
        verdicts = {c["claim"]: c for c in make_plan(name, effect=effect).as_json()["claims"]}
        for claim in claims:
            assert claim in verdicts, f"{name}: the plan does not address {claim}"
            assert verdicts[claim]["verdict"] == "can decide", (name, claim, verdicts[claim]["why"])


def test_relevance_is_sized_to_decide_its_claims_at_the_default_effect():
    """The sizes behind the header: ≥ 173 new facts (paired), kinds of ≥ 123 against 300, ≥ 174 arithmetic probes."""
    plan = make_plan("relevance").as_json()
    n = {(g["kind"], g["probe_type"]): g["n"] for g in plan["groups"]}
    assert n[("new", "cloze")] >= 173 and n[("skill", "arithmetic")] >= 173 and n[("related", "qa")] >= 123
    assert min(n[("known", t)] for t in ("cloze", "qa", "mcq")) >= 400  # SmolLM2 gets ~23% of known cloze right
    verdicts = {c["claim"]: c["verdict"] for c in plan["claims"]}
    assert verdicts["D2"] == "cannot decide"  # stated in the header: the buckets detect 0.17, not 0.15
