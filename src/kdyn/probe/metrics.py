"""String-level correctness of a greedy answer (DESIGN.md "Correctness of a probe").

`correct` for open probes: the normalised greedy continuation starts with the target or an alias,
at a word boundary ("Paris" matches "Paris." but not "Parisian"). Chat questions (`chat: true`) are
answered in a sentence by instruct models ("The capital of Colombia is Bogota."), so for them
`correct` = the answer's first sentence names the target or an alias as whole words (a deviation
from DESIGN.md's starts-with, under which SmolLM2 scores 0 on every question it knows). em, contains
and ROUGE-1 recall are stored beside it. Arithmetic: the first number in the output equals the answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_PUNCT_END = " .,;:!?\"'`)]}"
_PUNCT_START = " \"'`([{*_"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower-case, NFKC, collapse whitespace, strip leading quotes/markup and final punctuation."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = " ".join(text.split())
    return text.lstrip(_PUNCT_START).rstrip(_PUNCT_END)


def starts_with(greedy: str, targets: list[str]) -> bool:
    g = normalize(greedy)
    for t in targets:
        t = normalize(t)
        if t and g.startswith(t) and (len(g) == len(t) or not g[len(t)].isalnum()):
            return True
    return False


# a sentence ends at . ! ? or a line break; a period after a lone capital ("H. G. Wells") is an initial
_SENTENCE_END = re.compile(r"(?<![\s.][A-Za-z])[.!?](?=\s|$)|\n")


def first_sentence(text: str) -> str:
    text = text.strip()
    m = _SENTENCE_END.search(text)
    return text[: m.start()] if m else text


def first_sentence_names(greedy: str, targets: list[str]) -> bool:
    """The first sentence of the answer contains the target or an alias as whole words."""
    g = f" {' '.join(_WORD.findall(normalize(first_sentence(greedy))))} "
    for t in targets:
        words = _WORD.findall(normalize(t))
        if words and f" {' '.join(words)} " in g:
            return True
    return False


def exact_match(greedy: str, targets: list[str]) -> bool:
    first_line = greedy.strip().split("\n", 1)[0]
    return normalize(first_line) in {normalize(t) for t in targets}


def contains(greedy: str, targets: list[str]) -> bool:
    g = normalize(greedy)
    return any(normalize(t) and normalize(t) in g for t in targets)


def rouge1_recall(greedy: str, targets: list[str]) -> float:
    """Best over targets of |target words ∩ output words| / |target words| (clipped counts)."""
    out = Counter(_WORD.findall(normalize(greedy)))
    best = 0.0
    for t in targets:
        words = Counter(_WORD.findall(normalize(t)))
        if words:
            hit = sum(min(c, out[w]) for w, c in words.items())
            best = max(best, hit / sum(words.values()))
    return best


def first_number(text: str) -> float | None:
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        return float(m.group().replace(",", ""))
    except ValueError:
        return None


_ECHO = re.compile(r"^[\s\d+\-*/x×().,]*=\s*")  # "8 - 2 = 6": the answer follows a restated expression


def arithmetic_correct(greedy: str, target: str) -> bool:
    """First number of the answer; an echoed "expression =" before it is skipped (small instruct models
    restate the sum before answering, and its first operand is not their answer)."""
    got = first_number(_ECHO.sub("", greedy, count=1))
    return got is not None and got == float(target)
