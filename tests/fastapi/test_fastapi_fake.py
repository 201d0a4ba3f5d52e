"""The governed dependency against the SDK's fake platform: failures, fail-open, overrides, custom builders."""

import logging
from typing import Annotated, Any

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi_support import BOT, asgi_client, build_app, current_actor

from aegis_fastapi import DECISION_HEADER, Aegis, AegisRefusal
from aegis_sdk.testing import FakePlatform

REFUND = {"amount": 10, "currency": "EUR"}


def governed(fake: FakePlatform, **options: Any) -> tuple[Aegis, FastAPI]:
    aegis = Aegis(actor=current_actor, client=fake.async_client(**options.pop("client_options", {})), **options)
    return aegis, build_app(aegis)


async def test_platform_down_fails_closed_with_503_and_retry_after() -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=2)
    _, app = governed(fake, client_options={"retries": 1})
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    detail = response.json()["detail"]
    assert detail["code"] == "governance_unavailable" and detail["decision_id"] is None
    assert detail["request_id"].startswith("req_")
    assert fake.proposals == []


async def test_platform_errors_after_retries_fail_closed_too() -> None:
    fake = FakePlatform()
    fake.fail_next(500, times=2)
    _, app = governed(fake, client_options={"retries": 1}, retry_after=30)
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"


async def test_fail_open_allows_a_degraded_decision_and_logs_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=1)
    aegis, app = governed(fake, fail_open=True, client_options={"retries": 0})
    with caplog.at_level(logging.WARNING, logger="aegis_fastapi"):
        async with asgi_client(app) as http:
            response = await http.post(
                "/orders/A-1/refunds", json=REFUND, headers={**BOT, "X-Request-ID": "req-from-gateway-7"}
            )
    assert response.status_code == 200
    assert response.json()["degraded"] is True
    assert response.headers[DECISION_HEADER].startswith("degraded_")
    (record,) = [r for r in caplog.records if r.name == "aegis_fastapi"]
    assert record.levelno == logging.WARNING
    assert "req-from-gateway-7" in record.getMessage() and "fail_open" in record.getMessage()
    await aegis.drain()
    assert fake.executions == {}  # the platform never saw the degraded decision
    assert aegis.client.report_stats.queued == 0


async def test_fail_open_does_not_cover_a_rate_limit() -> None:
    """A 429 is the platform answering: a caller that exhausts its own key's limit must not get past governance."""
    fake = FakePlatform()
    fake.fail_next(429, times=1)
    _, app = governed(fake, fail_open=True, client_options={"retries": 0})
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 503, response.text
    assert response.json()["detail"]["decision_id"] is None
    assert "degraded" not in response.text


async def test_fail_open_does_not_cover_misconfiguration() -> None:
    fake = FakePlatform(api_key="aegis_sk_right")
    aegis = Aegis(actor=current_actor, client=fake.async_client(api_key="aegis_sk_wrong"), fail_open=True)
    async with asgi_client(build_app(aegis)) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "governance_misconfigured"


async def test_client_can_be_overridden_with_dependency_overrides() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "DENY", reason="refunds are frozen")
    aegis = Aegis(actor=current_actor)  # no client: the override supplies one
    app = build_app(aegis)
    client = fake.async_client()
    app.dependency_overrides[aegis.get_client] = lambda: client
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 403
    assert response.json()["detail"]["reason"] == "refunds are frozen"


async def test_without_a_client_the_error_says_how_to_wire_one() -> None:
    aegis = Aegis(actor=current_actor)
    with pytest.raises(RuntimeError, match="lifespan"):
        aegis.get_client()


