"""BenchConfig: what `kdyn bench build` makes (sizes, exposure, formats, probes). Every field has a default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FORMATS = ("prose", "markdown", "json", "qa", "table", "lines")
PERSON_RELATIONS = ["birth_date", "birth_city", "university", "major", "employer"]
ORG_RELATIONS = ["founded_year", "headquarters", "founder", "industry"]
RELATED_RELATIONS = ["national_mascot", "twin_city", "chief_scientist"]
CATALOG_RELATIONS = [
    "capital", "currency", "chemical_symbol", "author", "continent",
    "official_language", "country_of_city", "headquarters", "founder",
]  # fmt: skip


@dataclass
class ExposureConfig:
    """How many documents state each entity's facts per epoch."""

    mode: Literal["fixed", "exponential"] = "fixed"
    copies: int = 3  # fixed: every entity this many times
    # exponential (DynamicKnowledgeCircuits): copies = 1 + floor(Exp(mean - 1)), capped at max_copies;
    # buckets: low = 1, medium = 2-5, high > 5
    mean: float = 3.0
    max_copies: int = 10

    def validate(self) -> None:
        if self.copies < 1 or self.max_copies < 1:
            raise ValueError("exposure copies and max_copies must be >= 1")
        if self.mean < 1:
            raise ValueError("exposure mean must be >= 1")


@dataclass
class ProbeSetConfig:
    """Which probes to write. Cloze/qa/mcq are per fact; compositional where two facts chain."""

    types: list[str] = field(default_factory=lambda: ["cloze", "qa", "mcq", "compositional"])
    mcq_options: int = 4
    compositional_max: int = 0  # per composition; 0 = all that the facts allow
    arithmetic_one_step: int = 20
    arithmetic_multi_step: int = 20
    arithmetic_max_operand: int = 9
    arithmetic_instruction: str = "Answer with the number only."
    qa_instruction: str = "Answer with the answer only."  # appended to question prompts

    def validate(self) -> None:
        bad = [t for t in self.types if t not in ("cloze", "qa", "mcq", "compositional")]
        if bad:
            raise ValueError(f"probes.types: unknown probe type '{bad[0]}' (cloze, qa, mcq, compositional)")
        if self.arithmetic_max_operand < 2:
            raise ValueError("probes.arithmetic_max_operand must be >= 2")
        if self.mcq_options < 2:
            raise ValueError("probes.mcq_options must be >= 2")
        if min(self.compositional_max, self.arithmetic_one_step, self.arithmetic_multi_step) < 0:
            raise ValueError("compositional_max, arithmetic_one_step and arithmetic_multi_step must be >= 0")
        from kdyn.bench.arithmetic import distinct_questions

        for label, n in (("one", self.arithmetic_one_step), ("multi", self.arithmetic_multi_step)):
            most = distinct_questions(label, self.arithmetic_max_operand)
            if n > most:
                raise ValueError(f"arithmetic_{label}_step: {n} is more than the {most} distinct questions with "
                                 f"operands up to {self.arithmetic_max_operand} (at most {most}, or raise arithmetic_max_operand)")  # fmt: skip


@dataclass
class BenchConfig:
    name: str = "custom"
    seed: int = 0
    people: int = 24  # fictional people (kind new)
    organisations: int = 8  # fictional organisations (kind new)
    person_relations: list[str] = field(default_factory=lambda: list(PERSON_RELATIONS))
    organisation_relations: list[str] = field(default_factory=lambda: list(ORG_RELATIONS))
    related: int = 12  # new facts about real entities (kind related)
    updated: int = 12  # counterfactual replacements of catalog facts (kind updated)
    known: int = 60  # catalog facts never trained on (kind known: the forgetting set)
    known_relations: list[str] = field(default_factory=lambda: list(CATALOG_RELATIONS))
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    formats: list[str] = field(default_factory=lambda: ["prose"])  # each copy rendered in each format
    templates_per_fact: int = 1  # paraphrase augmentation: k train templates per fact, cycled over copies
    probes: ProbeSetConfig = field(default_factory=ProbeSetConfig)

    def validate(self) -> None:
        for name in ("people", "organisations", "related", "updated", "known"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown format '{bad[0]}'; known: {', '.join(FORMATS)}")
        if not self.formats:
            raise ValueError("formats must list at least one format")
        if self.templates_per_fact < 1:
            raise ValueError("templates_per_fact must be >= 1")
        for rel in self.person_relations:
            if rel not in PERSON_RELATIONS:
                raise ValueError(f"person_relations: '{rel}' is not one of {', '.join(PERSON_RELATIONS)}")
        for rel in self.organisation_relations:
            if rel not in ORG_RELATIONS:
                raise ValueError(f"organisation_relations: '{rel}' is not one of {', '.join(ORG_RELATIONS)}")
        for rel in self.known_relations:
            if rel not in CATALOG_RELATIONS:
                raise ValueError(f"known_relations: '{rel}' is not one of {', '.join(CATALOG_RELATIONS)}")
        if self.organisations == 0 and "employer" in self.person_relations and self.people:
            raise ValueError("the employer relation needs organisations >= 1")
        self.check_sizes()

    def check_sizes(self) -> None:
        """Each count within what the name pools (data/pools.yaml) and the catalog (data/catalog.yaml) hold:
        beyond that a build would loop forever or quietly make fewer facts than asked for."""
        from kdyn.bench.facts import catalog_capacity, name_pool_sizes, related_max  # here: facts.py imports this module

        if not (self.people or self.organisations or self.related or self.updated or self.known
                or self.probes.arithmetic_one_step or self.probes.arithmetic_multi_step):  # fmt: skip
            raise ValueError("people, organisations, related, updated, known and the arithmetic probe counts are all 0: "
                             "the benchmark would be empty")  # fmt: skip
        person_names, org_names = name_pool_sizes()
        if self.organisations > org_names:
            raise ValueError(f"organisations: {self.organisations} is more than the {org_names} distinct organisation "
                             f"names the name pools (bench/data/pools.yaml) can make; at most {org_names}")  # fmt: skip
        most = related_max()
        if self.related > most:
            raise ValueError(f"related: {self.related} is more than the {most} facts the catalog's real entities can take "
                             f"(bench/data/catalog.yaml); at most {most}")  # fmt: skip
        founders = max(0, self.organisations - self.people) if "founder" in self.organisation_relations else 0
        scientists = sum(RELATED_RELATIONS[i % len(RELATED_RELATIONS)] == "chief_scientist" for i in range(self.related))
        people = self.people + founders + scientists  # fictional founders and chief scientists are people too
        if people > person_names:
            extra = f" (with {people - self.people} fictional founders and chief scientists)" if people > self.people else ""
            raise ValueError(f"people: {self.people}{extra} is more than the {person_names} distinct person names the name "
                             f"pools (bench/data/pools.yaml) can make; at most {person_names - (people - self.people)}")  # fmt: skip
        known_most, catalog_facts = catalog_capacity(self.known_relations)
        if self.known > known_most:
            raise ValueError(f"known: {self.known} is more than the {known_most} catalog facts of known_relations that can "
                             f"be known facts (bench/data/catalog.yaml); at most {known_most}")  # fmt: skip
        if self.updated > catalog_facts - self.known:
            raise ValueError(f"updated: {self.updated} is more than the {catalog_facts - self.known} catalog facts left after "
                             f"known={self.known} (updated and known facts are distinct); at most {catalog_facts - self.known}")  # fmt: skip
