"""Map a foreign library's errors to the core's at every crossing (httpx's `map_httpcore_exceptions`).

Each adapter owns one table, (exception types, factory) pairs tried in order, and wraps every call
into its library in `mapped_errors`, stream iteration included. Whatever no row matches becomes an
`ExpertError` (502); the core's own errors pass through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from router_service.errors import CoEError, ExpertError, ExpertTimeoutError, ExpertUnavailableError

ErrorFactory = Callable[[str, BaseException], CoEError]
ErrorTable = Sequence[tuple[type[BaseException] | tuple[type[BaseException], ...], ErrorFactory]]


def expert_failed(expert_id: str, exc: BaseException) -> CoEError:
    return ExpertError(f"expert '{expert_id}' failed: {type(exc).__name__}: {exc}")


def expert_unavailable(expert_id: str, exc: BaseException) -> CoEError:
    return ExpertUnavailableError(f"expert '{expert_id}' is unavailable ({type(exc).__name__}: {exc})")


def deadline_errors(timeout_s: float) -> ErrorTable:
    """The core's own crossing: a call that outlives the expert's `timeout_s` is a 504."""

    def timed_out(expert_id: str, _: BaseException) -> CoEError:
        return ExpertTimeoutError(f"expert '{expert_id}' timed out after {timeout_s}s")

    return ((asyncio.TimeoutError, timed_out),)


@contextmanager
def mapped_errors(expert_id: str, table: ErrorTable = ()) -> Iterator[None]:
    """Re-raise any `Exception` from the block as the `CoEError` its first matching row makes.

    Cancellation and generator exits are `BaseException`s and pass through: they are control flow.
    """
    try:
        yield
    except CoEError:
        raise
    except Exception as exc:
        for types, make in table:
            if isinstance(exc, types):
                raise make(expert_id, exc) from exc
        raise expert_failed(expert_id, exc) from exc