async def test_actor_and_context_come_from_the_apps_dependencies() -> None:
    fake = FakePlatform()

    def context() -> dict[str, Any]:
        return {"session_id": "sess-9", "metadata": {"tenant": "acme"}}

    aegis = Aegis(actor=current_actor, context=context, client=fake.async_client())
    async with asgi_client(build_app(aegis)) as http:
        unauthenticated = await http.post("/orders/A-1/refunds", json=REFUND)
        nobody = await http.post("/orders/A-1/refunds", json=REFUND, headers={"Authorization": "Bearer nobody"})
        forged = await http.post(
            "/orders/A-1/refunds", json=REFUND, headers={**BOT, "X-Actor-Id": "admin", "X-Agent-Id": "admin"}
        )
    assert unauthenticated.status_code == 401  # the app's own auth answered
    assert nobody.status_code == 401 and nobody.json()["detail"]["code"] == "actor_required"
    assert forged.status_code == 200
    (proposal,) = fake.proposals
    assert proposal.actor.id == "support-bot" and proposal.actor.type == "ai-agent"
    assert proposal.context.session_id == "sess-9"
    assert proposal.context.metadata["tenant"] == "acme"
    assert proposal.context.metadata["route"] == "/orders/{order_id}/refunds"
    assert proposal.action.parameters == {"order_id": "A-1", "amount": 10, "currency": "EUR"}


async def test_a_fixed_actor_serves_apps_without_users() -> None:
    fake = FakePlatform()
    aegis = Aegis(actor={"id": "billing-service", "type": "automation"}, client=fake.async_client())
    async with asgi_client(build_app(aegis)) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND)
    assert response.status_code == 200
    assert fake.proposals[0].actor.id == "billing-service"


async def test_query_parameters_are_governed_and_sync_endpoints_work() -> None:
    fake = FakePlatform()
    fake.script("database.query", "ALLOW", constraints={"max_rows": 5})
    _, app = governed(fake)
    async with asgi_client(app) as http:
        response = await http.post("/queries", params={"query": "SELECT 1", "database": "staging"}, headers=BOT)
        sync = await http.post("/sync/orders/A-2/refunds", json=REFUND, headers=BOT)
    assert response.json() == {"ran": "SELECT 1", "max_rows": 5}
    assert sync.status_code == 200
    assert fake.assert_proposed("database.query", query="SELECT 1", database="staging")


async def test_capability_and_parameters_can_be_computed_per_route() -> None:
    fake = FakePlatform()
    _, app = governed(fake)
    async with asgi_client(app) as http:
        response = await http.post("/jobs/reindex", json={"name": "nightly"}, headers=BOT)
    assert response.status_code == 200
    proposal = fake.assert_proposed("jobs.reindex")
    assert proposal.action.parameters == {"job": "nightly", "kind": "reindex", "by": "custom"}


async def test_the_same_name_with_two_values_is_refused_before_proposing() -> None:
    fake = FakePlatform()
    _, app = governed(fake)
    async with asgi_client(app) as http:
        same = await http.post("/items/o-1", json={"order_id": "o-1", "n": 1}, headers=BOT)
        different = await http.post("/items/o-1", json={"order_id": "o-2"}, headers=BOT)
    assert same.status_code == 200
    assert different.status_code == 422
    assert different.json()["detail"]["code"] == "invalid_parameters"
    assert "'order_id'" in different.json()["detail"]["message"]
    assert len(fake.proposals) == 1


async def test_expired_review_and_bad_confirmation_headers() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "ESCALATE")
    _, app = governed(fake)
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
        decision_id = first.json()["detail"]["decision_id"]
        fake.expire(decision_id)
        expired = await http.post(
            "/orders/A-1/refunds", json=REFUND, headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
        malformed = await http.post("/orders/A-1/refunds", json=REFUND, headers={**BOT, "AEGIS-Confirmation": "yes"})
        unknown = await http.post(
            "/orders/A-1/refunds", json=REFUND, headers={**BOT, "AEGIS-Confirmation": "dec_doesnotexist"}
        )
        fake.script("payments.refund", "ALLOW")
        allowed = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
        needless = await http.post(
            "/orders/A-1/refunds",
            json=REFUND,
            headers={**BOT, "AEGIS-Confirmation": allowed.headers[DECISION_HEADER]},
        )
    assert expired.status_code == 403 and expired.json()["detail"]["code"] == "review_expired"
    assert malformed.status_code == 409 and malformed.json()["detail"]["code"] == "confirmation_invalid"
    assert unknown.status_code == 409 and "No decision" in unknown.json()["detail"]["message"]
    assert needless.status_code == 409 and "not awaiting confirmation" in needless.json()["detail"]["message"]


async def test_approved_escalation_on_the_fake() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "ESCALATE")
    _, app = governed(fake)
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
        fake.approve(first.json()["detail"]["decision_id"])
        repeat = {**BOT, "AEGIS-Confirmation": first.json()["detail"]["decision_id"]}
        approved = await http.post("/orders/A-1/refunds", json=REFUND, headers=repeat)
    assert approved.status_code == 200
    assert approved.json()["parent"] == first.json()["detail"]["decision_id"]


