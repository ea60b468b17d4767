"""`kdyn bench import fictional-knowledge`: Chang et al. (NeurIPS 2024) Fictional Knowledge JSON →
a kdyn benchmark.

Each record is one fictional passage (an entity of kind `new`) with five memorisation probes
(sentences of the passage; → `cloze`), five semantic-generalisation probes (paraphrases with the
same targets; → `qa`, plain text, not chat) and five compositional probes (→ `compositional`, each
its own fact since its target is a different span). The passage is the training document, repeated
`copies` times; with the paraphrased file, `paraphrases` extra documents per passage use them.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from kdyn.bench.build import write_bench
from kdyn.bench.schema import Document, Fact, Probe
from kdyn.errors import KdynError

FIELDS = ("train_context", "mem_input", "mem_target", "gen_input", "gen_target", "hard_gen_input", "hard_gen_target")


def _as_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):  # some copies store the lists as Python-literal strings
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise KdynError(f"{where} is neither a list nor a Python-literal list") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KdynError(f"{where} must be a list of strings")
    return value


def read_fictional_knowledge(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise KdynError(f"file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KdynError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, list) or not data:
        raise KdynError(f"{path} must hold a non-empty JSON list of Fictional Knowledge records")
    records = []
    for i, rec in enumerate(data):
        missing = [f for f in FIELDS if not isinstance(rec, dict) or f not in rec]
        if missing:
            raise KdynError(f"{path}: record {i} lacks field '{missing[0]}' (is this the Fictional Knowledge file?)")
        out = {"train_context": rec["train_context"], "paraphrases": rec.get("paraphrases", [])}
        for f in FIELDS[1:]:
            out[f] = _as_list(rec[f], f"{path}: record {i} field '{f}'")
        if not (len(out["mem_input"]) == len(out["mem_target"]) == len(out["gen_input"]) == len(out["gen_target"])):
            raise KdynError(f"{path}: record {i} has mem/gen inputs and targets of different lengths")
        if len(out["hard_gen_input"]) != len(out["hard_gen_target"]):
            raise KdynError(f"{path}: record {i} has hard_gen inputs and targets of different lengths")
        records.append(out)
    return records


def import_fictional_knowledge(
    path: str | Path, out: str | Path, copies: int = 1, paraphrases: int = 0
) -> dict[str, Any]:
    path = Path(path)
    records = read_fictional_knowledge(path)
    if copies < 1 or paraphrases < 0:
        raise KdynError("copies must be >= 1 and paraphrases >= 0")
    facts: list[Fact] = []
    docs: list[Document] = []
    probes: list[Probe] = []
    for i, rec in enumerate(records):
        eid = f"fk-{i:03d}"
        n_docs = copies + min(paraphrases, len(rec["paraphrases"]))
        mem_ids = []
        for j, (prefix, target) in enumerate(zip(rec["mem_input"], rec["mem_target"])):
            fid = f"{eid}-m{j}"
            mem_ids.append(fid)
            facts.append(Fact(fid, eid, "passage", "new", "fictional_knowledge", prefix, target, exposures=n_docs))
            probes.append(Probe(f"{fid}-cloze", fid, "knowledge", "new", "cloze", prefix, False, target, template_id="fk:mem"))
            gen_prompt = rec["gen_input"][j]
            probes.append(Probe(f"{fid}-qa", fid, "knowledge", "new", "qa", gen_prompt, False, rec["gen_target"][j],
                                template_id="fk:gen"))  # fmt: skip
        for j, (prefix, target) in enumerate(zip(rec["hard_gen_input"], rec["hard_gen_target"])):
            fid = f"{eid}-h{j}"
            facts.append(Fact(fid, eid, "passage", "new", "fictional_knowledge_compositional", prefix, target,
                              exposures=n_docs))  # fmt: skip
            probes.append(Probe(f"{fid}-compositional", fid, "knowledge", "new", "compositional", prefix, False, target,
                                template_id="fk:hard_gen"))  # fmt: skip
        texts = [("original", rec["train_context"])] * copies
        texts += [("paraphrase", p) for p in rec["paraphrases"][:paraphrases]]
        for c, (fmt, text) in enumerate(texts):
            docs.append(Document(f"{eid}-c{c:02d}", eid, mem_ids, text, [f"fk:{fmt}"], fmt, c))
    extra = {
        "source": f"fictional-knowledge import of {path.name}",
        "config": {"file": path.name, "copies": copies, "paraphrases": paraphrases},
        "seed": None,
    }
    return write_bench(Path(out), facts, docs, probes, extra)
