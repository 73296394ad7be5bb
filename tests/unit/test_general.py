"""The general question bank: what the real generalist answers and the specialists cannot."""

from router_service.routing.grading import is_correct
from zoo import general


def test_splits_are_disjoint_and_france_is_in_train():
    train = {p for p, _ in general.general_examples("train")}
    test = {p for p, _ in general.general_examples("test")}
    assert train and test and not train & test
    assert train | test == {q.prompt for q in general.QUESTIONS}
    assert "What is the capital of France?" in train


def test_kept_questions_are_what_was_measured_right_and_not_arithmetic():
    kept = {q.prompt for q in general.QUESTIONS}
    assert not kept & (general.SMOLLM2_MISSED | general.GRADER_FALSE_POSITIVES)
    assert all(q.topic not in general.EXCLUDED_TOPICS for q in general.QUESTIONS)
    assert sum(q.topic == "capital" for q in general.QUESTIONS) <= general.MAX_CAPITALS


def test_no_alias_is_in_its_own_prompt():
    """Echoing the question never scores."""
    for q in general.CANDIDATES:
        assert not general.is_correct_general(q.prompt, q.answers), q.prompt


def test_the_bank_grader_is_the_core_contains_grader():
    for reply, answers in [
        ("The capital of France is Paris.", ["Paris"]),
        ("Parisian food", ["Paris"]),
        ("It has 8 legs", ["8", "eight"]),
        ("18 legs", ["8", "eight"]),
    ]:
        assert general.is_correct_general(reply, answers) == is_correct(reply, answers, "contains")
