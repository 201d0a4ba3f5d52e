"""Policies > Replay (scope policies:manage, or admin): re-decide the stored proposals of a window under a
recorded version (default: the latest) and show the report — totals, the outcome transitions with the rules
responsible and sample decisions, what could not be replayed and why, and the proposals by the version they
were decided under. It runs through the API's service path (`replay_on_server`: a worker thread, the
`replay_max_proposals` cap) and holds the same one-replay-at-a-time slot."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aegis_server.console.policy_versions_view import parse_version
from aegis_server.console.rendering import render
from aegis_server.console.sessions import ConsoleUser, console_form, csrf_protected, signed_in
from aegis_server.engine import PolicySetError
from aegis_server.governance.service import GovernanceService
from aegis_server.replay import (
    DEFAULT_SAMPLES,
    Candidate,
    CandidateError,
    ReplayBusy,
    WindowError,
    candidate_from_version,
    latest_candidate,
    one_replay_at_a_time,
    replay_on_server,
    replay_window,
)
from aegis_server.security import SCOPE_POLICIES

__all__ = ["DEFAULT_SINCE", "MAX_SAMPLES", "router"]

router = APIRouter()
DEFAULT_SINCE = "7d"
MAX_SAMPLES = 100
_MAX_FIELD = 64
_FIELDS = ("since", "until", "version", "samples")


class _Refused(Exception):
    """The form cannot be replayed: `message` says what to fix; `status` is the page's HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _page(
    request: Request, values: dict[str, str], *, report: Any = None, problem: str | None = None
) -> dict[str, Any]:
    settings = request.app.state.settings
    return {
        "values": values,
        "report": report,
        "problem": problem,
        "max_proposals": settings.replay_max_proposals,
        "timeout_seconds": f"{settings.replay_timeout_seconds:g}",
        "max_samples": MAX_SAMPLES,
    }


@router.get("/policies/replay", response_class=HTMLResponse)
async def replay_form(
    request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_POLICIES))]
) -> HTMLResponse:
    values = {"since": DEFAULT_SINCE, "until": "", "version": "", "samples": str(DEFAULT_SAMPLES)}
    return render(request, "replay.html", _page(request, values), user=user)


def _samples(text: str) -> int:
    value = text.strip()
    if not value:
        return DEFAULT_SAMPLES
    if not (value.isascii() and value.isdigit()) or len(value) > 4 or int(value) > MAX_SAMPLES:
        raise _Refused(400, f"Samples must be a whole number from 0 to {MAX_SAMPLES}, not {value[:20]!r}.")
    return int(value)


async def _candidate(service: GovernanceService, text: str) -> Candidate:
    value = text.strip()
    try:
        if not value:
            return await latest_candidate(service.store)
        version = parse_version(value)
        if version is None:
            raise _Refused(400, f"Candidate version must be a version number (1, 2, ...), not {value[:20]!r}.")
        return await candidate_from_version(service.store, version)
    except CandidateError as error:
        message = str(error).replace("`policy history`", "Policies > History")
        raise _Refused(404, f"Cannot replay: {message}.") from None
    except PolicySetError as error:
        first = error.problems[0].message if error.problems else "it does not compile"
        raise _Refused(422, f"The candidate version does not compile with this server ({first}).") from None


@router.post("/policies/replay", response_class=HTMLResponse)
async def replay(
    request: Request, user: Annotated[ConsoleUser, Depends(csrf_protected(SCOPE_POLICIES))]
) -> HTMLResponse:
    service: GovernanceService = request.app.state.service
    fields = await console_form(request)
    values = {name: fields.get(name, "")[:_MAX_FIELD] for name in _FIELDS}
    try:
        if not values["since"].strip():
            raise _Refused(400, f"Give 'since': a duration back from now (e.g. {DEFAULT_SINCE}) or an RFC 3339 time.")
        until = values["until"].strip() or None
        try:
            since_at, until_at = replay_window(values["since"], until, datetime.now(timezone.utc), ("since", "until"))
        except WindowError as error:
            raise _Refused(400, f"{str(error)[:1].upper()}{str(error)[1:]}.") from None
        samples = _samples(values["samples"])
        try:
            with one_replay_at_a_time():
                candidate = await _candidate(service, values["version"])
                report = await replay_on_server(
                    service.store, service.settings, candidate, since=since_at, until=until_at, samples=samples
                )
        except ReplayBusy as busy:
            raise _Refused(409, str(busy)) from None
    except _Refused as refused:
        page = _page(request, values, problem=refused.message)
        return render(request, "replay.html", page, user=user, status_code=refused.status)
    return render(request, "replay.html", _page(request, values, report=report), user=user)
