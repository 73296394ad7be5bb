"""Answer normalisers, shared by the vote aggregator and the online eval.

Each returns a canonical form; two answers match when their forms are equal.

- exact:   strip, case-fold, collapse internal whitespace, drop trailing '.', '!' and quotes.
- numeric: the first number in the text as a float (commas removed); equal within 1e-6 relative.
- choice:  the option letter A–J, upper-cased: a parenthesised letter "(B)" first, then "answer: b" /
           "answer is B", then a letter opening the reply ("B."), then any standalone letter.
- contains: any accepted answer (a gold string, or a list of aliases) appears in the reply as a
           whole word, case-folded ("The capital of France is Paris." contains "Paris"). For replies
           of chat models that wrap the answer in a sentence; the zoo's quality table and its online
           eval set use it for every row, so the build check and the eval grade alike.
- auto:    choice when the gold answer is a single letter A–J, numeric when it parses as a number,
           else exact.

`gold` may be a list of accepted answers: the reply is correct when it matches any of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

GRADERS = ("auto", "exact", "numeric", "choice", "contains")

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
# Most explicit first: "(B)", "answer: B" / "answer is B", a letter opening the reply, then any lone letter.
_CHOICES = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\(([A-J])\)",
        r"answer\s*(?:is|:)?\s*\(?([A-J])(?![A-Za-z])",
        r"^\s*([A-J])(?![A-Za-z])",
        r"(?<![A-Za-z])([A-J])(?![A-Za-z])",
    )
]


def normalise_exact(text: str) -> str:
    text = " ".join(str(text).split()).casefold()
    return text.strip().rstrip(".!").strip("\"'`").strip()


def parse_number(text: str) -> float | None:
    match = _NUMBER.search(str(text))
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def parse_choice(text: str) -> str | None:
    for pattern in _CHOICES:
        match = pattern.search(str(text).strip())
        if match:
            return match.group(1).upper()
    return None


def grader_for(gold: str, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    stripped = str(gold).strip()
    if re.fullmatch(r"[A-Ja-j]", stripped):
        return "choice"
    if re.fullmatch(_NUMBER.pattern, stripped):
        return "numeric"
    return "exact"


def contains_answer(prediction: str, gold: str) -> bool:
    """`gold` appears in `prediction` as a whole word (or words), case-folded, whitespace collapsed."""
    want = " ".join(str(gold).split()).casefold()
    if not want:
        return False
    text = " ".join(str(prediction).split()).casefold()
    return re.search(r"(?<!\w)" + re.escape(want) + r"(?!\w)", text) is not None


def is_correct(prediction: str, gold: str | Sequence[str], mode: str = "auto") -> bool:
    if mode not in GRADERS:
        raise ValueError(f"unknown grader {mode!r}; known: {', '.join(GRADERS)}")
    if not isinstance(gold, str):
        return any(is_correct(prediction, alias, mode) for alias in gold)
    if mode == "contains":
        return contains_answer(prediction, gold)
    kind = grader_for(gold, mode)
    if kind == "choice":
        return parse_choice(prediction) == str(gold).strip().upper()
    if kind == "numeric":
        got, want = parse_number(prediction), parse_number(gold)
        if got is None or want is None:
            return False
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    return normalise_exact(prediction) == normalise_exact(gold)


def canonical_answer(text: str) -> str:
    """The form votes are counted in when there is no gold answer to pick the grader:
    a lone option letter, else a lone number, else the exact-normalised text."""
    stripped = str(text).strip()
    if re.fullmatch(r"\(?[A-Ja-j][.)]?", stripped):
        return "choice:" + (parse_choice(stripped) or "")
    number = parse_number(stripped)
    if number is not None and re.fullmatch(r"[^A-Za-z]*", stripped):
        return f"number:{number:g}"
    return "text:" + normalise_exact(stripped)
