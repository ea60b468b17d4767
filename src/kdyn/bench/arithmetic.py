"""Skill probes: procedurally generated arithmetic with exact integer answers (one- and multi-step)."""

from __future__ import annotations

import random

from kdyn.bench.schema import Probe

WORD_PROBLEMS = [
    ("{name} has {a} apples, buys {b} more and gives away {c}. How many apples does {name} have now?",
     lambda a, b, c: a + b - c),
    ("A box holds {a} pencils. {name} buys {b} boxes and loses {c} pencils. How many pencils are left?",
     lambda a, b, c: a * b - c),
    ("{name} reads {a} pages a day for {b} days, then {c} more pages. How many pages in total?",
     lambda a, b, c: a * b + c),
]  # fmt: skip
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana"]


def _one_step(rng: random.Random, hi: int) -> tuple[str, int]:
    op = rng.choice(["+", "-", "*"])
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    if op == "-" and b > a:
        a, b = b, a
    return f"What is {a} {op} {b}?", a + b if op == "+" else a - b if op == "-" else a * b


def _multi_step(rng: random.Random, hi: int) -> tuple[str, int]:
    a, b, c = rng.randint(1, hi), rng.randint(1, hi), rng.randint(1, 5)
    if rng.random() < 0.5:
        form = rng.choice(["({a} + {b}) * {c}", "{a} * {c} + {b}", "{a} + {b} - {c}"])
        expr = form.format(a=a, b=b, c=c)
        return f"What is {expr}?", int(eval(expr, {"__builtins__": {}}))  # our own digits and operators only
    text, fn = rng.choice(WORD_PROBLEMS)
    return text.format(name=rng.choice(NAMES), a=a, b=b, c=c), fn(a, b, c)


def distinct_questions(label: str, hi: int) -> int:
    """How many different questions `_one_step` / `_multi_step` can ask with operands up to `hi`."""
    if label == "one":  # a + b and a * b over [2, hi]², a - b with a >= b
        return 2 * (hi - 1) ** 2 + (hi - 1) * hi // 2
    forms = 3 * hi * hi * 5  # three expressions over a, b in [1, hi] and c in [1, 5]
    return forms + len(WORD_PROBLEMS) * len(NAMES) * hi * hi * 5


def arithmetic_probes(rng: random.Random, one_step: int, multi_step: int, instruction: str, hi: int = 9) -> list[Probe]:
    """`hi` bounds the operands: single digits by default, which a 135M model half-solves at step 0,
    so that a drop in skill is measurable (two-digit sums sit near 0 for it)."""
    probes = []
    for label, n, make in (("one", one_step, _one_step), ("multi", multi_step, _multi_step)):
        seen: set[str] = set()
        for _ in range(200 * n):
            if len(seen) == n:
                break
            question, answer = make(rng, hi)
            if question in seen:
                continue
            seen.add(question)
            i = len(seen) - 1
            probes.append(
                Probe(
                    probe_id=f"skill-arith-{label}-{i:03d}",
                    fact_id=None,
                    family="skill",
                    kind="skill",
                    probe_type="arithmetic",
                    prompt=f"{question} {instruction}".strip(),
                    chat=True,
                    target=str(answer),
                    template_id=f"arithmetic:{label}",
                )
            )
        if len(seen) < n:
            raise ValueError(f"only {len(seen)} distinct {label}-step arithmetic probes with operands up to {hi}")
    return probes
