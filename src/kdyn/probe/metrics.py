"""String-level correctness of a greedy answer (DESIGN.md "Correctness of a probe"; docs/metrics.md).

`correct` for open probes: the normalised greedy continuation starts with the target or an alias,
at a word boundary ("Paris" matches "Paris." but not "Parisian"). Chat questions (`chat: true`) are
answered in a sentence by instruct models ("The capital of Colombia is Bogota."), so for them
`correct` = `qa_correct`: the answer's first sentence gives the target as *the answer* (a deviation
from DESIGN.md's starts-with, under which SmolLM2 scores 0 on every question it knows). em, contains
and ROUGE-1 recall are stored beside it. Arithmetic: the first number in the output equals the answer.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

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


def exact_match(greedy: str, targets: list[str]) -> bool:
    first_line = greedy.strip().split("\n", 1)[0]
    return normalize(first_line) in {normalize(t) for t in targets}


def contains(greedy: str, targets: list[str]) -> bool:
    g = normalize(greedy)
    return any(normalize(t) and normalize(t) in g for t in targets)


def rouge1_recall(greedy: str, targets: list[str], rivals: Sequence[str] = ()) -> float:
    """Best over targets of |span words ∩ output words| / |span words| (clipped counts).

    The span is the part of the target that names this object: its words that none of `rivals` (the other
    values of the relation) contains, or, when each word is in some rival, those in the fewest. Words shared
    with rivals are the relation's template ("University of …"): "University of California" against
    "University of Amsterdam" scores 0, not 2/3. Without rivals the span is the whole target."""
    out = Counter(_WORD.findall(normalize(greedy)))
    seen = [set(_WORD.findall(normalize(r))) for r in rivals]
    best = 0.0
    for t in targets:
        words = Counter(_WORD.findall(normalize(t)))
        if words:
            shared = {w: sum(w in r for r in seen) for w in words}
            span = {w: c for w, c in words.items() if shared[w] == min(shared.values())}
            hit = sum(min(c, out[w]) for w, c in span.items())
            best = max(best, hit / sum(span.values()))
    return best


_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u00f7": "/"})  # − – × ÷


def first_number(text: str) -> float | None:
    m = _NUMBER.search(text.translate(_MINUS))
    if m is None:
        return None
    try:
        return float(m.group().replace(",", ""))
    except ValueError:
        return None


# "8 - 2 = 6", "7 − 5 is 2.": the answer follows a restated expression (at least one operator before = / is)
_ECHO = re.compile(r"^[\s(]*-?\d+(?:[\s()]*[-+*/x][\s(]*-?\d+)+[\s)]*(?:=|is\b|equals\b)\s*", re.IGNORECASE)


def arithmetic_correct(greedy: str, target: str) -> bool:
    """First number of the answer; an echoed "expression =" (or "expression is") before it is skipped (small
    instruct models restate the sum before answering, and its first operand is not their answer)."""
    got = first_number(_ECHO.sub("", greedy.translate(_MINUS), count=1))
    return got is not None and got == float(target)


# ---- chat questions: does the answer's first sentence give the target as the answer? ----------------------

_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "æ": "ae", "Æ": "AE",
                       "œ": "oe", "Œ": "OE", "ı": "i"})  # fmt: skip
# words and numbers ("1,000" is one number: 1000; "1.5" is one number), and candidate sentence ends
_TOKEN = re.compile(r"(\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:\.\d+)?|[^\W\d_]+)|([.!?](?=[\"')\]*_]*(?:\s|$))|\n)")
_ABBREVIATIONS = frozenset("st dr mt mr mrs ms prof jr sr inc ltd co corp vs".split())
_COPULAS = frozenset({"is", "are", "was", "were"})
_NEGATIONS = frozenset({"not", "never", "nor", "neither", "t"})  # "t": the tail of isn't / wasn't
_HEAD_FILLER = frozenset({"the", "a", "an", "and", "s"})
_RELATIVE = frozenset({"which", "who", "that"})
# capitalised words that name nothing (sentence starts, question words, the probe's instruction)
_NOT_NAMES = frozenset("the a an in on at of for from by with as it its this that these those there he she they his "
                       "her their what which who whom whose where when how can could do does did is are was were "
                       "answer".split())  # fmt: skip


def _strip_accents(text: str) -> str:
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    return "".join(c for c in text if not unicodedata.combining(c)).translate(_FOLD)


def _words(text: str) -> tuple[list[str], list[int]]:
    """Accent-stripped words (case kept) and the sentence ends, as word counts before each end.

    A period is no end after an abbreviation ("St.", "Dr.", "Inc.") or inside initials ("U.S.", "H. G.")."""
    text = _strip_accents(text)
    words: list[tuple[str, int, int]] = []  # (word, start, end)
    ends: list[int] = []
    matches = list(_TOKEN.finditer(text))

    def initial(w: tuple[str, int, int] | None) -> bool:  # a lone capital with a period right after it
        return w is not None and len(w[0]) == 1 and w[0].isupper() and text[w[2] : w[2] + 1] == "."

    for k, m in enumerate(matches):
        if m.group(1):
            w = m.group(1)
            words.append((w.replace(",", "") if w[0].isdigit() else w, *m.span()))
            continue
        last = words[-1] if words else None
        if m.group() == "." and last is not None and last[2] == m.start():
            nxt = next((n for n in matches[k + 1 : k + 2] if n.group(1)), None)
            following = (nxt.group(1), *nxt.span()) if nxt else None
            if last[0].casefold() in _ABBREVIATIONS:
                continue
            if initial(last) and (text[last[1] - 1 : last[1]] == "." or initial(following)
                                  or (len(words) > 1 and initial(words[-2]))):  # fmt: skip
                continue
        ends.append(len(words))
    return [w for w, _, _ in words], ends


@functools.lru_cache(maxsize=1 << 16)  # targets, aliases and rivals recur across probes and checkpoints
def _name(text: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """A name's words as matched, its folded words, and whether it is matched case-sensitively (short codes
    such as "US", "Fe", "He" keep their case; other names are folded)."""
    words = _words(text)[0]
    exact = sum(map(len, words)) <= 3 and any(c.isupper() for c in text)
    folded = tuple(w.casefold() for w in words)
    return (tuple(words) if exact else folded), folded, exact


@functools.lru_cache(maxsize=1 << 14)
def _question(text: str) -> tuple[str, ...]:
    return tuple(_words(text)[0])


def _occurrences(words: list[str], folded: list[str], name: tuple[tuple[str, ...], tuple[str, ...], bool]) -> list[tuple[int, int]]:
    """Where the name's words occur; a plural of the last word counts ("Kenyan shillings")."""
    seq, _, exact = name
    hay, n = (words if exact else folded), len(seq)
    if not n or (seq[0] not in hay and (n > 1 or seq[0] + "s" not in hay)):  # a quick look first
        return []
    return [(i, i + n) for i in range(len(hay) - n + 1)
            if tuple(hay[i : i + n - 1]) == seq[:-1] and hay[i + n - 1] in (seq[-1], seq[-1] + "s")]  # fmt: skip


