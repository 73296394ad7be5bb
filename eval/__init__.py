"""Offline evaluation harness for routing strategies: `python -m eval offline ...` (see eval.__main__)."""
