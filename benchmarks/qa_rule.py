"""Precision and recall of the chat-question correctness rule (`kdyn.probe.metrics.qa_correct`) against
hand-labelled real answers, beside the rule it replaced (first sentence contains the target anywhere).

    .venv/bin/python benchmarks/qa_rule.py [--labels tests/data/qa_labels.jsonl] [--show-errors]

The labels (tests/data/qa_labels.jsonl; each probe's rivals in tests/data/qa_rivals.json) are greedy answers of
SmolLM2-135M-Instruct and Gemma-3-270M, base and trained on the quickstart benchmark, each read and labelled
right or wrong by hand. Rows with "set": "held_out"
were labelled after the rule's last change and are also scored on their own. Goal: precision >= 0.98 at
recall >= 0.95 ("right" is the positive class). Prints the figures as JSON and saves them to
benchmarks/results/qa_rule.json. tests/test_qa_correct.py holds the new rule to the goal with `evaluate`.
"""

from __future__ import annotations

import argparse
import json
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from kdyn.io import dumps_json, write_json
from kdyn.probe.metrics import qa_correct

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "tests" / "data" / "qa_labels.jsonl"
RIVALS = ROOT / "tests" / "data" / "qa_rivals.json"  # probe_id -> the rivals the scorer passed (scorer.rival_values)
GOAL = {"precision": 0.98, "recall": 0.95}

# ---- the rule before qa_correct, kept verbatim to measure against -----------------------------------------
_OLD_SENTENCE_END = re.compile(r"(?<![\s.][A-Za-z])[.!?](?=\s|$)|\n")
_OLD_WORD = re.compile(r"\w+", re.UNICODE)


def _old_normalize(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFKC", text).lower().split())
    return text.lstrip(" \"'`([{*_").rstrip(" .,;:!?\"'`)]}")


def old_rule(answer: str, target: str, aliases: list[str]) -> bool:
    """The first sentence of the answer contains the target or an alias as whole words."""
    text = answer.strip()
    m = _OLD_SENTENCE_END.search(text)
    sentence = text[: m.start()] if m else text
    g = f" {' '.join(_OLD_WORD.findall(_old_normalize(sentence)))} "
    for t in [target, *aliases]:
        words = _OLD_WORD.findall(_old_normalize(t))
        if words and f" {' '.join(words)} " in g:
            return True
    return False


def new_rule(row: dict) -> bool:
    return qa_correct(row["answer"], row["target"], row["aliases"], row["question"], rivals=row.get("rivals", []))


RULES: dict[str, Callable[[dict], bool]] = {
    "qa_correct": new_rule,
    "old: first sentence names it": lambda r: old_rule(r["answer"], r["target"], r["aliases"]),
}


def load_labels(path: Path = LABELS, rivals: Path = RIVALS) -> list[dict]:
    """The labelled answers, each with the `rivals` its probe had (from the file beside them)."""
    by_probe = json.loads(rivals.read_text(encoding="utf-8"))["rivals"] if rivals.is_file() else {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, r in enumerate(rows, 1):
        if r.get("label") not in ("right", "wrong"):
            raise ValueError(f"{path}, line {i}: label must be 'right' or 'wrong'")
        r.setdefault("rivals", by_probe.get(r["probe_id"], []))
    return rows


def evaluate(rows: list[dict], rule: Callable[[dict], bool]) -> dict:
    """Confusion counts, precision and recall of `rule`, "right" being the positive class."""
    tp = fp = fn = tn = 0
    errors = []
    for r in rows:
        said, truth = rule(r), r["label"] == "right"
        tp, fp, fn, tn = tp + (said and truth), fp + (said and not truth), fn + (truth and not said), tn + (not said and not truth)
        if said != truth:
            errors.append({"probe_id": r["probe_id"], "label": r["label"], "answer": r["answer"], "target": r["target"]})
    return {"n": len(rows), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"), "errors": errors}  # fmt: skip


def _figures(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "errors"} | {"errors": len(res["errors"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--show-errors", action="store_true", help="print every answer a rule gets wrong")
    args = parser.parse_args()
    rows = load_labels(args.labels)
    results = {name: evaluate(rows, rule) for name, rule in RULES.items()}
    held_out = [r for r in rows if r.get("set") == "held_out"]
    summary = {
        "labels": str(args.labels.relative_to(ROOT) if args.labels.is_relative_to(ROOT) else args.labels),
        "n": len(rows), "right": sum(r["label"] == "right" for r in rows),
        "by_model": {m: sum(r["model"] == m for r in rows) for m in sorted({r["model"] for r in rows})},
        "goal": GOAL,
        "rules": {name: _figures(res) for name, res in results.items()},
        # labelled after the rule was last changed: the figures the rule was not fitted to
        "held_out": {"n": len(held_out), "right": sum(r["label"] == "right" for r in held_out),
                     "rules": {name: _figures(evaluate(held_out, rule)) for name, rule in RULES.items()}},
    }  # fmt: skip
    if args.show_errors:
        summary["errors"] = {name: res["errors"] for name, res in results.items()}
    print(dumps_json(summary))
    write_json(ROOT / "benchmarks" / "results" / "qa_rule.json", summary)


if __name__ == "__main__":
    main()
