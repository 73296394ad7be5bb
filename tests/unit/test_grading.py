import pytest

from eval.grading import grader_for, is_correct, normalise_exact, parse_choice, parse_number


@pytest.mark.parametrize(
    "prediction,gold,expected",
    [
        ("82", "82", True),
        (" 82\n", "82", True),
        ("82.0", "82", True),
        ("The answer is 1,234", "1234", True),
        ("83", "82", False),
        ("", "82", False),
        ("-7", "-7", True),
        ("tenalp", "tenalp", True),
        ("Tenalp.", "tenalp", True),
        ("ten alp", "tenalp", False),
        ("(B)", "B", True),
        ("Answer: b", "B", True),
        ("C", "B", False),
        ("none", "B", False),
    ],
)
def test_is_correct(prediction, gold, expected):
    assert is_correct(prediction, gold) is expected


def test_grader_selection_and_parsers():
    assert grader_for("B") == "choice" and grader_for("12.5") == "numeric" and grader_for("Quelm") == "exact"
    assert parse_number("x = -3.5e2 apples") == -350.0
    assert parse_number("no digits") is None
    assert parse_choice("I pick (d) here") == "D"
    assert normalise_exact("  Hello   World! ") == "hello world"
    assert is_correct("12", "12.0", mode="exact") is False
