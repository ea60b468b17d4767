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


def _one_step(rng: random.Random) -> tuple[str, int]:
    op = rng.choice(["+", "-", "*"])
    if op == "+":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b}?", a + b
    if op == "-":
        a, b = rng.randint(20, 99), rng.randint(1, 19)
        return f"What is {a} - {b}?", a - b
    a, b = rng.randint(2, 9), rng.randint(11, 30)
    return f"What is {a} * {b}?", a * b


def _multi_step(rng: random.Random) -> tuple[str, int]:
    if rng.random() < 0.5:
        a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)
        form = rng.choice(["({a} + {b}) * {c}", "{a} * {c} + {b}", "{a} + {b} - {c}"])
        expr = form.format(a=a, b=b, c=c)
        return f"What is {expr}?", int(eval(expr, {"__builtins__": {}}))  # our own digits and operators only
    text, fn = rng.choice(WORD_PROBLEMS)
    a, b, c = rng.randint(3, 12), rng.randint(2, 9), rng.randint(1, 5)
    return text.format(name=rng.choice(NAMES), a=a, b=b, c=c), fn(a, b, c)


def arithmetic_probes(rng: random.Random, one_step: int, multi_step: int, instruction: str) -> list[Probe]:
    probes = []
    for label, n, make in (("one", one_step, _one_step), ("multi", multi_step, _multi_step)):
        seen: set[str] = set()
        while len([p for p in probes if p.template_id == f"arithmetic:{label}"]) < n:
            question, answer = make(rng)
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
    return probes
