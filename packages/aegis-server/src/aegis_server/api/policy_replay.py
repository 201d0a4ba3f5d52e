"""`POST /api/v1/policies/replay`: re-decide the stored proposals of a window under a candidate policy set
(a recorded version, or policies and capabilities given whole) and answer the `ReplayReport`.

Scope `policies:manage`. The re-deciding runs in a worker thread, so this server keeps deciding; it is bounded
(`limit`, capped at the `replay_max_proposals` setting; `replay_timeout_seconds`, after which it answers what
it replayed, `truncated` with the reason timeout) and one replay runs at a time per server process:
another request meanwhile is refused with 409 `replay_busy`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from aegis_sdk.models import Capability, Policy
from aegis_server.api.common import BODY_ERRORS, Manager, ServiceDep, errors
from aegis_server.engine import PolicySetError
from aegis_server.governance.errors import Conflict, InvalidInput, InvalidRequest, NotFound
from aegis_server.replay import (
    DEFAULT_SAMPLES,
    CandidateError,
    ReplayBusy,
    ReplayReport,
    WindowError,
    candidate_from_documents,
    candidate_from_version,
    one_replay_at_a_time,
    replay_on_server,
    replay_window,
)

__all__ = ["ReplayCandidateDocuments", "ReplayCandidateVersion", "ReplayRequest", "router"]

router = APIRouter(prefix="/api/v1", tags=["registry"])


class ReplayCandidateVersion(BaseModel):
    """A recorded policy-set version."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="The version number (GET /api/v1/policy-versions lists them).")


class ReplayCandidateDocuments(BaseModel):
    """A whole policy set: nothing of the active set is added."""

    model_config = ConfigDict(extra="forbid")

    policies: list[Policy]
    capabilities: list[Capability]


class ReplayRequest(BaseModel):
    """The window, the candidate and how much to report."""

    model_config = ConfigDict(extra="forbid")

    since: str = Field(max_length=64, description="A duration back from now (30m, 12h, 7d) or an RFC 3339 time.")
    until: str | None = Field(default=None, max_length=64, description="The window's end, excluded (default: now).")
    candidate: ReplayCandidateVersion | ReplayCandidateDocuments
    samples: Annotated[int, Field(ge=0, le=1000)] = DEFAULT_SAMPLES
    limit: int | None = Field(
        default=None, ge=1, description="Replay at most this many stored proposals, the oldest (capped by the server)."
    )


@router.post(
    "/policies/replay",
    response_model=ReplayReport,
    summary="Replay stored proposals under a candidate policy set",
    description="Re-decides the proposals decided in the window under the candidate and reports the outcomes "
    "that would change, the rules responsible and sample decision ids. 409 replay_busy while another replay "
    "runs on this server; 404 for an unknown version; 422 invalid_window or invalid_policy.",
    responses=errors(404, 409, *BODY_ERRORS),
)
async def replay_policies(body: ReplayRequest, service: ServiceDep, _: Manager) -> ReplayReport:
    try:
        since, until = replay_window(body.since, body.until, datetime.now(timezone.utc), ("since", "until"))
    except WindowError as exc:
        raise InvalidRequest(f"{exc}.", {"since": body.since, "until": body.until}, code="invalid_window") from None
    try:
        with one_replay_at_a_time():
            store = service.store
            try:
                if isinstance(body.candidate, ReplayCandidateVersion):
                    candidate = await candidate_from_version(store, body.candidate.version)
                else:
                    candidate = candidate_from_documents(body.candidate.policies, body.candidate.capabilities)
            except CandidateError:
                assert isinstance(body.candidate, ReplayCandidateVersion)
                raise NotFound("policy-set version", str(body.candidate.version)) from None
            except PolicySetError as exc:
                problems = [problem.model_dump() for problem in exc.problems]
                raise InvalidInput(
                    f"The candidate policy set does not compile ({len(problems)} problem(s); first: "
                    f"{exc.problems[0].message if exc.problems else 'unknown'}); fix the problems in details.errors.",
                    {"errors": problems},
                    code="invalid_policy",
                ) from None
            return await replay_on_server(
                store, service.settings, candidate, since=since, until=until, samples=body.samples, limit=body.limit
            )
    except ReplayBusy as busy:
        raise Conflict(str(busy), code="replay_busy") from None
