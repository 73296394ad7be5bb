"""Skill generators of the local expert zoo: short prompts whose answers can be checked exactly
(with the core's exact grader, `router_service.routing.grading.is_correct(..., "exact")`).

Every skill is a function of a *key* (the underlying problem: a pair of numbers, a word, a unit
conversion, a (country, template) pair) rendered through a few natural templates. A stable hash of
the key puts it in one of three splits, whatever the seed or the number of examples asked for:
- "train" (about 80% of keys): what the specialists are trained on;
- "validation" (about 10%): what a build's quality gate and the routers' quality table are measured
  on (the stop rule reads it, so it is not a test set);
- "heldout" (about 10%): the test split of the online eval, never read by a build.
For arithmetic, strings and units the validation and held-out problems themselves are unseen; for
capitals the facts are necessarily the same and the unseen part is the *phrasing* (one validation
and one held-out template per country).

Pure Python, no third-party imports: cheap to import from anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

# Bump when a generator changes in a way that changes the data (part of the zoo recipe hash).
TASKS_VERSION = 2

SPLITS = ("train", "validation", "heldout")
SPLIT_MOD = 10  # stable_hash(key) % SPLIT_MOD: 0 -> heldout, 1 -> validation, else train


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    skill: str

    def to_json(self) -> dict[str, str]:
        """The eval JSONL record: `category` is the skill."""
        return {"prompt": self.prompt, "answer": self.answer, "category": self.skill}

    def asdict(self) -> dict[str, str]:
        return asdict(self)


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


# --------------------------------------------------------------------------- arithmetic
ARITH_TEMPLATES = (  # the sum always ends the prompt, followed by one "?" or "="
    "What is {a}+{b}?",
    "How much is {a}+{b}?",
    "Calculate {a}+{b}?",
    "{a}+{b}=",
    "Compute {a}+{b}=",
    "Solve: {a}+{b}=",
)


def _arith(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    template = rng.choice(ARITH_TEMPLATES)
    return f"{a},{b}", template.format(a=a, b=b), str(a + b)


# --------------------------------------------------------------------------- strings
STRING_TEMPLATES = (
    "Reverse the word {w}",
    "Spell {w} backwards",
    "Write {w} in reverse",
    "What is {w} reversed?",
    "Reverse the letters of {w}",
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _string(rng: random.Random) -> tuple[str, str, str]:
    word = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 7)))
    template = rng.choice(STRING_TEMPLATES)
    return word, template.format(w=word), word[::-1]


# --------------------------------------------------------------------------- units
UNIT_PAIRS = (  # (big unit, small unit, factor)
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("cm", "mm", 10),
    ("m", "mm", 1000),
    ("kg", "g", 1000),
    ("g", "mg", 1000),
    ("L", "mL", 1000),
)
UNIT_TEMPLATES = (
    "Convert {n} {src} to {dst}",
    "How many {dst} are in {n} {src}?",
    "Express {n} {src} in {dst}",
    "{n} {src} in {dst}?",
    "Convert {n} {src} into {dst}.",
)


def _units(rng: random.Random) -> tuple[str, str, str]:
    big, small, factor = rng.choice(UNIT_PAIRS)
    n = rng.randint(1, 99)
    if rng.random() < 0.5:  # big -> small: append zeros
        src, dst, value, answer = big, small, n, n * factor
    else:  # small -> big: drop zeros
        src, dst, value, answer = small, big, n * factor, n
    template = rng.choice(UNIT_TEMPLATES)
    return f"{value},{src},{dst}", template.format(n=value, src=src, dst=dst), str(answer)


# --------------------------------------------------------------------------- capitals
# Eight phrasings: each country is trained on six, and one unseen phrasing each is kept for validation
# and for the test. With six templates (four trained) the atlas reached only 0.94 on unseen phrasings,
# however long it trained, so it could not pass its gate.
CAPITAL_TEMPLATES = (
    "Capital of {c}?",
    "What is the capital of {c}?",
    "Name the capital city of {c}.",
    "Which city is the capital of {c}?",
    "The capital of {c} is?",
    "What city is {c}'s capital?",
    "Tell me the capital of {c}.",
    "What is {c}'s capital city?",
)
N_COUNTRIES = 50
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "l", "m", "s", "th")
_COUNTRY_ENDINGS = ("ia", "land", "stan", "ovia", "ora", "enia")


def _syllables(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(count))


def capital_table(seed: int = 1234, n: int = N_COUNTRIES) -> dict[str, str]:
    """The invented world: country -> capital, deterministic in the seed. Names are unique."""
    rng = random.Random(f"capitals:{seed}")
    table: dict[str, str] = {}
    used: set[str] = set()
    while len(table) < n:
        country = (_syllables(rng, rng.randint(1, 2)) + rng.choice(_COUNTRY_ENDINGS)).capitalize()
        capital = _syllables(rng, rng.randint(1, 2)).capitalize()
        if country in used or capital in used or len(country) > 12 or len(capital) > 9 or len(capital) < 4:
            continue
        used.update((country, capital))
        table[country] = capital
    return table


CAPITALS = capital_table()
_COUNTRIES = tuple(CAPITALS)


def _heldout_template(country: str) -> int:
    return stable_hash(f"capitals-template:{country}") % len(CAPITAL_TEMPLATES)


def _capitals(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(_COUNTRIES)
    index = rng.randrange(len(CAPITAL_TEMPLATES))
    return f"{country},{index}", CAPITAL_TEMPLATES[index].format(c=country), CAPITALS[country]


def _capitals_split(key: str) -> str:
    country, index = key.rsplit(",", 1)
    offset = (int(index) - _heldout_template(country)) % len(CAPITAL_TEMPLATES)
    return {0: "heldout", 1: "validation"}.get(offset, "train")


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    sample: Callable[[random.Random], tuple[str, str, str]]  # rng -> (key, prompt, answer)
    split_of: Callable[[str], str]  # key -> one of SPLITS


def _hashed_split(skill: str) -> Callable[[str], str]:
    def split_of(key: str) -> str:
        return {0: "heldout", 1: "validation"}.get(stable_hash(f"{skill}:{key}") % SPLIT_MOD, "train")

    return split_of


SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill("arithmetic", "Add two two-digit whole numbers.", _arith, _hashed_split("arithmetic")),
        Skill("strings", "Reverse a lowercase word letter by letter.", _string, _hashed_split("strings")),
        Skill(
            "units", "Convert between metric units (km, m, cm, mm, kg, g, mg, L, mL).", _units, _hashed_split("units")
        ),
        Skill(
            "capitals",
            "Name the capital of a country of the project's invented world atlas.",
            _capitals,
            _capitals_split,
        ),
    )
}


def _check_skill(skill: str) -> Skill:
    try:
        return SKILLS[skill]
    except KeyError:
        raise ValueError(f"unknown skill '{skill}'; known: {', '.join(SKILLS)}") from None


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return split


def sample_example(skill: str, rng: random.Random, split: str = "train") -> Example:
    """One example of `skill` from `split`, drawn with `rng` (repeats possible)."""
    spec = _check_skill(skill)
    _check_split(split)
    while True:
        key, prompt, answer = spec.sample(rng)
        if spec.split_of(key) == split:
            return Example(prompt, answer, skill)


def generate(skill: str, n: int, seed: int = 0, split: str = "heldout") -> list[Example]:
    """`n` distinct examples of `skill` from `split`, deterministic in (skill, n, seed, split).

    split="heldout" (default) is the online eval's test split; "validation" is what builds and routers
    measure quality on; "train" is what specialists train on. When the split has fewer than `n`
    distinct prompts (capitals: one phrasing per country) all of them are returned.
    """
    spec = _check_skill(skill)
    _check_split(split)
    rng = random.Random(f"{skill}:{split}:{seed}")
    seen: set[str] = set()
    out: list[Example] = []
    misses = 0
    while len(out) < n and misses < 20_000:
        key, prompt, answer = spec.sample(rng)
        if spec.split_of(key) != split or prompt in seen:
            misses += 1
            continue
        seen.add(prompt)
        out.append(Example(prompt, answer, skill))
    return out


def heldout_set(n_per_skill: int = 50, seed: int = 0, skills: Iterable[str] | None = None) -> list[Example]:
    """The held-out evaluation set: `n_per_skill` examples of every skill (fewer if the split is smaller)."""
    return [ex for skill in (skills or SKILLS) for ex in generate(skill, n_per_skill, seed=seed, split="heldout")]


@functools.cache
def fingerprint(n: int = 200) -> str:
    """Hash of a sample of every split of every skill: changes whenever a generator's data changes."""
    h = hashlib.sha256(f"v{TASKS_VERSION}".encode())
    for skill in SKILLS:
        for split in SPLITS:
            for ex in generate(skill, n, seed=12345, split=split):
                h.update(f"{ex.prompt}\t{ex.answer}\n".encode())
    return h.hexdigest()[:16]
