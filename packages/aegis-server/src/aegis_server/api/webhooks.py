"""`/api/v1/webhooks`: webhook endpoints — create (the signing secret shown once), list, get, change,
delete, rotate the secret, send a test event — and each endpoint's deliveries, with a retry of a failed one.

Scope `admin`. Never answers a secret but at creation and rotation. Deliveries are made by the server's
dispatcher (`aegis_server.notifications`) from the outbox.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from aegis_server.api.common import BODY_ERRORS, Admin, PageCursor, PageLimit, errors
from aegis_server.errors import ApiError, governance_error, not_found, validation_error
from aegis_server.store import InvalidCursor, Store, format_timestamp
from aegis_server.store.keys import UNSET
from aegis_server.store.outbox import EVENT_TYPES
from aegis_server.store.webhooks import WebhookDelivery, WebhookEndpoint, WebhookInputError

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

BodyFormat = Literal["standard", "slack"]
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A delivery's id (from the deliveries listing).")]
DeliveryStatus = Literal["pending", "delivered", "failed"]
_EVENT_TYPES_HELP = f'Event types to receive: any of {", ".join(EVENT_TYPES)}; or ["*"] for every type.'


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL with a host and no credentials.")
    event_types: list[str] = Field(min_length=1, max_length=20, description=_EVENT_TYPES_HELP)
    description: str = Field(default="", max_length=200)
    capability: str | None = Field(
        default=None, max_length=200, description="Only events of capabilities matching this glob (e.g. refunds.*)."
    )
    min_risk: float | None = Field(default=None, ge=0.0, le=1.0, description="Only events whose risk score is ≥ this.")
    format: BodyFormat = Field(default="standard", description="standard JSON, or a Slack incoming-webhook message.")
    enabled: bool = True


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=20, description=_EVENT_TYPES_HELP)
    description: str | None = Field(default=None, max_length=200)
    capability: str | None = Field(default=None, max_length=200, description="null removes the capability filter.")
    min_risk: float | None = Field(default=None, ge=0.0, le=1.0, description="null removes the risk filter.")
    format: BodyFormat | None = None
    enabled: bool | None = None


class DeliveryCounts(BaseModel):
    pending: int
    delivered: int
    failed: int


class WebhookInfo(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[str]
    capability: str | None
    min_risk: float | None
    format: BodyFormat
    enabled: bool
    created_at: str
    updated_at: str
    created_by: str | None
    deliveries: DeliveryCounts


class WebhookCreated(WebhookInfo):
    secret: str = Field(description="The signing secret (whsec_...), shown in this answer only.")


class WebhookList(BaseModel):
    items: list[WebhookInfo]


class WebhookSecret(BaseModel):
    id: str
    secret: str = Field(description="The new signing secret, shown in this answer only.")


class DeliveryInfo(BaseModel):
    id: int
    event_id: str = Field(description="The webhook-id header of every attempt.")
    event_type: str
    decision_id: str | None
    endpoint_id: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    created_at: str


class DeliveryPage(BaseModel):
    items: list[DeliveryInfo]
    next_cursor: str | None


def _store(request: Request) -> Store:
    store: Store | None = getattr(request.app.state, "store", None)
    if store is None:
        raise ApiError(503, "server_error", "unavailable", "The server is starting; retry shortly.")
    return store


StoreDep = Annotated[Store, Depends(_store)]


def _time(value: Any) -> str | None:
    return format_timestamp(value) if value is not None else None


def _info(endpoint: WebhookEndpoint) -> dict[str, Any]:
    counts = {status: endpoint.counts.get(status, 0) for status in ("pending", "delivered", "failed")}
    return {
        "id": endpoint.endpoint_id,
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "capability": endpoint.capability_glob,
        "min_risk": endpoint.min_risk,
        "format": endpoint.body_format,
        "enabled": endpoint.enabled,
        "created_at": format_timestamp(endpoint.created_at),
        "updated_at": format_timestamp(endpoint.updated_at),
        "created_by": endpoint.created_by,
        "deliveries": counts,
    }


def _delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.delivery_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "decision_id": delivery.decision_id or None,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at),
        "last_attempt_at": _time(delivery.last_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered_at": _time(delivery.delivered_at),
        "created_at": format_timestamp(delivery.created_at),
    }


def _invalid(exc: WebhookInputError) -> ApiError:
    details: dict[str, Any] = {"field": exc.field}
    if exc.field == "event_types":
        details["known_event_types"] = list(EVENT_TYPES)
    return validation_error(422, "invalid_request", f"{exc.field}: {exc}", details)


async def _endpoint(store: Store, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await store.webhooks.get_endpoint(endpoint_id)
    if endpoint is None:
        raise not_found("webhook endpoint", endpoint_id)
    return endpoint


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=201,
    summary="Create a webhook endpoint (its signing secret is in this answer only)",
    description="Deliveries are signed per Standard Webhooks with the secret; verify them with any Standard "
    "Webhooks library. An unknown event type is refused (422) with the list of known ones.",
    responses=errors(*BODY_ERRORS),
)
async def create_webhook(body: WebhookCreate, store: StoreDep, principal: Admin) -> dict[str, Any]:
    try:
        endpoint, secret = await store.webhooks.create_endpoint(
            body.url,
            body.event_types,
            description=body.description,
            capability_glob=body.capability,
            min_risk=body.min_risk,
            body_format=body.format,
            enabled=body.enabled,
            by=principal.key_id,
        )
    except WebhookInputError as exc:
        raise _invalid(exc) from None
    return {**_info(endpoint), "secret": secret}


@router.get("", response_model=WebhookList, summary="List webhook endpoints (never the secrets)", responses=errors())
async def list_webhooks(store: StoreDep, _: Admin) -> dict[str, Any]:
    return {"items": [_info(endpoint) for endpoint in await store.webhooks.list_endpoints()]}


@router.get("/{endpoint_id}", response_model=WebhookInfo, summary="Get one webhook endpoint", responses=errors(404))
async def get_webhook(endpoint_id: str, store: StoreDep, _: Admin) -> dict[str, Any]:
    return _info(await _endpoint(store, endpoint_id))


@router.patch(
    "/{endpoint_id}",
    response_model=WebhookInfo,
    summary="Change a webhook endpoint",
    description="Only the fields sent change; `capability: null` / `min_risk: null` remove that filter. "
    "Disabling an endpoint holds its pending deliveries until it is enabled again.",
    responses=errors(404, *BODY_ERRORS),
)
async def update_webhook(endpoint_id: str, body: WebhookUpdate, store: StoreDep, principal: Admin) -> dict[str, Any]:
    sent = body.model_fields_set
    if not sent:
        raise validation_error(
            422,
            "invalid_request",
            "Nothing to change: send any of url, event_types, description, capability, min_risk, format, enabled.",
            {"field": "(root)"},
        )
    for field in ("url", "event_types", "description", "format", "enabled"):
        if field in sent and getattr(body, field) is None:
            raise validation_error(
                422, "invalid_request", f"{field}: may not be null; leave it out to keep it", {"field": field}
            )

    def given(field: str) -> Any:
        return getattr(body, field) if field in sent else UNSET

    try:
        endpoint = await store.webhooks.update_endpoint(
            endpoint_id,
            url=given("url"),
            event_types=given("event_types"),
            description=given("description"),
            capability_glob=given("capability"),
            min_risk=given("min_risk"),
            body_format=given("format"),
            enabled=given("enabled"),
            by=principal.key_id,
        )
    except WebhookInputError as exc:
        raise _invalid(exc) from None
    if endpoint is None:
        raise not_found("webhook endpoint", endpoint_id)
    return _info(await _endpoint(store, endpoint_id))


@router.delete(
    "/{endpoint_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook endpoint and its deliveries",
    description="Pending deliveries to it are dropped, never sent.",
    responses=errors(404),
)
async def delete_webhook(endpoint_id: str, store: StoreDep, principal: Admin) -> Response:
    if not await store.webhooks.delete_endpoint(endpoint_id, by=principal.key_id):
        raise not_found("webhook endpoint", endpoint_id)
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=WebhookSecret,
    summary="Give a webhook endpoint a new signing secret (in this answer only)",
    description="Attempts from now on are signed with the new secret; the old one stops working at once.",
    responses=errors(404),
)
async def rotate_webhook_secret(endpoint_id: str, store: StoreDep, principal: Admin) -> dict[str, Any]:
    secret = await store.webhooks.rotate_secret(endpoint_id, by=principal.key_id)
    if secret is None:
        raise not_found("webhook endpoint", endpoint_id)
    return {"id": endpoint_id, "secret": secret}


@router.post(
    "/{endpoint_id}/test",
    response_model=DeliveryInfo,
    status_code=202,
    summary="Queue a webhook.test event to this endpoint only",
    description="Delivered like any event (signed, retried); its filter does not apply. Follow it in the "
    "endpoint's deliveries.",
    responses=errors(404),
)
async def test_webhook(endpoint_id: str, store: StoreDep, _: Admin) -> dict[str, Any]:
    delivery = await store.webhooks.queue_test_event(endpoint_id)
    if delivery is None:
        raise not_found("webhook endpoint", endpoint_id)
    return _delivery(delivery)


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=DeliveryPage,
    summary="An endpoint's deliveries, newest first",
    responses=errors(404, 422),
)
async def list_webhook_deliveries(
    endpoint_id: str,
    store: StoreDep,
    _: Admin,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> dict[str, Any]:
    await _endpoint(store, endpoint_id)
    try:
        items, next_cursor = await store.webhooks.list_deliveries(
            endpoint_id, status=status, limit=limit, cursor=cursor
        )
    except InvalidCursor as exc:
        raise validation_error(422, "invalid_request", f"cursor: {exc}", {"field": "cursor"}) from None
    return {"items": [_delivery(item) for item in items], "next_cursor": next_cursor}


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/retry",
    response_model=DeliveryInfo,
    summary="Send a failed delivery again (the same webhook-id)",
    description="The delivery goes back to pending with a fresh retry schedule. Only a failed delivery can be "
    "retried (409 `delivery_not_failed` otherwise).",
    responses=errors(404, 409),
)
async def retry_webhook_delivery(
    endpoint_id: str, delivery_id: DeliveryId, store: StoreDep, _: Admin
) -> dict[str, Any]:
    delivery = await store.webhooks.retry_delivery(endpoint_id, delivery_id)
    if delivery is not None:
        return _delivery(delivery)
    existing = await store.webhooks.get_delivery(endpoint_id, delivery_id)
    if existing is None:
        raise not_found("webhook delivery", str(delivery_id))
    raise governance_error(
        409,
        "delivery_not_failed",
        f"Delivery {delivery_id} is {existing.status}; only a failed delivery can be retried.",
        {"status": existing.status},
    )


__all__ = ["router"]
