"""Grading for online eval: the answer normalisers live in the core (the vote aggregator uses them too)."""

from router_service.answers import grader_for, is_correct, normalise_exact, parse_choice, parse_number

__all__ = ["grader_for", "is_correct", "normalise_exact", "parse_choice", "parse_number"]
