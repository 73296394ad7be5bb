"""Grading for online eval: the answer normalisers live in the core (the vote aggregator uses them too)."""

from router_service.routing.grading import (
    GRADERS,
    contains_answer,
    grader_for,
    is_correct,
    normalise_exact,
    parse_choice,
    parse_number,
)

__all__ = ["GRADERS", "contains_answer", "grader_for", "is_correct", "normalise_exact", "parse_choice", "parse_number"]
