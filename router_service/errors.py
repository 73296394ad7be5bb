"""The service's exceptions, and the single place that turns them into an OpenAI error body.

`CoEError` and its subclasses fix an HTTP status; the routing domain's `RoutingError`s (raised by
strategies, which never speak HTTP) do not, and `to_error_response` maps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from router_service.api.schema import UNSUPPORTED, ErrorInfo, ErrorResponse


class CoEError(Exception):
    """Base error. Subclasses fix the HTTP status and the OpenAI error `type`."""

    status_code: int = 500
    error_type: str = "internal_error"
    default_code: str | None = None

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}


class InvalidRequestError(CoEError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(CoEError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class ModelNotFoundError(CoEError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RouteNotFoundError(CoEError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowedError(CoEError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTooLargeError(CoEError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(CoEError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "overloaded"


class ExpertError(CoEError):
    """An expert raised while generating."""

    status_code = 502
    error_type = "expert_error"
    default_code = "expert_failed"


class ExpertUnavailableError(CoEError):
    """No expert that could serve the request is up."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "expert_unavailable"


class GatewayStoreError(CoEError):
    """The per-key counter store (SQLite or Redis) did not answer within its deadline."""

    status_code = 503
    error_type = "service_unavailable"


class ExpertTimeoutError(CoEError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "expert_timeout"


class ConfigError(CoEError):
    """A bad coe.yaml or artifact; raised at start-up, never for a request."""

    status_code = 500
    error_type = "config_error"


class NotFittedError(CoEError, ValueError, AttributeError):
    """A learned strategy was used before `fit` (same bases as scikit-learn's NotFittedError)."""

    status_code = 500
    error_type = "internal_error"
    default_code = "router_not_fitted"


class RoutingError(ValueError):
    """An error of the routing domain (the strategy registry, a strategy's parameters).

    Strategies raise these and never an HTTP error: this carries no status. `to_error_response` maps it
    (a 400 naming the field the mistake was made in); start-up code turns it into a ConfigError.
    """

    code = "invalid_value"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownStrategyError(RoutingError):
    """A strategy name that is not registered."""

    code = "unknown_strategy"

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class UnknownParameterError(RoutingError):
    """`set_params` was given a name that is not a parameter of the strategy."""

    code = "unknown_parameter"

    def __init__(self, message: str, *, strategy: str, names: Sequence[str]) -> None:
        super().__init__(message)
        self.strategy = strategy
        self.names = list(names)


# The request/config field each routing error is the client's mistake in (used by `to_error_response`).
_ROUTING_ERROR_PARAMS: tuple[tuple[type[RoutingError], str], ...] = (
    (UnknownStrategyError, "routing.strategy"),
    (UnknownParameterError, "router.params"),
)


def format_loc(loc: Sequence[Any]) -> str:
    """A pydantic error location as a field path: ("messages", 0, "content") → "messages[0].content".

    The one formatter of locations, for request errors (`param`) and config errors alike; "" for the root.
    """
    path = ""
    for item in loc:
        path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
    return path


def validation_error_to_coe(exc: ValidationError | Any) -> InvalidRequestError:
    """Turn a pydantic/FastAPI validation error into a 400 that names the first bad field."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return InvalidRequestError(str(exc))
    first = errors[0]
    # FastAPI puts the request part first ("body", ...); the client names fields from the body down.
    param = format_loc([item for item in first.get("loc", ()) if item != "body"]) or None
    msg = first.get("msg", "invalid value")
    kind = first.get("type")
    code = "invalid_value"
    if kind == "extra_forbidden" and param:
        message, code = f"Unrecognized request argument supplied: '{param}'", "unknown_parameter"
    elif kind == UNSUPPORTED:  # a field schema.REFUSED refuses at a value other than "off"
        message, code = msg, UNSUPPORTED
    elif param:
        message = f"Invalid value for '{param}': {msg}"
    else:
        message = f"Invalid request body: {msg}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return InvalidRequestError(message, param=param, code=code)


def to_error_response(exc: BaseException) -> tuple[int, ErrorResponse, dict[str, str]]:
    """Map any exception to (HTTP status, OpenAI error body, extra headers). The one place this happens."""
    if isinstance(exc, ValidationError):
        exc = validation_error_to_coe(exc)
    elif isinstance(exc, RoutingError):
        param = next((field for kind, field in _ROUTING_ERROR_PARAMS if isinstance(exc, kind)), None)
        exc = InvalidRequestError(exc.message, param=param, code=exc.code)
    if isinstance(exc, CoEError):
        body = ErrorResponse(error=ErrorInfo(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code))
        return exc.status_code, body, dict(exc.headers)
    body = ErrorResponse(
        error=ErrorInfo(message="Internal server error", type="internal_error", param=None, code="internal_error")
    )
    return 500, body, {}
