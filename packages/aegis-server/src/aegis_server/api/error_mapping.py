"""The one place where a refusal of the governance use cases (`aegis_server.governance.errors`) becomes
an HTTP answer: its status and envelope type by class, its code, message and details as raised.

`install_exception_handlers` (aegis_server.errors) registers `governance_error_handler` for the base
class, so routes and the hot path raise domain errors and need no try/except.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from aegis_server.errors import ApiError, error_response
from aegis_server.governance.errors import (
    Conflict,
    Forbidden,
    GovernanceError,
    InvalidInput,
    InvalidRequest,
    NotFound,
    Unavailable,
    UnknownCapability,
)

__all__ = ["api_error", "governance_error_handler"]

# Each refusal class (and its subclasses) answers with this status and envelope type.
_HTTP: dict[type[GovernanceError], tuple[int, str]] = {
    GovernanceError: (409, "governance_error"),
    NotFound: (404, "not_found"),
    UnknownCapability: (404, "governance_error"),
    Forbidden: (403, "governance_error"),
    Conflict: (409, "governance_error"),
    InvalidInput: (422, "governance_error"),
    InvalidRequest: (422, "validation_error"),
    Unavailable: (503, "server_error"),
}


def api_error(exc: GovernanceError) -> ApiError:
    """The HTTP error of a refusal: the status and type of its closest mapped class."""
    status, kind = next(_HTTP[cls] for cls in type(exc).__mro__ if cls in _HTTP)
    return ApiError(status, kind, exc.code, exc.message, exc.details)


async def governance_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GovernanceError)
    return error_response(api_error(exc))
