"""Rolling the policy set back to a version from its console page (scope policies:manage, or admin; CSRF
protected, and only once the "I understand" box is ticked). The rollback is the API's
(`PolicyManager.rollback`, audited as `policy_rollback`, by the signed-in key); the result page lists what
was restored and removed and, first, the file-defined items the operator must restore from the files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aegis_server.console.flash import set_flash
from aegis_server.console.headers import see_other
from aegis_server.console.policy_versions_view import parse_version
from aegis_server.console.rendering import error_page, render
from aegis_server.console.sessions import ConsoleUser, console_form, csrf_protected
from aegis_server.governance.errors import InvalidInput, NotFound, Unavailable
from aegis_server.governance.service import GovernanceService
from aegis_server.security import SCOPE_POLICIES

__all__ = ["CONFIRM_FIELD", "router"]

router = APIRouter()
CONFIRM_FIELD = "understand"


@router.post("/policies/versions/{number}/rollback")
async def roll_back(
    request: Request, number: str, user: Annotated[ConsoleUser, Depends(csrf_protected(SCOPE_POLICIES))]
) -> Response:
    service: GovernanceService = request.app.state.service
    version = parse_version(number)
    if version is None:
        return error_page(request, 404, f"There is no policy-set version {number[:20]!r} to roll back to.", user=user)
    fields = await console_form(request)
    if fields.get(CONFIRM_FIELD) != "yes":
        response = see_other(f"/console/policies/versions/{version}#rollback-heading")
        await set_flash(
            request,
            response,
            "alert",
            f"Nothing was rolled back: tick \u201cI understand\u201d to confirm the rollback to version {version}.",
        )
        return response
    try:
        result = await service.policies.rollback(version, by=user.key_id)
    except NotFound as error:
        return error_page(request, 404, error.message, user=user)
    except InvalidInput as error:
        problems = [str(problem.get("message", "")) for problem in error.details.get("errors", [])]
        message = error.message.replace("details.errors", "the list below")
        return render(
            request,
            "error.html",
            {"title": "Not rolled back", "message": message, "problems": problems},
            user=user,
            status_code=422,
        )
    except Unavailable as error:
        return error_page(request, 503, error.message, user=user)
    file_policies = [item for item in result.file_defined if item.kind == "policy"]
    file_capabilities = [item for item in result.file_defined if item.kind == "capability"]
    return render(
        request,
        "policy_rollback.html",
        {"result": result, "file_policies": file_policies, "file_capabilities": file_capabilities},
        user=user,
    )
