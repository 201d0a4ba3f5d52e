"""The webhooks page (admin keys): every endpoint with its filter and its deliveries by status, and the
most recent failed deliveries with their last error and a Retry button (the same webhook-id is sent
again). Endpoints are managed with the API and the CLI; an endpoint's URL is shown to its origin only,
since the rest may be a credential (a Slack webhook's path is)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response

from aegis_server.console.flash import set_flash
from aegis_server.console.rendering import render
from aegis_server.console.sessions import ConsoleUser, csrf_protected, signed_in
from aegis_server.security import SCOPE_ADMIN
from aegis_server.store import Store
from aegis_server.store.webhooks import WebhookDelivery, WebhookEndpoint

__all__ = ["EndpointView", "router", "shown_url"]

router = APIRouter()
_RECENT_FAILURES = 50
_PAGE = "/console/webhooks"


def shown_url(url: str) -> str:
    """The URL up to its host and port, with "/…" for a path (which may be a credential)."""
    scheme, _, rest = url.partition("://")
    origin = rest.split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{origin}" + ("/…" if len(rest) > len(origin) else "")


@dataclass(frozen=True)
class EndpointView:
    endpoint: WebhookEndpoint
    url: str
    filter: str
    pending: int
    delivered: int
    failed: int


def _view(endpoint: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        endpoint=endpoint,
        url=shown_url(endpoint.url),
        filter=endpoint.filter_text() or "none",
        pending=endpoint.counts.get("pending", 0),
        delivered=endpoint.counts.get("delivered", 0),
        failed=endpoint.counts.get("failed", 0),
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_ADMIN))]) -> Response:
    store: Store = request.app.state.store
    endpoints = [_view(endpoint) for endpoint in await store.webhooks.list_endpoints()]
    failures: list[WebhookDelivery] = await store.webhooks.failed_deliveries(limit=_RECENT_FAILURES)
    urls = {view.endpoint.endpoint_id: view.url for view in endpoints}
    return render(
        request,
        "webhooks.html",
        {"endpoints": endpoints, "failures": failures, "urls": urls, "limit": _RECENT_FAILURES},
        user=user,
    )


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry")
async def retry_delivery(
    request: Request,
    endpoint_id: str,
    delivery_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    user: Annotated[ConsoleUser, Depends(csrf_protected(SCOPE_ADMIN))],
) -> Response:
    store: Store = request.app.state.store
    response = RedirectResponse(_PAGE, status_code=303)
    retried = await store.webhooks.retry_delivery(endpoint_id, delivery_id)
    if retried is not None:
        await set_flash(
            request,
            response,
            "status",
            f"Delivery {delivery_id} is queued again; it is sent with the same webhook-id ({retried.event_id}).",
        )
        return response
    existing = await store.webhooks.get_delivery(endpoint_id, delivery_id)
    if existing is None:
        text = f"There is no delivery {delivery_id} of this endpoint (it may have been deleted)."
    else:
        text = f"Delivery {delivery_id} was not retried: it is {existing.status}, and only a failed delivery can be."
    await set_flash(request, response, "alert", text)
    return response
