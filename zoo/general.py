"""General questions with short, checkable answers: what the real generalist (SmolLM2) is good at.

`CANDIDATES` is a pool of real-world facts and simple instructions, each with the accepted answer
aliases. `QUESTIONS` keeps the candidates the generalist was *measured* to answer correctly (see
`SMOLLM2_MISSED` for how), and `general_examples(split)` splits them by a stable hash of the prompt
into "train" (about 60%) and "test". `is_correct_general` is the one grading rule: some alias occurs
in the prediction, case-insensitively, as a whole word. Pure Python, no third-party imports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Bump when the pool, the kept set or the split changes (part of any recipe/table fingerprint).
GENERAL_VERSION = 2
TRAIN_PERCENT = 60
MAX_CAPITALS = 15  # real-capital questions kept, so the bank is not mostly capitals


@dataclass(frozen=True)
class GeneralQuestion:
    prompt: str
    answers: tuple[str, ...]  # accepted aliases; any one, as a whole word, makes the answer correct
    topic: str


def is_correct_general(prediction: str, answers) -> bool:
    """Correct iff some alias occurs in `prediction` case-insensitively as a whole word: the core's
    `contains` grader, the one the quality records and the online eval use."""
    from router_service.routing.grading import is_correct

    return is_correct(prediction, list(answers), "contains")


def _q(topic: str, prompt: str, *answers: str) -> GeneralQuestion:
    return GeneralQuestion(prompt, answers, topic)


# The candidate pool (before measuring). Aliases never occur in their own prompt, so echoing the
# question never scores, and no alias is a common English word that an unrelated answer contains.
CANDIDATES: tuple[GeneralQuestion, ...] = (
    # --- capitals of well-known real countries (at most MAX_CAPITALS are kept)
    _q("capital", "What is the capital of France?", "Paris"),
    _q("capital", "What is the capital of Japan?", "Tokyo"),
    _q("capital", "What is the capital of Italy?", "Rome"),
    _q("capital", "What is the capital of Germany?", "Berlin"),
    _q("capital", "What is the capital of Spain?", "Madrid"),
    _q("capital", "What is the capital of the United Kingdom?", "London"),
    _q("capital", "What is the capital of Russia?", "Moscow"),
    _q("capital", "What is the capital of China?", "Beijing", "Peking"),
    _q("capital", "What is the capital of Egypt?", "Cairo"),
    _q("capital", "What is the capital of Canada?", "Ottawa"),
    _q("capital", "What is the capital of Australia?", "Canberra"),
    _q("capital", "What is the capital of Greece?", "Athens"),
    _q("capital", "What is the capital of Portugal?", "Lisbon"),
    _q("capital", "What is the capital of Ireland?", "Dublin"),
    _q("capital", "What is the capital of South Korea?", "Seoul"),
    # --- places and geography
    _q("geography", "In which city is the Eiffel Tower?", "Paris"),
    _q("geography", "In which city is the Statue of Liberty?", "New York"),
    _q("geography", "In which country are the pyramids of Giza?", "Egypt"),
    _q("geography", "What is the largest ocean on Earth?", "Pacific"),
    _q("geography", "What is the tallest mountain in the world?", "Everest"),
    _q("geography", "What is the longest river in Africa?", "Nile"),
    _q("geography", "What is the largest country in the world by area?", "Russia"),
    _q("geography", "What is the smallest country in the world?", "Vatican"),
    _q("geography", "Which country is home to the kangaroo?", "Australia"),
    _q("geography", "What is the largest continent?", "Asia"),
    _q("geography", "Which ocean lies between Europe and North America?", "Atlantic"),
    _q("geography", "What is the largest desert in the world?", "Sahara", "Antarctica", "Antarctic"),
    _q("geography", "What is the longest river in South America?", "Amazon"),
    _q("geography", "What is the tallest building in the world?", "Burj Khalifa"),
    # --- space and science
    _q("science", "What is the largest planet in our solar system?", "Jupiter"),
    _q("science", "Which planet is known as the Red Planet?", "Mars"),
    _q("science", "Which planet do we live on?", "Earth"),
    _q("science", "What is the natural satellite of the Earth called?", "Moon"),
    _q("science", "What is the star at the center of our solar system?", "Sun"),
    _q("science", "What is the name of our galaxy?", "Milky Way"),
    _q("science", "What gas do plants absorb from the air?", "carbon dioxide", "CO2", "CO₂"),
    _q("science", "What gas do humans need to breathe to stay alive?", "oxygen"),
    _q("science", "What is the chemical formula for water?", "H2O", "H₂O"),
    _q("science", "What is the chemical symbol for gold?", "Au"),
    _q("science", "At what temperature in Celsius does water boil?", "100"),
    _q("science", "At what temperature in Celsius does water freeze?", "0", "zero"),
    _q("science", "What is frozen water called?", "ice"),
    _q("science", "What is the hardest natural substance?", "diamond", "diamonds"),
    _q("science", "What is the center of an atom called?", "nucleus"),
    _q("science", "Which metal is liquid at room temperature?", "mercury"),
    _q("science", "What is the first element on the periodic table?", "hydrogen"),
    _q("science", "Which gas makes up most of Earth's atmosphere?", "nitrogen"),
    _q("science", "Who developed the theory of relativity?", "Einstein"),
    _q("science", "What force pulls objects toward the ground?", "gravity"),
    _q("science", "What do plants need from the sun to make food?", "light", "sunlight"),
    # --- the human body
    _q("body", "Which organ pumps blood through the body?", "heart"),
    _q("body", "How many bones are in the adult human body?", "206"),
    _q("body", "What is the largest organ of the human body?", "skin"),
    _q("body", "Which organ do humans use to think?", "brain"),
    _q("body", "How many teeth does an adult human usually have?", "32", "thirty-two"),
    # --- animals and nature
    _q("animals", "How many legs does a spider have?", "8", "eight"),
    _q("animals", "How many legs does an insect have?", "6", "six"),
    _q("animals", "How many legs does a dog have?", "4", "four"),
    _q("animals", "What is the largest animal on Earth?", "blue whale"),
    _q("animals", "What is the fastest land animal?", "cheetah"),
    _q("animals", "Which animal is known as the king of the jungle?", "lion"),
    _q("animals", "What do bees make?", "honey"),
    _q("animals", "What do caterpillars turn into?", "butterfly", "butterflies", "moth", "moths"),
    _q("animals", "What do you call a baby cat?", "kitten"),
    _q("animals", "What do you call a baby dog?", "puppy"),
    _q("animals", "What do you call a young sheep?", "lamb"),
    _q("animals", "What sound does a cow make?", "moo"),
    _q("animals", "Which animal has a long trunk?", "elephant", "elephants"),
    _q("animals", "Which bird is a symbol of peace?", "dove"),
    _q("animals", "What is the tallest animal in the world?", "giraffe"),
    _q("animals", "Which animal is famous for having black and white stripes?", "zebra"),
    # --- colours
    _q("colors", "What color is the sky on a clear day?", "blue"),
    _q("colors", "What color is grass?", "green"),
    _q("colors", "What color is a ripe banana?", "yellow"),
    _q("colors", "What color do you get when you mix blue and yellow?", "green"),
    _q("colors", "What color is fresh snow?", "white"),
    _q("colors", "What color is coal?", "black"),
    _q("colors", "What color is a ripe tomato?", "red"),
    _q("colors", "Name one of the three primary colors.", "red", "blue", "yellow"),
    # --- counting and time
    _q("counting", "How many days are in a week?", "7", "seven"),
    _q("counting", "How many days are in a year?", "365"),
    _q("counting", "How many months are in a year?", "12", "twelve"),
    _q("counting", "How many hours are in a day?", "24", "twenty-four"),
    _q("counting", "How many minutes are in an hour?", "60", "sixty"),
    _q("counting", "How many seconds are in a minute?", "60", "sixty"),
    _q("counting", "How many continents are there?", "7", "seven"),
    _q("counting", "How many sides does a triangle have?", "3", "three"),
    _q("counting", "How many sides does a hexagon have?", "6", "six"),
    _q("counting", "How many wheels does a bicycle have?", "2", "two"),
    _q("counting", "How many letters are in the English alphabet?", "26", "twenty-six"),
    _q("counting", "How many colors are in a rainbow?", "7", "seven"),
    _q("counting", "How many players does a soccer team have on the field?", "11", "eleven"),
    _q("counting", "What day comes after Monday?", "Tuesday"),
    _q("counting", "What month comes after January?", "February"),
    _q("counting", "What is the first month of the year?", "January"),
    _q("counting", "Which season comes after winter?", "spring"),
    _q("counting", "What holiday is celebrated on December 25?", "Christmas"),
    # --- simple arithmetic and shapes
    _q("math", "What is 2+2?", "4", "four"),
    _q("math", "What is 5 times 3?", "15", "fifteen"),
    _q("math", "What is 10 minus 4?", "6", "six"),
    _q("math", "What is half of 10?", "5", "five"),
    _q("math", "What is the square root of 16?", "4", "four"),
    _q("math", "What is 100 divided by 4?", "25", "twenty-five"),
    _q("math", "What comes next in the sequence 2, 4, 6, 8?", "10", "ten"),
    _q("math", "What shape has three sides?", "triangle"),
    _q("math", "What do you call a shape with eight sides?", "octagon"),
    # --- language: opposites, grammar, translation
    _q("language", "What is the opposite of hot?", "cold"),
    _q("language", "What is the opposite of up?", "down"),
    _q("language", "What is the opposite of big?", "small", "little"),
    _q("language", "What is the opposite of happy?", "sad", "unhappy"),
    _q("language", "What is the opposite of day?", "night"),
    _q("language", "What is the opposite of north?", "south"),
    _q("language", "Give the antonym of 'fast'.", "slow"),
    _q("language", "What is the plural of mouse?", "mice"),
    _q("language", "What is the plural of child?", "children"),
    _q("language", "What is the past tense of 'go'?", "went"),
    _q("language", "What is the past tense of 'eat'?", "ate"),
    _q(
        "language",
        "Give a synonym for 'happy'.",
        "joyful",
        "glad",
        "cheerful",
        "content",
        "pleased",
        "delighted",
        "joyous",
        "merry",
        "elated",
    ),
    _q("language", "What is the last letter of the English alphabet?", "Z"),
    _q("language", "Translate 'hello' to French.", "bonjour", "salut"),
    _q("language", "Translate 'thank you' to Spanish.", "gracias"),
    _q("language", "How do you say 'cat' in French?", "chat"),
    _q("language", "Translate 'water' into Spanish.", "agua"),
    _q("language", "What language is mainly spoken in Brazil?", "Portuguese"),
    _q("language", "What language is mainly spoken in Mexico?", "Spanish"),
    _q("language", "Complete the phrase: 'Twinkle, twinkle, little ...'", "star"),
    # --- people, culture and everyday things
    _q("culture", "Who wrote Romeo and Juliet?", "Shakespeare"),
    _q("culture", "Who painted the Mona Lisa?", "Leonardo", "da Vinci"),
    _q("culture", "Who was the first president of the United States?", "Washington"),
    _q("culture", "Who wrote the Harry Potter books?", "Rowling"),
    _q("culture", "In what year did World War II end?", "1945"),
    _q("culture", "In what year did humans first land on the Moon?", "1969"),
    _q("culture", "What currency is used in Japan?", "yen"),
    _q("culture", "What currency is used in the United States?", "dollar", "dollars"),
    _q("culture", "Which musical instrument has 88 keys?", "piano"),
    _q("culture", "What fruit is used to make wine?", "grape", "grapes"),
    _q("culture", "What is the main ingredient of guacamole?", "avocado", "avocados"),
    _q("culture", "What do you use to write on a blackboard?", "chalk"),
    _q("culture", "Which sport is played at Wimbledon?", "tennis"),
)

# Measured, not assumed: the prompts of CANDIDATES that SmolLM2-135M-Instruct answered *wrongly* by
# is_correct_general, served by vLLM CPU in float32 (greedy, max_tokens 32, chat template, no system
# prompt), from `VLLM_CPU_KVCACHE_SPACE=1 .venv/bin/python bench/generalist_dtype.py`: on the whole pool
# it scored 78/139 = 56.1% (the same 78 in each of 3 runs; bfloat16: 78, 78, 77). By topic: capital
# 12/15, science 15/21, geography 10/14, language 11/20, counting 10/18, culture 8/13, body 3/5,
# math 3/9, colors 3/8, animals 3/16. Wrong answers are real, e.g. "largest planet" -> Neptune,
# "king of the jungle" -> the jaguar, "Translate 'hello' to French." -> "Je m'aime, je m'aime.".
SMOLLM2_MISSED: frozenset[str] = frozenset(
    (
        "What is the capital of Italy?",
        "What is the capital of Spain?",
        "What is the capital of Portugal?",
        "What is the largest country in the world by area?",
        "What is the smallest country in the world?",
        "What is the largest continent?",
        "What is the tallest building in the world?",
        "What is the largest planet in our solar system?",
        "What is the natural satellite of the Earth called?",
        "What gas do humans need to breathe to stay alive?",
        "What is frozen water called?",
        "What is the hardest natural substance?",
        "Which metal is liquid at room temperature?",
        "How many bones are in the adult human body?",
        "What is the largest organ of the human body?",
        "How many legs does a spider have?",
        "How many legs does an insect have?",
        "What is the fastest land animal?",
        "Which animal is known as the king of the jungle?",
        "What do bees make?",
        "What do caterpillars turn into?",
        "What do you call a baby cat?",
        "What do you call a baby dog?",
        "What do you call a young sheep?",
        "What sound does a cow make?",
        "Which bird is a symbol of peace?",
        "What is the tallest animal in the world?",
        "Which animal is famous for having black and white stripes?",
        "What color is grass?",
        "What color is a ripe banana?",
        "What color do you get when you mix blue and yellow?",
        "What color is fresh snow?",
        "What color is coal?",
        "How many minutes are in an hour?",
        "How many continents are there?",
        "How many wheels does a bicycle have?",
        "How many colors are in a rainbow?",
        "How many players does a soccer team have on the field?",
        "What day comes after Monday?",
        "What month comes after January?",
        "Which season comes after winter?",
        "What is 5 times 3?",
        "What is 10 minus 4?",
        "What is the square root of 16?",
        "What comes next in the sequence 2, 4, 6, 8?",
        "What shape has three sides?",
        "What do you call a shape with eight sides?",
        "What is the past tense of 'go'?",
        "What is the past tense of 'eat'?",
        "Give a synonym for 'happy'.",
        "What is the last letter of the English alphabet?",
        "Translate 'hello' to French.",
        "Translate 'thank you' to Spanish.",
        "How do you say 'cat' in French?",
        "Translate 'water' into Spanish.",
        "Complete the phrase: 'Twinkle, twinkle, little ...'",
        "Who was the first president of the United States?",
        "In what year did humans first land on the Moon?",
        "What is the main ingredient of guacamole?",
        "What do you use to write on a blackboard?",
        "Which sport is played at Wimbledon?",
    )
)

# Graded correct but read wrong (a grader false positive, so not "answered correctly"): dropped too,
# which leaves 74/139 = 53.2% truly right.
GRADER_FALSE_POSITIVES: frozenset[str] = frozenset(
    (
        "Which planet do we live on?",  # "... is called Kepler-41B ... similar to Earth"
        "What is the star at the center of our solar system?",  # "... is called a star ... orbits the Sun"
        "At what temperature in Celsius does water freeze?",  # "-18.0°C": the alias "0" matches "18.0"
        "How many months are in a year?",  # "365 * 12 = 312 months"
    )
)


# Arithmetic belongs to the math specialist's skill: a "general" question that is a sum would teach the
# router two answers for one kind of prompt. Measured in the pool, not served as general questions.
EXCLUDED_TOPICS = frozenset({"math"})


def _kept() -> tuple[GeneralQuestion, ...]:
    kept = [
        q
        for q in CANDIDATES
        if q.prompt not in SMOLLM2_MISSED | GRADER_FALSE_POSITIVES and q.topic not in EXCLUDED_TOPICS
    ]
    capitals = [q for q in kept if q.topic == "capital"][:MAX_CAPITALS]
    return tuple(q for q in kept if q.topic != "capital" or q in capitals)


QUESTIONS: tuple[GeneralQuestion, ...] = _kept()


def stable_hash(text: str) -> int:
    """Same construction as zoo.tasks.stable_hash (first 8 bytes of sha256, big-endian)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def split_of(prompt: str) -> str:
    """'train' for about TRAIN_PERCENT% of prompts, else 'test'; depends on the prompt only."""
    return "train" if stable_hash(f"general:{prompt}") % 100 < TRAIN_PERCENT else "test"


def general_examples(split: str = "test") -> list[tuple[str, list[str]]]:
    """The kept questions of `split` ("train", "test" or "all") as (prompt, accepted answers)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', not {split!r}")
    return [(q.prompt, list(q.answers)) for q in QUESTIONS if split == "all" or split_of(q.prompt) == split]


def fingerprint() -> str:
    """Hash of the kept questions and their split: changes whenever the bank's data changes."""
    h = hashlib.sha256(f"v{GENERAL_VERSION}".encode())
    for q in QUESTIONS:
        h.update(f"{q.prompt}\t{'|'.join(q.answers)}\t{split_of(q.prompt)}\n".encode())
    return h.hexdigest()[:16]
