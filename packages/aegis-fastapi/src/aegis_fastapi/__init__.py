"""Governed FastAPI routes for AEGIS: a dependency, a pure-ASGI middleware and lifespan wiring.

```python
from typing import Annotated

from fastapi import Depends, FastAPI

from aegis_fastapi import Aegis, Decision

aegis = Aegis(actor=current_user)            # your auth dependency; no header is trusted by default
app = aegis.install(FastAPI())                # one AsyncAegisClient for the app; OpenAPI responses


@app.post("/orders/{order_id}/refunds")
async def refund(order_id: str, body: Refund, decision: Annotated[Decision, Depends(aegis.require("payments.refund"))]):
    ...                                       # runs on ALLOW only; 403 / 428 / 409 / 503 otherwise


app.include_router(aegis.status_router(prefix="/aegis"))  # where a client waiting on a review polls
```
"""

from aegis_fastapi._aegis import DEFAULT_CONFIRMATION_HEADER, Aegis
from aegis_fastapi._errors import (
    DECISION_HEADER,
    AegisErrorDetail,
    AegisRefusal,
    ErrorResponse,
    RefusalCode,
    default_error_response,
    openapi_responses,
)
from aegis_fastapi._flow import ActorLike, CapabilitySource, ContextLike, ParametersSource
from aegis_fastapi._inputs import ParameterConflict, RouteInputs
from aegis_fastapi._middleware import AegisMiddleware, decision_of, user_actor
from aegis_fastapi._status import DecisionStatus
from aegis_sdk import Decision
from aegis_sdk._version import installed_version

__version__ = installed_version("aegisgov-fastapi")

__all__ = [
    "DECISION_HEADER",
    "DEFAULT_CONFIRMATION_HEADER",
    "ActorLike",
    "Aegis",
    "AegisErrorDetail",
    "AegisMiddleware",
    "AegisRefusal",
    "CapabilitySource",
    "ContextLike",
    "Decision",
    "DecisionStatus",
    "ErrorResponse",
    "ParameterConflict",
    "ParametersSource",
    "RefusalCode",
    "RouteInputs",
    "__version__",
    "decision_of",
    "default_error_response",
    "openapi_responses",
    "user_actor",
]