async def test_reporting_can_be_switched_off_and_its_failures_never_reach_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakePlatform()
    aegis, app = governed(fake, report_execution=False)
    async with asgi_client(app) as http:
        assert (await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)).status_code == 200
    await aegis.drain()
    assert fake.executions == {}

    # A full queue sends the report on the request's path: its failure is logged, the answer stays a 200.
    # (A report sent in the background fails in the client's reporter: test_fastapi_background_reports.py.)
    fake = FakePlatform()
    aegis, app = governed(fake, client_options={"retries": 0})
    aegis.client._reporter.queue.capacity = 0  # type: ignore[attr-defined]
    fake.fail_next(500, times=1, path="*/execution")
    with caplog.at_level(logging.WARNING, logger="aegis_fastapi"):
        async with asgi_client(app) as http:
            response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
        await aegis.drain()
    assert response.status_code == 200
    assert fake.executions == {}
    assert aegis.client.report_stats.synchronous == 1
    assert any("could not report the execution" in r.getMessage() for r in caplog.records)


async def test_refusals_can_be_rendered_your_way() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "DENY", reason="no")

    def render(refusal: AegisRefusal) -> PlainTextResponse:
        return PlainTextResponse(f"{refusal.code} {refusal.error_detail.decision_id}", status_code=418)

    _, app = governed(fake, error_response=render)
    async with asgi_client(app) as http:
        response = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
    assert response.status_code == 418
    assert response.text == f"governance_denied {fake.last_decision.decision_id}"


async def test_custom_confirmation_header() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "REQUIRE_CONFIRMATION")
    _, app = governed(fake, confirmation_header="X-Confirm-Decision")
    async with asgi_client(app) as http:
        first = await http.post("/orders/A-1/refunds", json=REFUND, headers=BOT)
        assert first.json()["detail"]["confirmation_header"] == "X-Confirm-Decision"
        repeat = {**BOT, "X-Confirm-Decision": first.json()["detail"]["decision_id"]}
        second = await http.post("/orders/A-1/refunds", json=REFUND, headers=repeat)
    assert second.status_code == 200


def test_configuration_mistakes_are_caught_at_once() -> None:
    with pytest.raises(TypeError, match="actor"):
        Aegis(actor=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        Aegis(actor="")
    with pytest.raises(ValueError, match="header name"):
        Aegis(actor="svc", confirmation_header="bad header")
    with pytest.raises(ValueError, match="empty"):
        Aegis(actor="svc").require("")


async def test_credentials_of_the_auth_dependency_never_become_parameters() -> None:
    from fastapi import Depends, Query
    from fastapi.security import APIKeyQuery

    from aegis_fastapi import Decision

    fake = FakePlatform()
    scheme = APIKeyQuery(name="key")

    def auth(token: str = Query(), key: str = Depends(scheme)) -> dict[str, str]:
        return {"id": f"user-{len(token)}"}

    def paging(limit: int = 10) -> int:
        return limit

    aegis = Aegis(actor=auth, client=fake.async_client())
    app = aegis.install(FastAPI())

    @app.get("/reports/{year}")
    async def report(
        year: int,
        decision: Annotated[Decision, Depends(aegis.require("reports.read"))],
        limit: Annotated[int, Depends(paging)],
        _: Annotated[str, Depends(scheme)],
    ) -> dict[str, int]:
        return {"year": year, "limit": limit}

    async with asgi_client(app) as http:
        response = await http.get("/reports/2025", params={"token": "s3cret", "key": "k3y", "limit": 5})
    assert response.json() == {"year": 2025, "limit": 5}
    assert fake.proposals[0].action.parameters == {"year": 2025, "limit": 5}
    assert "s3cret" not in str(fake.requests[0].json) and "k3y" not in str(fake.requests[0].json)
