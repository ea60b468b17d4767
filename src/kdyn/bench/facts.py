"""Facts of the four knowledge kinds: fictional people and organisations (`new`), new facts about
real entities (`related`), counterfactual replacements of real facts (`updated`), real facts never
trained on (`known`).

Every random choice comes from a `random.Random` seeded with a string derived from the config seed,
so the same config gives the same facts on any machine.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable

from kdyn.bench.config import RELATED_RELATIONS, BenchConfig
from kdyn.bench.schema import Fact
from kdyn.bench.templates import catalog, pools

RELATED_SUBJECTS = {  # related relation -> catalog relation whose subjects are the real entities
    "national_mascot": "capital",
    "twin_city": "country_of_city",
    "chief_scientist": "founder",
}


def rng_for(seed: int, part: str) -> random.Random:
    return random.Random(f"kdyn:{seed}:{part}")


def _surname(rng: random.Random, syllables: list[str]) -> str:
    return (rng.choice(syllables) + rng.choice(syllables)).capitalize()


def fictional_people(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    p = pools()
    names: list[str] = []
    while len(names) < n:
        name = f"{rng.choice(p['first_names'])} {_surname(rng, p['surname_syllables'])}"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def fictional_orgs(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    p = pools()
    names: list[str] = []
    while len(names) < n:
        stem = (rng.choice(p["org_syllables"]) + rng.choice(p["org_syllables"])).capitalize()
        name = f"{stem} {rng.choice(p['org_suffixes'])}"
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


@functools.cache
def name_pool_sizes() -> tuple[int, int]:
    """How many distinct names `fictional_people` and `fictional_orgs` can make (first name × surname,
    stem × suffix); asking for more would loop forever."""
    p = pools()
    surnames = {(a + b).capitalize() for a in p["surname_syllables"] for b in p["surname_syllables"]}
    stems = {(a + b).capitalize() for a in p["org_syllables"] for b in p["org_syllables"]}
    return len(set(p["first_names"])) * len(surnames), len(stems) * len(set(p["org_suffixes"]))


@functools.cache
def related_max() -> int:
    """The most `related` facts the catalog's real entities allow: relation j of R takes every R-th fact
    (j, j+R, ...) and each needs its own subject, so n <= R * subjects_j + j."""
    cat = catalog()
    return min(len(RELATED_RELATIONS) * len({f["subject"] for f in cat[RELATED_SUBJECTS[rel]]}) + j
               for j, rel in enumerate(RELATED_RELATIONS))  # fmt: skip


def random_date(rng: random.Random) -> str:
    month = rng.choice(pools()["month"])
    return f"{month} {rng.randint(1, 28)}, {rng.randint(1950, 2001)}"


def exposures(cfg: BenchConfig, rng: random.Random) -> int:
    e = cfg.exposure
    if e.mode == "fixed":
        return e.copies
    # geometric on {1, 2, ...} with the configured mean: floor of an exponential, shifted by one
    extra = math.floor(rng.expovariate(1.0 / (e.mean - 1))) if e.mean > 1 else 0
    return min(1 + extra, e.max_copies)


def new_facts(cfg: BenchConfig, taken: set[str]) -> list[Fact]:
    """People with bioS-style attributes and organisations; employer/founder link the two."""
    rng = rng_for(cfg.seed, "new")
    p = pools()
    people = fictional_people(rng, cfg.people, taken)
    orgs = fictional_orgs(rng, cfg.organisations, taken)
    founders = rng.sample(people, min(len(people), len(orgs)))
    person_values: dict[str, Callable[[str], str]] = {
        "birth_date": lambda _: random_date(rng),
        "birth_city": lambda _: rng.choice(p["city"]),
        "university": lambda _: rng.choice(p["university"]),
        "major": lambda _: rng.choice(p["major"]),
        "employer": lambda _: rng.choice(orgs),
    }
    facts: list[Fact] = []
    for i, person in enumerate(people):
        eid, n = f"person-{i:03d}", exposures(cfg, rng)
        for rel in cfg.person_relations:
            facts.append(Fact(f"{eid}-{rel}", eid, "person", "new", rel, person, person_values[rel](person), exposures=n))
    org_values: dict[str, Callable[[int], str]] = {
        "founded_year": lambda _: str(rng.randint(1950, 2015)),
        "headquarters": lambda _: rng.choice(p["city"]),
        "founder": lambda j: founders[j] if j < len(founders) else fictional_people(rng, 1, taken)[0],
        "industry": lambda _: rng.choice(p["industry"]),
    }
    for j, org in enumerate(orgs):
        eid, n = f"org-{j:03d}", exposures(cfg, rng)
        for rel in cfg.organisation_relations:
            facts.append(Fact(f"{eid}-{rel}", eid, "organisation", "new", rel, org, org_values[rel](j), exposures=n))
    return facts


def related_facts(cfg: BenchConfig, taken: set[str]) -> list[Fact]:
    """New relations attached to real, well-known entities (countries, cities, companies)."""
    rng = rng_for(cfg.seed, "related")
    p, cat = pools(), catalog()
    subjects = {rel: [f["subject"] for f in cat[src]] for rel, src in RELATED_SUBJECTS.items()}
    for s in subjects.values():
        rng.shuffle(s)
    facts = []
    for i in range(cfg.related):
        rel = RELATED_RELATIONS[i % len(RELATED_RELATIONS)]
        subject = subjects[rel].pop()
        if rel == "national_mascot":
            value = rng.choice(p["animal"])
        elif rel == "twin_city":
            value = rng.choice([c for c in p["city"] if c != subject])
        else:
            value = fictional_people(rng, 1, taken)[0]
        eid = f"related-{i:03d}"
        facts.append(Fact(f"{eid}-{rel}", eid, "real", "related", rel, subject, value, exposures=exposures(cfg, rng)))
    return facts


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+", text.casefold()) if w != "the"]


def object_in_subject(subject: str, obj: str) -> bool:
    """The object's words occur in the subject's ("Africa" in "South Africa"): a question about the subject
    then contains its own answer, so the fact cannot tell whether the model knows it."""
    s, o = _words(subject), _words(obj)
    return bool(o) and any(s[i : i + len(o)] == o for i in range(len(s) - len(o) + 1))


def catalog_capacity(known_relations: list[str]) -> tuple[int, int]:
    """(the most `known` facts, all facts) the catalog holds for these relations; `updated` facts take
    what the known ones leave."""
    return _capacity(tuple(dict.fromkeys(known_relations)))


@functools.cache
def _capacity(known_relations: tuple[str, ...]) -> tuple[int, int]:
    facts = [f for rel in known_relations for f in catalog()[rel]]
    return sum(not object_in_subject(f["subject"], f["object"]) for f in facts), len(facts)


def catalog_facts(cfg: BenchConfig) -> tuple[list[Fact], list[Fact]]:
    """(updated, known): disjoint draws from the catalog, balanced over relations. A fact whose object occurs
    in its subject (`object_in_subject`) is never a `known` fact."""
    rng = rng_for(cfg.seed, "catalog")
    cat = catalog()
    queues = {}
    for rel in cfg.known_relations:
        items = list(cat[rel])
        rng.shuffle(items)
        queues[rel] = items

    def draw(n: int, allowed: Callable[[dict], bool]) -> list[tuple[str, dict]]:
        """Round-robin over relations, each taking the last allowed fact of its queue."""
        out: list[tuple[str, dict]] = []
        while len(out) < n:
            before = len(out)
            for rel in cfg.known_relations:
                i = next((i for i in reversed(range(len(queues[rel]))) if allowed(queues[rel][i])), None)
                if i is not None and len(out) < n:
                    out.append((rel, queues[rel].pop(i)))
            if len(out) == before:
                break
        return out

    known = [
        Fact(f"known-{i:03d}-{rel}", f"known-{i:03d}", "real", "known", rel, f["subject"], f["object"],
             object_aliases=f["aliases"], exposures=0, split="eval")
        for i, (rel, f) in enumerate(draw(cfg.known, lambda f: not object_in_subject(f["subject"], f["object"])))
    ]  # fmt: skip
    updated = []
    for i, (rel, f) in enumerate(draw(cfg.updated, lambda f: True)):
        olds = {f["object"], *f["aliases"]}
        choices = sorted({g["object"] for g in cat[rel]} - olds)
        updated.append(
            Fact(f"updated-{i:03d}-{rel}", f"updated-{i:03d}", "real", "updated", rel, f["subject"],
                 rng.choice(choices), previous_object=f["object"], exposures=exposures(cfg, rng))
        )  # fmt: skip
    return updated, known
