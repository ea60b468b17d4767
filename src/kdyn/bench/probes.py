"""Knowledge probes per fact: cloze (the train template: memorisation), qa (a held-out question:
extraction), mcq (a held-out statement, k same-relation options scored by log-likelihood), and
compositional (two hops through facts of the benchmark)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from kdyn.bench.config import BenchConfig
from kdyn.bench.facts import fictional_orgs, fictional_people, random_date
from kdyn.bench.schema import Fact, Probe
from kdyn.bench.templates import Template, catalog, compositions, pools, relations


def _object_set(fact: Fact, facts: list[Fact]) -> list[str]:
    """Values a distractor for `fact` may take: same relation, same world (real or fictional)."""
    if fact.kind in ("known", "updated"):
        return sorted({f["object"] for f in catalog()[fact.relation]})
    obj_type = relations()[fact.relation].object_type
    if obj_type in pools():
        return list(pools()[obj_type])
    if obj_type == "organisation":
        return sorted({f.subject for f in facts if f.entity_type == "organisation"})
    return sorted({f.subject for f in facts if f.entity_type == "person"} | {f.object for f in facts if f.relation == fact.relation})


class _Taken:
    """`base | extra` for the name makers without copying `base` (they only test and add names)."""

    def __init__(self, base: set[str], extra: list[str]) -> None:
        self.base, self.extra = base, set(extra)

    def __contains__(self, name: object) -> bool:
        return name in self.base or name in self.extra

    def add(self, name: str) -> None:
        self.extra.add(name)


class _Without(Sequence[str]):
    """`values` less a few positions, without copying `values` (`random.sample` only takes len and items)."""

    def __init__(self, values: list[str], drop: list[int]) -> None:
        self.values, self.drop = values, sorted(set(drop))

    def __len__(self) -> int:
        return len(self.values) - len(self.drop)

    def __getitem__(self, i: int) -> str:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        for d in self.drop:
            if d > i:
                break
            i += 1
        return self.values[i]


class Distractors:
    """Wrong mcq options for the facts of one benchmark. Each relation's value set (and where each value sits
    in it) is computed once, and a draw skips the banned values without copying the set: redone per fact,
    both made a build quadratic in its size (23,328 organisations took 10 minutes, 100,000 people hours)."""

    def __init__(self, facts: list[Fact]) -> None:
        self.facts = facts
        self.sets: dict[tuple[str, bool], tuple[list[str], dict[str, list[int]]]] = {}
        self.subjects = {f.subject for f in facts}

    def candidates(self, fact: Fact, banned: set[str]) -> Sequence[str]:
        """The relation's value set less the `banned` (lower-cased) values, in the set's order."""
        key = (fact.relation, fact.kind in ("known", "updated"))
        if key not in self.sets:
            values = _object_set(fact, self.facts)
            where: dict[str, list[int]] = {}
            for i, v in enumerate(values):
                where.setdefault(v.lower(), []).append(i)
            self.sets[key] = values, where
        values, where = self.sets[key]
        return _Without(values, [i for b in banned for i in where.get(b, [])])

    def draw(self, fact: Fact, k: int, rng: random.Random) -> list[str]:
        """k - 1 distractors for `fact` (for an updated fact, its previous value first)."""
        banned = {s.lower() for s in [fact.object, *fact.object_aliases, fact.subject]}  # never the subject itself
        out: list[str] = []
        if fact.previous_object:  # updated: the old value is the most telling distractor
            out.append(fact.previous_object)
            banned.add(fact.previous_object.lower())
        if fact.relation in ("birth_date", "founded_year"):
            for _ in range(1000 * k):  # bounded: there are only 66 founding years to draw from
                if len(out) >= k - 1:
                    break
                value = random_date(rng) if fact.relation == "birth_date" else str(rng.randint(1950, 2015))
                if value.lower() not in banned:
                    banned.add(value.lower())
                    out.append(value)
            if len(out) < k - 1:
                raise ValueError(f"relation {fact.relation}: too few distinct values for {k} options")
            return out
        candidates = self.candidates(fact, banned)
        need = k - 1 - len(out)
        if len(candidates) < need and fact.kind not in ("known", "updated"):
            # small benchmarks: top up fictional names (organisations, people) with fresh ones
            obj_type = relations()[fact.relation].object_type
            make = fictional_orgs if obj_type == "organisation" else fictional_people
            if obj_type in ("organisation", "person", "founder_person"):
                few = list(candidates)
                candidates = few + make(rng, need - len(few), _Taken(self.subjects, few))  # type: ignore[arg-type]
        if len(candidates) < need:
            raise ValueError(f"relation {fact.relation}: only {len(candidates)} distractors for {need} options")
        return out + rng.sample(candidates, need)


def fact_probes(
    fact: Fact, cloze: Template, distractors: Distractors, cfg: BenchConfig, rng: random.Random
) -> list[Probe]:
    rel = relations()[fact.relation]
    common = dict(fact_id=fact.fact_id, family="knowledge", kind=fact.kind, target_aliases=list(fact.object_aliases))
    out = []
    if "cloze" in cfg.probes.types:
        out.append(Probe(probe_id=f"{fact.fact_id}-cloze", probe_type="cloze", prompt=cloze.prefix(fact.subject),
                         chat=False, target=fact.object, template_id=cloze.template_id, **common))  # fmt: skip
    if "qa" in cfg.probes.types:
        q = rng.choice(rel.questions_held_out)
        prompt = f"{q.render(fact.subject)} {cfg.probes.qa_instruction}".strip()
        out.append(Probe(probe_id=f"{fact.fact_id}-qa", probe_type="qa", prompt=prompt, chat=True,
                         target=fact.object, template_id=q.template_id, **common))  # fmt: skip
    if "mcq" in cfg.probes.types:
        s = rng.choice(rel.held_out)
        options = [fact.object, *distractors.draw(fact, cfg.probes.mcq_options, rng)]
        rng.shuffle(options)
        out.append(Probe(probe_id=f"{fact.fact_id}-mcq", probe_type="mcq", prompt=s.prefix(fact.subject), chat=False,
                         target=fact.object, options=options, answer_index=options.index(fact.object),
                         k=len(options), template_id=s.template_id, **common))  # fmt: skip
    return out


def compositional_probes(facts: list[Fact], cfg: BenchConfig, rng: random.Random) -> list[Probe]:
    """Two-hop probes: subject --first--> middle entity --second--> target, both hops in the benchmark."""
    if "compositional" not in cfg.probes.types:
        return []
    by_subject_rel = {(f.subject, f.relation): f for f in facts if f.kind == "new"}
    out = []
    for comp in compositions().values():
        made = 0
        for first in facts:
            if first.kind != "new" or first.relation != comp.first:
                continue
            second = by_subject_rel.get((first.object, comp.second))
            if second is None:
                continue
            if cfg.probes.compositional_max and made >= cfg.probes.compositional_max:
                break
            t = rng.choice(comp.templates)
            out.append(Probe(probe_id=f"{first.fact_id}-comp-{comp.name}", fact_id=first.fact_id, family="knowledge",
                             kind="new", probe_type="compositional", prompt=t.prefix(first.subject), chat=False,
                             target=second.object, template_id=t.template_id))  # fmt: skip
            made += 1
    return out
