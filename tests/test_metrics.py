"""Answer normalisation and string metrics (DESIGN.md: correctness of a probe)."""

import pytest

from kdyn.probe import metrics


@pytest.mark.parametrize(
    "greedy, target, expected",
    [
        (" Paris.", "Paris", True),
        ("paris, the capital", "Paris", True),
        ("Parisian food", "Paris", False),
        ("  \"Lisbon\" is", "Lisbon", True),
        ("The answer is Paris", "Paris", False),  # must start with it
        ("Washington, D.C.", "Washington, D.C.", True),
        ("", "Paris", False),
    ],
)
def test_starts_with(greedy, target, expected):
    assert metrics.starts_with(greedy, [target]) is expected


def test_aliases_count():
    assert metrics.starts_with("Washington is", ["Washington, D.C.", "Washington"])


def test_em_contains_rouge():
    assert metrics.exact_match("Paris.\nMore text", ["paris"])
    assert not metrics.exact_match("Paris is nice", ["Paris"])
    assert metrics.contains("I think it is Paris.", ["Paris"])
    assert metrics.rouge1_recall("born in new york city", ["New York"]) == 1.0
    assert metrics.rouge1_recall("york", ["New York"]) == 0.5
    assert metrics.rouge1_recall("", ["New York"]) == 0.0


@pytest.mark.parametrize(
    "greedy, target, expected",
    [("85", "85", True), ("The answer is 85.", "85", True), ("1,200 apples", "1200", True),
     ("84 or 85", "85", False), ("no idea", "85", False), ("-3", "-3", True),
     ("8 - 2 = 6", "6", True), ("9 - 8 = 9", "1", False), ("(3 + 4) * 2 = 14.", "14", True), ("3 + 4 is 7", "7", False)],
)  # fmt: skip
def test_arithmetic(greedy, target, expected):
    assert metrics.arithmetic_correct(greedy, target) is expected


@pytest.mark.parametrize(
    "greedy, targets, expected",
    [
        ("The capital of Colombia is Bogota.", ["Bogota"], True),
        ("Bogota", ["Bogota"], True),
        ("The chemical symbol for Argon is Argon", ["Ar"], False),  # whole words only
        ("The language of Romania is Hungarian.", ["Romanian"], False),
        ("It was written by H. G. Wells. He also wrote", ["H. G. Wells"], True),  # initials do not end a sentence
        ("It was written by H.G. Wells.", ["H. G. Wells"], True),  # punctuation inside a name is not a word
        ("It is Paris. Or maybe London.", ["London"], False),  # only the first sentence counts
        ("He was born on June 25, 1963.", ["June 25, 1963"], True),
        ("Paris\nLondon", ["London"], False),
        ("", ["Paris"], False),
    ],
)
def test_first_sentence_names(greedy, targets, expected):
    """Chat questions: the answer's first sentence names the target (instruct models answer in sentences)."""
    assert metrics.first_sentence_names(greedy, targets) is expected
