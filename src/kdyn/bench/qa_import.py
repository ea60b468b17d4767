"""`kdyn bench import qa ITEMS.jsonl --out DIR`: a researcher's own facts (and corpus) → a kdyn benchmark.

    kdyn bench import qa minerals.jsonl --documents corpus.txt --out bench/minerals

ITEMS.jsonl holds one fact per line: `question` and `answer` (required); optional `id`, `aliases` [list],
`subject`, `relation`, `kind` (`new` default, `related`, `updated` with `previous_answer`, `known`),
`choices` [list] with the answer among them (else MCQ distractors are other answers of the same relation, or of
the file, seeded), and `statement` (a cloze prefix the answer continues: "Zarvite is mostly mined in").
`answer` may be an index into `choices` (lm-eval's MCQ convention).

DOCS (optional) is the training text: JSONL with `text` (optional `id`, `fact_ids`), or `prompt` + `completion`
(TRL), or a `.txt` file with one document per blank-line-separated block. A document states the facts in its
`fact_ids`, else every fact whose answer (and subject, when given) its text contains. Without DOCS each fact's
document is its statement (or question) followed by its answer, `exposures` copies per epoch.

Probes per fact: `cloze` from the statement (given, or cut from a document sentence that ends in the answer),
`qa` from the question (chat-rendered for instruct models), `mcq` from choices or drawn distractors. `--known`
adds a forgetting set: kdyn's real-fact catalog (`builtin`, default), the user's own FILE (this format or
lm-eval-style MCQ JSONL), or `none`; arithmetic skill probes as in `kdyn bench build`. The result is an
ordinary benchmark folder, byte-identical on rebuild (docs/benchmark-format.md).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdyn.bench.arithmetic import arithmetic_probes
from kdyn.bench.build import make_records, write_bench
from kdyn.bench.config import BenchConfig, ProbeSetConfig
from kdyn.bench.facts import rng_for
from kdyn.bench.schema import Document, Fact, Probe
from kdyn.config import apply_overrides, from_dict, to_dict
from kdyn.errors import KdynError, did_you_mean
from kdyn.io import read_jsonl_numbered, read_text, sha256_file

ITEM_FIELDS = ("id", "question", "answer", "aliases", "subject", "relation", "kind", "previous_answer", "choices",
               "statement")  # fmt: skip
ITEM_KINDS = ("new", "related", "updated", "known")


@dataclass
class ImportProbes:
    mcq_options: int = 4  # options of a drawn MCQ (the answer and k − 1 distractors); `choices` win
    arithmetic: int = 20  # one-step and multi-step arithmetic skill probes each (0: none)
    qa_instruction: str = "Answer with the answer only."  # appended to every question ("" for none)

    def validate(self) -> None:
        if self.mcq_options < 2:
            raise ValueError("probes.mcq_options must be >= 2")
        if self.arithmetic < 0:
            raise ValueError("probes.arithmetic must be >= 0")
        ProbeSetConfig(arithmetic_one_step=self.arithmetic, arithmetic_multi_step=self.arithmetic).validate()


@dataclass
class ImportConfig:
    name: str = ""  # the benchmark's name (default: the ITEMS file's stem)
    seed: int = 0
    exposures: int = 3  # without DOCS: copies of each fact's own document per epoch
    known: int = 60  # --known builtin: catalog facts drawn as the forgetting set
    probes: ImportProbes = field(default_factory=ImportProbes)

    def validate(self) -> None:
        if self.exposures < 1:
            raise ValueError("exposures must be >= 1")
        if self.known < 0:
            raise ValueError("known must be >= 0")


@dataclass
class Item:
    id: str
    question: str
    answer: str
    line: int
    aliases: list[str] = field(default_factory=list)
    subject: str = ""
    relation: str = ""
    kind: str = "new"
    previous_answer: str = ""
    choices: list[str] = field(default_factory=list)
    statement: str = ""


def _fold(text: str) -> str:
    """Case- and accent-insensitive form for matching answers inside documents."""
    text = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).split())


def _text(rec: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = rec.get(key)
    if value is None:
        if required:
            raise KdynError(f"{where}: no '{key}' (every item needs a question and an answer)")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise KdynError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    return value.strip()


def _strings(rec: dict[str, Any], key: str, where: str) -> list[str]:
    value = rec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise KdynError(f"{where}: '{key}' must be a list of non-empty strings, got {value!r}")
    return [v.strip() for v in value]


def read_items(path: Path, force_kind: str | None = None) -> list[Item]:
    """ITEMS.jsonl → items, every line checked (file and line in each error)."""
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, rec in read_jsonl_numbered(path):
        where = f"{path}, line {lineno}"
        extra = [k for k in rec if k not in ITEM_FIELDS]
        if extra:
            raise KdynError(f"{where}: unknown field '{extra[0]}'{did_you_mean(extra[0], ITEM_FIELDS)}; "
                            f"fields: {', '.join(ITEM_FIELDS)}")  # fmt: skip
        choices = _strings(rec, "choices", where)
        answer = rec.get("answer")
        if isinstance(answer, int) and not isinstance(answer, bool) and choices:  # lm-eval: the gold index
            if not 0 <= answer < len(choices):
                raise KdynError(f"{where}: answer index {answer} is outside the {len(choices)} choices")
            rec = rec | {"answer": choices[answer]}
        item = Item(id=_text(rec, "id", where) or f"item-{lineno:04d}", question=_text(rec, "question", where, True),
                    answer=_text(rec, "answer", where, True), line=lineno, aliases=_strings(rec, "aliases", where),
                    subject=_text(rec, "subject", where), relation=_text(rec, "relation", where),
                    kind=force_kind or _text(rec, "kind", where) or "new", previous_answer=_text(rec, "previous_answer", where),
                    choices=choices, statement=_text(rec, "statement", where))  # fmt: skip
        if item.kind not in ITEM_KINDS:
            raise KdynError(f"{where}: kind '{item.kind}' is not one of {', '.join(ITEM_KINDS)}")
        if item.kind == "updated" and not item.previous_answer:
            raise KdynError(f"{where}: an updated fact needs 'previous_answer' (the value the model knew)")
        if choices and item.answer not in choices:
            raise KdynError(f"{where}: answer '{item.answer}' is not among its choices")
        if choices and (len(choices) < 2 or len(set(choices)) < len(choices)):
            raise KdynError(f"{where}: 'choices' needs at least two distinct options")
        if item.id in seen:
            raise KdynError(f"{where}: duplicate id '{item.id}' (first on line {seen[item.id]})")
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise KdynError(f"{path} holds no items")
    return items


@dataclass
class RawDoc:
    id: str
    text: str
    fact_ids: list[str] | None
    where: str


def read_documents(path: Path) -> list[RawDoc]:
    """DOCS: JSONL (`text`, or `prompt` + `completion`; optional `id`, `fact_ids`) or blank-line-separated .txt."""
    if not path.is_file():
        raise KdynError(f"documents file not found: {path}")
    docs: list[RawDoc] = []
    if path.suffix.lower() == ".txt":
        blocks = re.split(r"\n\s*\n", read_text(path))
        docs = [RawDoc(f"doc-{i:04d}", b.strip(), None, f"{path}, block {i}") for i, b in enumerate(blocks, 1) if b.strip()]
    elif path.suffix.lower() in (".jsonl", ".json"):
        for lineno, rec in read_jsonl_numbered(path):
            where = f"{path}, line {lineno}"
            if "text" in rec:
                text = rec["text"]
            elif "prompt" in rec and "completion" in rec:
                text = rec["prompt"] + rec["completion"] if all(isinstance(rec[k], str) for k in ("prompt", "completion")) else None
            else:
                raise KdynError(f"{where}: a document needs 'text' (or 'prompt' and 'completion')")
            if not isinstance(text, str) or not text.strip():
                raise KdynError(f"{where}: the document's text must be a non-empty string")
            ids = _strings(rec, "fact_ids", where) if "fact_ids" in rec else None
            doc_id = rec.get("id", f"doc-{lineno:04d}")
            if not isinstance(doc_id, str) or not doc_id:
                raise KdynError(f"{where}: 'id' must be a non-empty string")
            docs.append(RawDoc(doc_id, text.strip(), ids, where))
    else:
        raise KdynError(f"{path}: documents must be .jsonl (text, or prompt + completion) or .txt (blank-line-separated)")
    if not docs:
        raise KdynError(f"{path} holds no documents (the corpus is empty)")
    dup = next((d for i, d in enumerate(docs) if d.id in {e.id for e in docs[:i]}), None)
    if dup:
        raise KdynError(f"{dup.where}: duplicate document id '{dup.id}'")
    return docs


def states(doc: str, item: Item) -> bool:
    """Does the document's text state this item's fact (its answer, and its subject when given)?"""
    folded = _fold(doc)
    answers = [item.answer, *item.aliases]
    return any(_fold(a) in folded for a in answers) and (not item.subject or _fold(item.subject) in folded)


def cloze_from(doc: str, answer: str) -> str | None:
    """The prefix of the first sentence of `doc` that ends in `answer` ("Zarvite is mostly mined in")."""
    for sentence in re.split(r"(?<=[.!?])\s+|\n", doc):
        body = sentence.strip().rstrip(".!?").rstrip()
        if body.endswith(answer) and len(body) > len(answer):
            prefix = body[: -len(answer)].rstrip()
            if len(prefix.split()) >= 2:
                return prefix
    return None


def own_document(item: Item) -> str:
    lead = item.statement or item.question
    end = "" if item.answer.endswith((".", "!", "?")) else "."
    return f"{lead} {item.answer}{end}"


def _distractors(item: Item, pool: list[Item], k: int, seed: int) -> list[str]:
    banned = {_fold(v) for v in (item.answer, *item.aliases, item.subject) if v}
    first = [item.previous_answer] if item.previous_answer else []
    banned |= {_fold(v) for v in first}
    # values of the same relation make a fair question (fewer options if the relation has fewer: k is stored per
    # probe and the chance adjustment uses it); other relations' answers only when the item names no relation
    same = [o.answer for o in pool if item.relation and o.relation == item.relation]
    others = same if {_fold(a) for a in same} - banned else [o.answer for o in pool]
    candidates = sorted({a for a in others if _fold(a) not in banned}, key=_fold)
    rng = rng_for(seed, f"mcq:{item.id}")
    need = max(0, min(k - 1 - len(first), len(candidates)))
    return first + rng.sample(candidates, need)


def item_probes(item: Item, fact_id: str, pool: list[Item], cfg: ImportConfig, cloze: str | None) -> list[Probe]:
    common = dict(fact_id=fact_id, family="knowledge", kind=item.kind, target=item.answer, target_aliases=item.aliases)
    out = []
    if cloze:
        out.append(Probe(probe_id=f"{fact_id}-cloze", probe_type="cloze", prompt=cloze, chat=False,
                         template_id=f"{item.relation or 'qa'}:import:statement", **common))  # fmt: skip
    question = f"{item.question} {cfg.probes.qa_instruction}".strip()
    out.append(Probe(probe_id=f"{fact_id}-qa", probe_type="qa", prompt=question, chat=True, template_id=f"{item.relation or 'qa'}:import:question",
                     **common))  # fmt: skip
    if item.choices:
        options = list(item.choices)
    else:
        options = [item.answer, *_distractors(item, pool, cfg.probes.mcq_options, cfg.seed)]
        rng_for(cfg.seed, f"order:{item.id}").shuffle(options)
    if len(options) >= 2:
        prompt = item.statement or f"Question: {item.question}\nAnswer:"
        out.append(Probe(probe_id=f"{fact_id}-mcq", probe_type="mcq", prompt=prompt, chat=False, options=options,
                         answer_index=options.index(item.answer), k=len(options), template_id=f"{item.relation or 'qa'}:import:choices", **common))  # fmt: skip
    return out


def _fact(item: Item, exposures: int) -> Fact:
    return Fact(fact_id=item.id, entity_id=f"entity:{item.subject or item.id}", entity_type="imported", kind=item.kind,
                relation=item.relation or "qa", subject=item.subject or item.question, object=item.answer,
                object_aliases=list(item.aliases), previous_object=item.previous_answer or None, exposures=exposures,
                split="eval" if item.kind == "known" else "train")  # fmt: skip


def builtin_known(cfg: ImportConfig) -> tuple[list[Fact], list[Probe]]:
    """kdyn's real-fact catalog as the forgetting set (the same draw `kdyn bench build` makes for `known`)."""
    if cfg.known == 0:
        return [], []
    bench = BenchConfig(name=cfg.name, seed=cfg.seed, people=0, organisations=0, related=0, updated=0, known=cfg.known,
                        probes=ProbeSetConfig(arithmetic_one_step=0, arithmetic_multi_step=0))  # fmt: skip
    try:
        bench.validate()
        facts, _, probes = make_records(bench)
    except ValueError as e:
        raise KdynError(f"--known builtin: {e}") from None
    return facts, [p for p in probes if p.kind == "known"]


