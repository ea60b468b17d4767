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
     ("8 - 2 = 6", "6", True), ("9 - 8 = 9", "1", False), ("(3 + 4) * 2 = 14.", "14", True), ("3 + 4 is 7", "7", True)],
)  # fmt: skip
def test_arithmetic(greedy, target, expected):
    assert metrics.arithmetic_correct(greedy, target) is expected


def test_rouge1_scores_the_object_span_not_the_relations_template():
    """Entity-level learning (ROUGE-1 ≥ 0.6) must not count the words every university shares."""
    rivals = ["University of Oxford", "Kyoto University", "University of California"]
    assert metrics.rouge1_recall("University of California", ["University of Amsterdam"]) == pytest.approx(2 / 3)
    assert metrics.rouge1_recall("University of California", ["University of Amsterdam"], rivals) == 0.0
    assert metrics.rouge1_recall("the University of Amsterdam.", ["University of Amsterdam"], rivals) == 1.0
    assert metrics.rouge1_recall("Amsterdam", ["University of Amsterdam"], rivals) == 1.0
    # every word in some rival: the words in the fewest rivals ("tokyo" is in one, "university" in three)
    rivals = ["University of Oxford", "Kyoto University", "Tokyo Institute of Technology"]
    assert metrics.rouge1_recall("University of Kyoto", ["University of Tokyo"], rivals) == 0.0


def test_every_open_probe_gets_its_relations_other_values():
    from kdyn.bench.schema import Probe
    from kdyn.probe.scorer import rival_values

    def probe(pid: str, target: str, ptype: str = "cloze", options: list[str] | None = None) -> Probe:
        return Probe(probe_id=pid, fact_id=pid, family="knowledge", kind="new", probe_type=ptype, prompt="?",
                     chat=ptype == "qa", target=target, options=options or [], template_id="university:s:train:0")
    probes = [probe("a", "University of Amsterdam"), probe("b", "Kyoto University", "qa"),
              probe("c", "University of Oxford", "mcq", ["University of Oxford", "Harvard University"])]
    got = rival_values(probes)
    assert got["a"] == ["Harvard University", "Kyoto University", "University of Oxford"]
    assert "University of Amsterdam" in got["b"] and "c" not in got  # multiple choice has no greedy answer
