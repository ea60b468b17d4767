"""Chat-question correctness (`qa_correct`): the answer's first sentence must give the target as the answer.

The labelled set (tests/data/qa_labels.jsonl: real greedy answers of SmolLM2 and Gemma-3, base and trained, each
labelled by hand) holds the rule to precision >= 0.98 at recall >= 0.95; benchmarks/qa_rule.py prints the figures.
"""

import importlib.util
from pathlib import Path

import pytest

from kdyn.bench.schema import Probe
from kdyn.probe.metrics import arithmetic_correct, qa_correct
from kdyn.probe.scorer import rival_values

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("qa_rule", ROOT / "benchmarks" / "qa_rule.py")
qa_rule = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qa_rule)

ONLY = " Answer with the answer only."

# seen in a quickstart run (SmolLM2, bf16): the old rule credited every one of these
SEEN = [
    ("The official language of Japan is Slovene.", "Japan", [], "What is the country of Kyoto?"),
    ("The capital of Thailand is Bangkok.", "Thailand", [], "Which country does Chiang Mai belong to?"),
    ("The official language of Thailand is Slovene.", "Thailand", [], "Which country does Chiang Mai belong to?"),
    ("The head office of Toyota is located in New York City.", "Toyota City", ["Toyota"],
     "In what city is the head office of Toyota?"),
    ("The head office of Toyota is located in Milan.", "Toyota City", ["Toyota"], "In what city is the head office of Toyota?"),
    ("The capital of Canada is Ottawa.", "Canada", [], "Where, by country, is Vancouver located?"),
]  # fmt: skip


@pytest.mark.parametrize("answer, target, aliases, question", SEEN)
def test_seen_failures_are_wrong(answer, target, aliases, question):
    assert qa_rule.old_rule(answer, target, aliases)  # what the old rule scored
    assert not qa_correct(answer, target, aliases, question + ONLY)


@pytest.mark.parametrize(
    "answer, target, aliases, question, expected",
    [
        ("The country of Kyoto is Japan.", "Japan", [], "What is the country of Kyoto?", True),
        ("Japan", "Japan", [], "What is the country of Kyoto?", True),
        ("Kyoto lies in Japan.", "Japan", [], "What is the country of Kyoto?", True),  # no copula: the whole sentence
        ("Japan is the country of Kyoto.", "Japan", [], "What is the country of Kyoto?", True),  # the subject is the answer
        ("Kyoto, Japan is a city.", "Japan", [], "What is the country of Kyoto?", True),  # the rest repeats the question
        ("Japan's capital is Tokyo.", "Japan", [], "What is the country of Kyoto?", False),
        # a plural; and the copula of a relative clause is not the sentence's
        ("Kenya uses the Kenyan Shillings, which is money.", "Kenyan shilling", [], "What money is used in Kenya?", True),
        ("The person who earned a degree from University of Amsterdam is Yuki Ilmdav.", "University of Amsterdam", [],
         "Where did Yuki Ilmdav earn a degree?", True),  # inverted: what follows the copula is the question's subject
        ("The capital of Thailand is", "Thailand", [], "Which country does Chiang Mai belong to?", False),
        ("The head office of Toyota is located in Toyota City, Japan.", "Toyota City", ["Toyota"],
         "In what city is the head office of Toyota?", True),
        ("Bill Gates and Paul Allen are the founders.", "Bill Gates", ["Paul Allen"], "Who founded Microsoft?", True),
        ("South Africa is in Africa.", "Africa", [], "What is the continent of South Africa?", True),
        # about another subject: the target given for Russia, not for Indonesia
        ("The official language of Russia is Slovene.", "Slovene", [], "What is Indonesia's official language?", False),
        ("The official language of Indonesia is Slovene.", "Slovene", [], "What is Indonesia's official language?", True),
        ("Geneva, Switzerland.", "Geneva", [], "In what city is the head office of Rolex?", True),
        ("South Africa.", "Africa", [], "What is the continent of South Africa?", False),  # echoes the question
        ("Kyoto is not in Japan.", "Japan", [], "What is the country of Kyoto?", False),
        ("", "Japan", [], "What is the country of Kyoto?", False),
    ],
)  # fmt: skip
def test_the_target_must_be_the_answer(answer, target, aliases, question, expected):
    assert qa_correct(answer, target, aliases, question + ONLY) is expected


@pytest.mark.parametrize(
    "answer, rivals, expected",
    [
        ("Kyoto is in Japan or China.", ["China", "Italy"], False),  # names another value of the relation
        ("Kyoto is in Japan, not China.", ["China"], True),  # a negated rival is no claim
        ("Kyoto is in Japan.", ["China"], True),
        ("Kyoto is in Japan and Italy.", ["Italy"], False),
    ],
)
def test_a_rival_value_makes_it_wrong(answer, rivals, expected):
    assert qa_correct(answer, "Japan", [], "What is the country of Kyoto?" + ONLY, rivals=rivals) is expected


def test_rival_containing_the_alias():
    """'dollar' (an alias) inside 'New Zealand dollar' (another country's currency) is no answer."""
    q = "What is the currency of Australia?"
    assert not qa_correct("It is the New Zealand dollar.", "Australian dollar", ["dollar"], q, rivals=["New Zealand dollar"])
    assert qa_correct("It is the Australian dollar.", "Australian dollar", ["dollar"], q, rivals=["New Zealand dollar"])