def load_import_config(overrides: list[str] | None) -> ImportConfig:
    return from_dict(ImportConfig, apply_overrides({}, list(overrides or [])), "", "kdyn bench import qa --set")


def import_qa(items_path: str | Path, out: str | Path, documents: str | Path | None = None, known: str = "builtin",
              overrides: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Build a benchmark from ITEMS (and DOCS); returns the manifest (its `warnings` list what may mislead)."""
    items_path = Path(items_path)
    if not items_path.is_file():
        raise KdynError(f"items file not found: {items_path}")
    cfg = load_import_config(overrides)
    cfg.name = cfg.name or items_path.stem
    items = read_items(items_path)
    known_items: list[Item] = []
    if known not in ("builtin", "none"):
        known_path = Path(known)
        if not known_path.is_file():
            raise KdynError(f"--known must be builtin, none or a file; {known} is none of them")
        known_items = read_items(known_path, force_kind="known")
    raw_docs = read_documents(Path(documents)) if documents is not None else None
    by_id = {i.id: i for i in items}
    clash = next((i.id for i in known_items if i.id in by_id), None)
    if clash:
        raise KdynError(f"--known {known}: id '{clash}' is also an item of {items_path}")
    warnings: list[str] = []
    trained = [i for i in items if i.kind != "known"]
    links: dict[str, list[str]] = {i.id: [] for i in items}
    docs: list[Document] = []
    if raw_docs is None:
        for item in trained:
            for c in range(cfg.exposures):
                docs.append(Document(f"{item.id}-c{c:02d}", f"entity:{item.subject or item.id}", [item.id], own_document(item),
                                     ["import:own"], "prose", c))  # fmt: skip
                links[item.id].append(docs[-1].doc_id)
    else:
        for d in raw_docs:
            if d.fact_ids is not None:
                missing = [f for f in d.fact_ids if f not in by_id]
                if missing:
                    raise KdynError(f"{d.where}: document '{d.id}' names fact '{missing[0]}', which {items_path} does not have")
                ids = d.fact_ids
            else:
                ids = [i.id for i in trained if states(d.text, i)]
            for f in ids:
                links[f].append(d.id)
            entity = by_id[ids[0]] if ids else None
            docs.append(Document(d.id, f"entity:{(entity.subject or entity.id) if entity else 'corpus'}", ids, d.text,
                                 ["import:corpus"], "user", 0))  # fmt: skip
    doc_text = {d.doc_id: d.text for d in docs}
    facts, probes = [], []
    for item in items:
        if item.kind == "known" and links[item.id]:
            warnings.append(f"{item.id}: a known fact is stated in the training documents ({links[item.id][0]}), so it "
                            f"does not measure forgetting")  # fmt: skip
        if item.kind != "known" and not links[item.id]:
            warnings.append(f"{item.id}: no training document states it (answer '{item.answer}' not found)")
        if _fold(item.answer) in _fold(item.question):
            warnings.append(f"{item.id}: its answer '{item.answer}' appears verbatim in its own question")
        cloze = item.statement or next((c for c in (cloze_from(doc_text[d], item.answer) for d in links[item.id]) if c), None)
        facts.append(_fact(item, len(links[item.id])))
        probes += item_probes(item, item.id, items, cfg, cloze)
    for item in known_items:
        facts.append(_fact(item, 0))
        probes += item_probes(item, item.id, known_items, cfg, item.statement or None)
    if known == "builtin":
        cat_facts, cat_probes = builtin_known(cfg)
        clash = next((f.fact_id for f in cat_facts if f.fact_id in by_id), None)
        if clash:
            raise KdynError(f"{items_path}: id '{clash}' is taken by kdyn's built-in known facts; rename it or pass --known none")
        facts += cat_facts
        probes += cat_probes
    if cfg.probes.arithmetic:
        probes += arithmetic_probes(rng_for(cfg.seed, "arithmetic"), cfg.probes.arithmetic, cfg.probes.arithmetic,
                                    ProbeSetConfig().arithmetic_instruction)  # fmt: skip
    if not docs:
        raise KdynError(f"{items_path}: no fact to train on (every item is kind 'known'); add new, related or updated facts")
    sources = {"items": items_path.name, "items_sha256": sha256_file(items_path), "known": known if known in ("builtin", "none") else Path(known).name}
    if documents is not None:
        sources |= {"documents": Path(documents).name, "documents_sha256": sha256_file(Path(documents))}
    extra = {"source": f"kdyn bench import qa {items_path.name}", "name": cfg.name, "config": to_dict(cfg) | sources,
             "seed": cfg.seed, "warnings": warnings}  # fmt: skip
    return write_bench(Path(out), facts, docs, probes, extra)