def _inside(seq: Sequence[str], hay: Sequence[str]) -> bool:
    seq, hay = tuple(seq), tuple(hay)
    return any(hay[i : i + len(seq)] == seq for i in range(len(hay) - len(seq) + 1))


def qa_correct(answer: str, target: str, aliases: list[str], question: str, *, rivals: Sequence[str] = ()) -> bool:
    """The answer's first sentence gives the target (or an alias) as the answer to `question`:

    - names are compared as whole words, accents and case folded ("Bogota" = "Bogotá", "Straße" = "STRASSE"),
      a plural allowed ("shillings"), numbers as whole numbers ("1,000" is not "1"); codes of up to 3 letters
      keep their case ("US" ≠ "us");
    - the first sentence ends at . ! ? or a line break, not after "St." / "Dr." / "Inc." nor inside initials
      or a name ("H. G. Wells", "Washington, D.C.");
    - an alias that occurs in the question gives no credit, nor does a name echoed inside a longer piece of
      the question ("South Africa" for the continent of South Africa), nor one after "not";
    - the name must be the answer: after the sentence's first is/are/was/were, or before it only when the
      rest of that part repeats the question ("Japan is …", not "The capital of Thailand is Bangkok.") or
      what follows it does ("The person who studied at X is <the question's subject>.");
    - a rival (another value of the same relation, e.g. the MCQ distractors; `rivals`) named in the
      sentence makes it wrong ("Milan or Rome"), unless it is part of the target or in the question;
    - so does a sentence about another subject: an entity before the copula that the question does not name,
      while the question's subject is absent ("The official language of Russia is Slovene." for Indonesia).
    """
    words, ends = _words(answer)
    folded = [w.casefold() for w in words]
    q_raw = _question(question)
    q_words = [w.casefold() for w in q_raw]
    names = [_name(target)] + [n for n in map(_name, aliases) if n[0] and not _inside(n[1], q_words)]
    occ = sorted({o for n in names for o in _occurrences(words, folded, n)})
    # the first sentence: up to the first end not inside a name ("H. G. Wells" when initials are the target)
    cut = next((e for e in ends if e > 0 and not any(a < e < b for a, b in occ)), len(words))
    words, folded, occ = words[:cut], folded[:cut], [(a, b) for a, b in occ if b <= cut]
    own = {n[1] for n in names}
    rival_occ: list[tuple[int, int]] = []
    for r in map(_name, rivals):
        found = _occurrences(words, folded, r) if r[1] not in own else []
        if found and not _inside(r[1], q_words):  # a rival in the question is the question's, not a claim
            rival_occ += found
    occ = [o for o in occ if not _within(o, rival_occ, strict=True)]  # "New Zealand dollar" is not "dollar"
    if any(not _within(r, occ, strict=False) and not _negated(folded, r[0]) for r in rival_occ):
        return False
    if _about_another_subject(words, folded, occ, q_raw):
        return False
    return any(_is_the_answer(o, occ, folded, q_words) for o in occ)