@pytest.mark.parametrize(
    "answer, target, expected",
    [
        ("About 1,000 people.", "1", False),  # numbers are whole: "1,000" is 1000
        ("1.5 million", "1", False),
        ("1,000 people", "1000", True),
        ("It was founded by Dr. Yuki Ilmdav.", "Yuki Ilmdav", True),  # abbreviations end no sentence
        ("It is near St. Louis.", "Louis", True),
        ("It sits on Mt. Fuji.", "Fuji", True),
        ("Acme Inc. is based in Lyon.", "Lyon", True),
        ("It is on Mt. Fuji. Tokyo is near.", "Tokyo", False),  # ... but a real end still does
        ("It was written by H. G. Wells. He also wrote", "H. G. Wells", True),  # initials
        ("The capital of the U.S. is Washington, D.C.", "Washington, D.C.", True),
        ("The symbol is C. The symbol of Lead is Pb.", "Pb", False),  # a lone capital is no initial by itself
        ("It is Paris. Or maybe London.", "London", False),  # only the first sentence counts
        ("Paris\nLondon", "London", False),
        ("The capital of Colombia is Bogotá.", "Bogota", True),  # accents folded
        ("The capital of Colombia is Bogota.", "Bogotá", True),
        ("The street is called STRASSE.", "Straße", True),  # case folded
        ("The chemical symbol for Argon is Argon", "Ar", False),  # whole words only
        ("The symbol for Iron is **Fe**.", "Fe", True),
        ("Tell us more.", "US", False),  # codes of up to 3 letters keep their case
    ],
)
def test_words_numbers_and_sentences(answer, target, expected):
    assert qa_correct(answer, target, [], "Which one?") is expected


def test_alias_in_the_question_gives_no_credit():
    q = "What money is used in South Korea?"
    assert not qa_correct("South Korea uses money.", "won", ["South Korea"], q)
    assert qa_correct("South Korea uses the South Korean won.", "won", ["South Korean won"], q)


@pytest.mark.parametrize(
    "greedy, target, expected",
    [("7 − 5 is 2.", "2", True), ("7 - 5 is 2.", "2", True), ("−3", "-3", True), ("8 – 2 = 6", "6", True),
     ("3 × 4 = 12", "12", True), ("7 is the answer.", "7", True), ("7 − 5 is 3.", "2", False)],
)  # fmt: skip
def test_arithmetic_restated_expression_and_unicode_minus(greedy, target, expected):
    assert arithmetic_correct(greedy, target) is expected


def test_rival_values_come_from_the_relation():
    def probe(pid, ptype, target, options=(), tid="capital:q:held_out:0"):
        return Probe(pid, pid, "knowledge", "known", ptype, "Q?", ptype == "qa", target, options=list(options),
                     answer_index=0 if options else None, k=len(options), template_id=tid)  # fmt: skip

    probes = [probe("a-qa", "qa", "Paris"), probe("a-mcq", "mcq", "Paris", ["Paris", "Rome", "Oslo"], "capital:s:held_out:1"),
              probe("b-qa", "qa", "Lima"), probe("c-qa", "qa", "Japan", tid="country_of_city:q:held_out:0")]  # fmt: skip
    rivals = rival_values(probes)
    assert rivals["a-qa"] == ["Lima", "Oslo", "Rome"]
    assert rivals["b-qa"] == ["Oslo", "Paris", "Rome"]
    assert rivals["c-qa"] == []


def test_labelled_set_meets_the_goal():
    rows = qa_rule.load_labels()
    assert len(rows) >= 300
    assert {r["model"] for r in rows} >= {"smollm2-135m-instruct", "gemma3-270m"}
    res = qa_rule.evaluate(rows, qa_rule.new_rule)
    assert res["precision"] >= qa_rule.GOAL["precision"] and res["recall"] >= qa_rule.GOAL["recall"], res["errors"]
    old = qa_rule.evaluate(rows, qa_rule.RULES["old: first sentence names it"])
    assert old["precision"] < qa_rule.GOAL["precision"]  # the set tells the two rules apart


def test_scorer_scores_chat_probes_with_qa_correct(tiny_lm):
    """The scorer passes the probe's own question (not the chat-rendered prompt) and the relation's rivals."""
    from kdyn.probe.scorer import result_row

    tok = tiny_lm.tokenizer
    p = Probe("k-qa", "k", "knowledge", "known", "qa", "Which country does Chiang Mai belong to?" + ONLY, True, "Thailand",
              template_id="country_of_city:q:held_out:0")  # fmt: skip

    def correct(answer: str, rivals: list[str] = []) -> bool:
        ids = tok(answer, add_special_tokens=False)["input_ids"]
        raw = {(0, -1): {"logprob": 0.0, "first_token_rank": 0, "greedy_ids": ids}}
        return result_row(p, 0, raw, tok, rivals)["correct"]

    assert not correct("The capital of Thailand is Bangkok.")
    assert correct("Chiang Mai is in Thailand.")
    assert not correct("Chiang Mai is in Thailand or Laos.", ["Laos"])
