"""GSM8K answer extraction and normalisation on nasty generations; the paper's strict protocol."""

import pytest

from jepa.eval.answers import (
    clean_answer,
    extract_answer,
    gold_answer,
    last_boxed,
    numbers_match,
    paper_answer,
    parse_number,
    score_default,
    score_paper,
)


@pytest.mark.parametrize(
    "text, answer, source",
    [
        ("So the total is \\boxed{72}.", "72", "boxed"),
        ("\\boxed{3} no wait, \\boxed{5} is right", "5", "boxed"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed"),
        ("outer \\boxed{\\boxed{-5}}", "-5", "boxed"),  # the last \boxed{ opened is the inner one
        ("\\boxed{\\text{\\$1{,}080}} dollars", "\\text{\\$1{,}080}", "boxed"),
        ("\\boxed{4} then \\boxed{unfinished", "4", "boxed"),  # an unclosed box is ignored
        ("Step 1 ...\n#### 1,080\n", "1,080", "hash"),
        ("#### 12\nWait, it is\n#### 13 apples", "13 apples", "hash"),
        ("#### 16\n#### 16\n####", "16", "hash"),  # cut off after a final empty marker
        ("#####  5", "5", "hash"),
        ("She has 3 apples and buys 4, so 7 in all. Done!", "7", "number"),
        ("16-3-4=9 eggs are left", "9", "number"),  # "-3" and "-4" are not negative numbers here
        ("It was -12.5 degrees.", "-12.5", "number"),
        ("The answer is 1,234,567.", "1,234,567", "number"),
        ("pick 3,4 or 12,5", "5", "number"),
        ("I cannot answer this.", None, "none"),
        ("", None, "none"),
    ],
)
def test_extract_answer(text, answer, source):
    assert extract_answer(text) == (answer, source)


@pytest.mark.parametrize(
    "raw, value",
    [
        ("72", 72.0),
        ("$1,080", 1080.0),
        ("\\$1,080.00", 1080.0),
        ("1{,}080", 1080.0),  # LaTeX's thousands separator
        ("\\text{\\$1{,}080}", 1080.0),
        ("10,\\!000", 10000.0),
        ("\\text{18 dollars}", 18.0),
        ("18 \\text{ dollars}", 18.0),
        ("\\$\\boxed{42}", 42.0),
        ("50\\%", 50.0),
        ("25%", 25.0),
        ("-7", -7.0),
        ("\u22127", -7.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("3.0", 3.0),
        ("42.", 42.0),
        ("\\frac{1}{2}", 0.5),
        ("-\\dfrac{3}{4}", -0.75),
        ("3/4", 0.75),
        ("x = 5", 5.0),
        ("5 apples and 6 pears", None),  # two numbers, no way to tell
        ("1,2", None),  # not a thousands separator: two numbers
        ("1,234,567.5", 1234567.5),
        ("seven", None),
        ("\\frac{1}{0}", None),
        (None, None),
    ],
)
def test_parse_number(raw, value):
    assert parse_number(raw) == value


def test_clean_answer_strips_decoration():
    assert clean_answer(" \\$1,080.  ") == "1080"
    assert clean_answer("\\left( 5 \\right)") == "( 5 )"
    assert clean_answer("90^\\circ") == "90"


def test_last_boxed_nested_braces_and_fbox():
    assert last_boxed("\\boxed{\\frac{a}{b}+{c}}") == "\\frac{a}{b}+{c}"
    assert last_boxed("\\fbox{9}") == "9"
    assert last_boxed("no box here") is None


@pytest.mark.parametrize(
    "generation, gold, correct",
    [
        ("The total is \\boxed{\\$1,080}.", "1,080", True),
        ("... so she makes \\boxed{18} dollars.\n\nThe answer is 18.", "18", True),
        ("\\boxed{18.0}", "18", True),
        ("#### 18 dollars", "18", True),
        ("blah\n#### -3", "-3", True),
        ("first 18 then 19", "18", False),  # last number wins
        ("\\boxed{19}, not 18", "18", False),  # a box beats a later number
        ("no idea", "18", False),
        ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ],
)
def test_score_default(generation, gold, correct):
    assert score_default(generation, gold)["correct"] is correct


def test_numbers_match_tolerance():
    assert numbers_match(72.0, 72.0000000001)
    assert not numbers_match(72.0, 72.01)
    assert not numbers_match(None, 1.0)
    assert not numbers_match(float("nan"), float("nan"))


def test_gold_answer_from_raw_solution():
    assert gold_answer("He buys 3.\n#### 1,080") == "1,080"
    assert gold_answer(" 72 ") == "72"


@pytest.mark.parametrize(
    "generation, gold, predicted, correct",
    [
        ("Step one.\n#### 72", "72", "72", True),
        ("Step one.\n#### 72\n", "72", "72", True),  # stripped first
        ("Step one.\n#### 72.0", "72", "72.0", False),  # strict: no normalisation
        ("Step one.\n#### 1080", "1,080", "1080", False),
        ("#### 72", "72", None, False),  # needs a newline before the marker
        ("Step one.\n#### 72\nThat is all.", "72", None, False),  # must be the last line
        ("Step one.\n####72", "72", None, False),
        ("Step one.\n#### 72 ", "72", "72", True),
        ("\\boxed{72}", "72", None, False),
    ],
)
def test_paper_protocol(generation, gold, predicted, correct):
    assert paper_answer(generation) == predicted
    assert score_paper(generation, gold)["correct"] is correct