def _main_copula(folded: list[str]) -> int:
    """The main clause's is/are/was/were ("…, which is …" opens a relative clause); 0 when there is none."""
    return next((i for i, w in enumerate(folded) if w in _COPULAS and (i == 0 or folded[i - 1] not in _RELATIVE)), 0)


def _about_another_subject(words: list[str], folded: list[str], occ: list[tuple[int, int]], question: Sequence[str]) -> bool:
    """Before its copula the sentence names an entity the question does not, and the question's own subject (its
    capitalised words) is nowhere in it: "The official language of Russia is Slovene." asked about Indonesia."""
    subject = {w.casefold() for w in question if w[:1].isupper() and w.casefold() not in _NOT_NAMES}
    if not subject or subject & set(folded):
        return False
    q_words = {w.casefold() for w in question}
    return any(w[:1].isupper() and w.casefold() not in _NOT_NAMES and w.casefold() not in q_words
               and not _within((i, i + 1), occ, strict=False) for i, w in enumerate(words[: _main_copula(folded)]))  # fmt: skip


def _within(o: tuple[int, int], others: list[tuple[int, int]], strict: bool) -> bool:
    return any(a <= o[0] and o[1] <= b and (not strict or b - a > o[1] - o[0]) for a, b in others)


def _negated(folded: list[str], a: int) -> bool:
    return any(w in _NEGATIONS for w in folded[max(0, a - 3) : a])


def _is_the_answer(o: tuple[int, int], occ: list[tuple[int, int]], folded: list[str], q_words: list[str]) -> bool:
    """The name at words o of the first sentence is its answer: not an echo of the question, not negated, and
    after the first copula or in a part before it that holds nothing but the name and the question's words."""
    a, b = o
    if (a > 0 and _inside(folded[a - 1 : b], q_words)) or (b < len(folded) and _inside(folded[a : b + 1], q_words)):
        return False  # a longer piece of the question: "South Africa" asked about South Africa
    if _negated(folded, a):
        return False
    copula = _main_copula(folded)  # none: the whole sentence answers
    if a >= copula:
        return True

    def rest(lo: int, hi: int) -> list[str]:  # words of [lo, hi) that are no filler, question word or name
        return [w for i, w in enumerate(folded[lo:hi], lo) if w not in _HEAD_FILLER and w not in q_words
                and not _within((i, i + 1), occ, strict=False)]  # fmt: skip

    # before the copula: the rest there repeats the question ("Japan is …"), or what follows the copula does
    # ("The person who studied at X is <the question's subject>.")
    tail = [w for w in folded[copula + 1 :] if w not in _HEAD_FILLER]
    return not rest(0, copula) or (bool(tail) and not rest(copula + 1, len(folded)))
    copula = _main_copula(folded)  # none: the whole sentence answers

    def rest(a: int, b: int) -> list[str]:  # words of [a, b) that are no filler, question word or name
        return [w for i, w in enumerate(folded[a:b], a) if w not in _HEAD_FILLER and w not in q_words
                and not within((i, i + 1), occ, strict=False)]  # fmt: skip

    # before the copula a name answers when the rest there repeats the question ("Japan is …"), or when what
    # follows the copula does ("The person who studied at X is <the question's subject>.")
    tail = [w for w in folded[copula + 1 :] if w not in _HEAD_FILLER] if copula else []
    head_answers = not rest(0, copula) or (bool(tail) and not rest(copula + 1, len(folded)))
    for a, b in occ:
        echoed = (a > 0 and _inside(folded[a - 1 : b], q_words)) or (b < len(folded) and _inside(folded[a : b + 1], q_words))
        if echoed or negated(a):
            continue
        if a >= copula or head_answers:
            return True
    return False
