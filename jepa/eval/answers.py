"""GSM8K answer extraction, normalisation and comparison (docs/method.md §4).

Default protocol: the answer is the text of the last complete ``\\boxed{...}`` (nested braces allowed), else
what follows the last ``#### `` marker on its line, else the last number in the text. Both sides are then
normalised to a number (:func:`parse_number`) and compared numerically, so ``\\boxed{\\$1,080.00}`` matches a
gold ``1,080``.

Paper protocol (the LLM-JEPA code's ``eval``): the generation, stripped, must end with a line ``#### X``
(regex ``\\n#### (.+)$``) and ``X`` must equal the gold string exactly — no normalisation at all.
"""

from __future__ import annotations

import math
import re
from typing import Any

# A number as written in prose or LaTeX: optional sign, digits with well-formed thousands commas ("1,080",
# not "1,2"), optional decimals; or a bare decimal like ".5".
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_NUMBER = rf"[-+]?{_DIGITS}"
# In running text a sign counts only when it does not follow a word or a closing bracket: "16-3-4" is three
# numbers, not 16, -3, -4.
_NUMBER_RE = re.compile(rf"(?:(?<![\w)\]}}])[-+])?{_DIGITS}")
_FULL_NUMBER_RE = re.compile(rf"^{_NUMBER}$")
_FRACTION_RE = re.compile(rf"^([-+]?)\\[dt]?frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}$")
_SLASH_FRACTION_RE = re.compile(rf"^({_NUMBER})/({_NUMBER})$")
_TEXT_COMMANDS_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
# The paper's strict pattern: "#### X" on the last line of the (stripped) generation.
PAPER_PATTERN = re.compile(r"\n#### (.+)$")
# Thousands separators only: a comma followed by exactly three digits ("1,080" but not "1,2").
_THOUSANDS_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_RELATIVE_TOLERANCE = 1e-6


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (nested braces kept), or None.

    A ``\\boxed{`` whose braces never close is ignored and the previous complete one is used.
    """
    for match in reversed(list(re.finditer(r"\\(?:boxed|fbox)\s*\{", text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def last_hash_answer(text: str) -> str | None:
    """What follows the last non-empty ``####`` marker up to the end of its line (stripped), or None.

    An empty marker (a generation cut off right after ``####``) is skipped in favour of the previous one.
    """
    for match in reversed(list(re.finditer(r"####", text))):
        answer = text[match.end() :].split("\n", 1)[0].strip().lstrip("#").strip()
        if answer:
            return answer
    return None


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (thousands commas allowed), or None."""
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def extract_answer(text: str) -> tuple[str | None, str]:
    """(answer string, source) with source "boxed", "hash", "number" or "none" (then the answer is None)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed, "boxed"
    hashed = last_hash_answer(text)
    if hashed is not None:
        return hashed, "hash"
    number = last_number(text)
    if number is not None:
        return number, "number"
    return None, "none"


def clean_answer(answer: str) -> str:
    """Strip LaTeX and prose decoration that does not change a numeric value.

    Unwraps ``\\text{..}``-like commands and nested ``\\boxed{}``; removes ``$``, ``\\$``, ``%``, ``\\%``,
    ``\\!``, ``\\,``, ``\\;``, ``~``, ``\\left``/``\\right``, degree signs, thousands commas (also ``{,}``),
    spaces and a trailing period.
    """
    s = answer.strip().replace("\u2212", "-")  # Unicode minus
    for _ in range(4):  # nested wrappers: \boxed{\text{$18$}}
        inner = last_boxed(s)
        if inner is not None and s.lstrip().startswith(("\\boxed", "\\fbox")):
            s = inner
        s = _TEXT_COMMANDS_RE.sub(r"\1", s)
    for token in (
        "\\$",
        "$",
        "\\%",
        "%",
        "\\!",
        "\\,",
        "\\;",
        "\\:",
        "\\ ",
        "~",
        "\\left",
        "\\right",
        "^\\circ",
        "^{\\circ}",
        "°",
    ):
        s = s.replace(token, " " if token in ("\\ ", "~") else "")
    s = _THOUSANDS_COMMA_RE.sub("", s.replace("{,}", ","))  # "1{,}080" is LaTeX for 1,080
    s = s.strip().rstrip(".").strip()
    return s


def _to_float(number: str) -> float:
    return float(number.replace(",", ""))


def parse_number(answer: str | None) -> float | None:
    """A numeric value for an extracted answer, or None when it is not a number.

    After :func:`clean_answer`: a plain number (``-3``, ``0.5``, ``1080``), a fraction (``\\frac{1}{2}``,
    ``\\dfrac``, ``-\\frac{3}{4}``, ``1/2`` → 0.5), otherwise — prose like ``18 dollars`` or ``x = 5`` — the
    text after the last ``=`` if any, and then its only number when it contains exactly one.
    """
    if answer is None:
        return None
    s = clean_answer(answer)
    if "=" in s:
        s = s.rsplit("=", 1)[1].strip()
    compact = s.replace(" ", "")
    if _FULL_NUMBER_RE.match(compact):
        return _to_float(compact)
    fraction = _FRACTION_RE.match(compact) or _SLASH_FRACTION_RE.match(compact)
    if fraction:
        groups = fraction.groups()
        sign = -1.0 if len(groups) == 3 and groups[0] == "-" else 1.0
        numerator, denominator = _to_float(groups[-2]), _to_float(groups[-1])
        return None if denominator == 0 else sign * numerator / denominator
    numbers = _NUMBER_RE.findall(s)
    if len(numbers) == 1:
        return _to_float(numbers[0])
    return None


def gold_answer(answer: str) -> str:
    """The ground-truth string of a record: the text after the last ``####`` when present, else all of it."""
    return answer.rsplit("####", 1)[-1].strip()


def numbers_match(predicted: float | None, gold: float | None) -> bool:
    """True iff both are numbers and equal up to a relative tolerance of 1e-6 (``72.0`` == ``72``)."""
    if predicted is None or gold is None or math.isnan(predicted) or math.isnan(gold):
        return False
    return abs(predicted - gold) <= _RELATIVE_TOLERANCE * max(1.0, abs(gold))


def score_default(generation: str, gold: str) -> dict[str, Any]:
    """Default protocol for one generation: {"predicted": str|None, "source", "predicted_value", "correct"}."""
    predicted, source = extract_answer(generation)
    value = parse_number(predicted)
    return {
        "predicted": predicted,
        "source": source,
        "predicted_value": value,
        "correct": numbers_match(value, parse_number(gold_answer(gold))),
    }


def paper_answer(generation: str) -> str | None:
    """The paper's extraction: ``X`` of a final ``\\n#### X`` line of the stripped generation, else None."""
    match = PAPER_PATTERN.search(generation.strip())
    return match.group(1) if match else None


def score_paper(generation: str, gold: str) -> dict[str, Any]:
    """Paper protocol: exact string equality of the final ``#### X`` with the gold string (no normalisation)."""
    predicted = paper_answer(generation)
    return {
        "predicted": predicted,
        "source": "hash" if predicted is not None else "none",
        "correct": predicted is not None and predicted == gold_answer(gold),
    }
