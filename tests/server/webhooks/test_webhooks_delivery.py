"""The dispatcher against a real receiver: signed bodies, the events of decisions and reviews, filters,
a receiver that is down and comes back, schedules exhausted, manual retries, the Slack body."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from aegis_server.inprocess import InProcessServer
from aegis_server.notifications import WebhookDispatcher

from .conftest import PUBLIC_URL, create_endpoint, denial, dispatching, escalation, proposal, propose
from .receiver import Received, Receiver


async def _deliveries(client: httpx.AsyncClient, endpoint_id: str, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    response = await client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_signature_verifies_and_a_tampered_body_fails(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url, event_types=["decision.escalated"])
    async with dispatching(server):
        decision = await propose(client, escalation())
        [request] = await receiver.wait_for(lambda got: len(got) == 1)
        [delivery] = await _wait_status(client, endpoint["id"], "delivered", 1)
    body = request.verify(endpoint["secret"])
    assert body["type"] == "decision.escalated"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    data = body["data"]
    assert data["decision_id"] == decision["decision_id"]
    assert (data["outcome"], data["capability"]) == ("ESCALATE", "payments.transfer")
    assert data["actor"] == {"id": "support-bot-1", "type": "ai-agent"}
    assert data["console_url"] == f"{PUBLIC_URL}/console/decisions/{decision['decision_id']}"
    assert "5000" not in request.body.decode()  # parameter values never leave
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("aegis-server/")
    assert request.headers["webhook-id"].startswith("msg_")

    tampered = request.body.replace(b"payments.transfer", b"payments.refunded")
    with pytest.raises(WebhookVerificationError):
        Received(request.path, request.headers, tampered).verify(endpoint["secret"])
    with pytest.raises(WebhookVerificationError):
        request.verify("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")  # another endpoint's secret
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == ("delivered", 1, 200)
    assert delivery["event_id"] == request.webhook_id
    metrics = (await client.get("/metrics")).text
    assert 'aegis_webhook_deliveries_total{result="delivered"} 1.0' in metrics


async def test_events_of_decisions_and_reviews(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url)
    reviewer = server.async_http_client(await server.acreate_key("reviewer", ["governance:review"]))
    async with dispatching(server):
        approved = await propose(client, escalation())
        expiring = await propose(client, escalation(7000))
        denied = await propose(client, denial())
        allowed = await propose(client, proposal("payments.transfer", amount=10))
        assert allowed["outcome"] == "ALLOW"
        review = await reviewer.post(
            f"/api/v1/governance/decisions/{approved['decision_id']}/review", json={"approve": True, "note": "ok <b>"}
        )
        assert review.status_code == 200, review.text
        later = datetime.now(timezone.utc) + timedelta(seconds=3600)
        assert await server.service.expire_due(later) == [expiring["decision_id"]]
        requests = await receiver.wait_for(lambda got: len(got) == 5)
    seen = sorted(
        (r.verify(endpoint["secret"])["type"], r.verify(endpoint["secret"])["data"]["decision_id"]) for r in requests
    )
    assert seen == sorted(
        [
            ("decision.escalated", approved["decision_id"]),
            ("decision.escalated", expiring["decision_id"]),
            ("decision.denied", denied["decision_id"]),
            ("review.resolved", approved["decision_id"]),
            ("review.expired", expiring["decision_id"]),
        ]
    )
    resolved = next(
        r.verify(endpoint["secret"]) for r in requests if r.verify(endpoint["secret"])["type"] == "review.resolved"
    )
    assert resolved["data"]["review"]["status"] == "approved"
    assert resolved["data"]["review"]["note"] == "ok <b>"
    assert len(set(receiver.ids())) == 5


async def test_filters_select_events(server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver) -> None:
    await create_endpoint(client, receiver.url + "/escalated", event_types=["decision.escalated"])
    await create_endpoint(client, receiver.url + "/payments", capability="payments.*")
    await create_endpoint(client, receiver.url + "/risky", min_risk=0.5)
    disabled = await create_endpoint(client, receiver.url + "/disabled", enabled=False)
    await create_endpoint(client, receiver.url + "/all")
    async with dispatching(server):
        escalated = await propose(client, escalation())
        denied = await propose(client, denial())
        assert escalated["risk_score"] < 0.5 <= denied["risk_score"]
        # "/all" gets both; once it has, the fan-out of both events is committed and delivered elsewhere too
        await receiver.wait_for(lambda got: sum(r.path == "/hook/all" for r in got) == 2)
        await receiver.wait_for(lambda got: len(got) == 2 + 1 + 1 + 1)
    by_path: dict[str, set[str]] = {}
    for request in receiver.received():
        by_path.setdefault(request.path, set()).add(json.loads(request.body)["data"]["decision_id"])
    assert by_path == {
        "/hook/all": {escalated["decision_id"], denied["decision_id"]},
        "/hook/escalated": {escalated["decision_id"]},
        "/hook/payments": {escalated["decision_id"]},
        "/hook/risky": {denied["decision_id"]},
    }
    # A disabled endpoint is paused: its events wait for it, and arrive once it is enabled again.
    assert (await client.get(f"/api/v1/webhooks/{disabled['id']}")).json()["deliveries"]["pending"] == 2
    enabled = await client.patch(f"/api/v1/webhooks/{disabled['id']}", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text
    async with dispatching(server):
        await receiver.wait_for(lambda got: sum(r.path == "/hook/disabled" for r in got) == 2)
    paused = {json.loads(r.body)["data"]["decision_id"] for r in receiver.received() if r.path == "/hook/disabled"}
    assert paused == {escalated["decision_id"], denied["decision_id"]}


async def test_receiver_down_then_up_gets_every_event_once_with_stable_ids(
    make_server: Any, receiver: Receiver
) -> None:
    async with make_server(webhook_retry_schedule_seconds=(0.05,) * 40) as server:
        client = server.async_http_client()
        endpoint = await create_endpoint(client, receiver.url)
        failing = {"on": True}
        receiver.answer = lambda _: (500, {}) if failing["on"] else (200, {})
        async with dispatching(server):
            first = [await propose(client, escalation(2000 + i)) for i in range(3)]
            await receiver.wait_for(lambda got: len(got) >= 6)  # each tried at least twice while answering 500
            receiver.stop()  # now the port is closed: connections refused
            second = [await propose(client, denial()) for _ in range(2)]
            await _wait_attempts(client, endpoint["id"], 2)
            failing["on"] = False
            receiver.start()
            await receiver.wait_for(lambda got: len({r.webhook_id for r in got if r is not None}) >= 5)
            await _wait_status(client, endpoint["id"], "delivered", 5)
        deliveries = await _deliveries(client, endpoint["id"])
    assert {d["status"] for d in deliveries} == {"delivered"}
    delivered_ids = {d["event_id"] for d in deliveries}
    assert delivered_ids == set(receiver.ids())  # nothing sent under another id
    decision_ids = {json.loads(r.body)["data"]["decision_id"] for r in receiver.received()}
    assert decision_ids == {d["decision_id"] for d in first + second}
    for webhook_id in delivered_ids:  # every retry of an event carried the same id, and the same bytes
        bodies = {r.body for r in receiver.received() if r.webhook_id == webhook_id}
        assert len(bodies) == 1


async def _wait_attempts(client: httpx.AsyncClient, endpoint_id: str, attempts: int) -> None:
    await _poll(client, endpoint_id, lambda items: bool(items) and all(d["attempts"] >= attempts for d in items))


async def _wait_status(client: httpx.AsyncClient, endpoint_id: str, status: str, count: int) -> list[dict[str, Any]]:
    return await _poll(client, endpoint_id, lambda items: sum(d["status"] == status for d in items) >= count)


async def _poll(client: httpx.AsyncClient, endpoint_id: str, done: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    import asyncio

    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while loop.time() < give_up:
        items = await _deliveries(client, endpoint_id)
        if done(items):
            return items
        await asyncio.sleep(0.02)
    raise AssertionError(f"deliveries did not reach the expected state: {items}")


async def test_schedule_exhausted_is_failed_and_retry_resends_the_same_id(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url, event_types=["decision.denied"])
    receiver.answer = lambda _: (503, {})
    async with dispatching(server):
        await propose(client, denial())
        [failed] = await _wait_status(client, endpoint["id"], "failed", 1)
        assert failed["attempts"] == 4  # the first attempt and the three retries of the schedule
        assert (failed["last_status_code"], failed["last_error"]) == (503, "HTTP 503")
        assert len(receiver.received()) == 4
        info = (await client.get(f"/api/v1/webhooks/{endpoint['id']}")).json()
        assert info["deliveries"] == {"pending": 0, "delivered": 0, "failed": 1}

        receiver.answer = lambda _: (204, {})
        retried = await client.post(f"/api/v1/webhooks/{endpoint['id']}/deliveries/{failed['id']}/retry")
        assert retried.status_code == 200, retried.text
        assert (retried.json()["status"], retried.json()["event_id"]) == ("pending", failed["event_id"])
        await _wait_status(client, endpoint["id"], "delivered", 1)
    assert set(receiver.ids()) == {failed["event_id"]}
    assert len(receiver.received()) == 5


async def test_gone_fails_at_once_and_retry_after_is_honoured(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    gone = await create_endpoint(client, receiver.url + "/gone", event_types=["decision.denied"])
    slow = await create_endpoint(client, receiver.url + "/slow", event_types=["decision.denied"])
    receiver.answer = lambda request: (410, {}) if request.path.endswith("gone") else (429, {"Retry-After": "120"})
    async with dispatching(server):
        await propose(client, denial())
        await _wait_status(client, gone["id"], "failed", 1)
        [pending] = await _poll(client, slow["id"], lambda items: bool(items) and items[0]["attempts"] == 1)
    assert pending["status"] == "pending"
    due = datetime.fromisoformat(pending["next_attempt_at"])
    assert due - datetime.fromisoformat(pending["last_attempt_at"]) >= timedelta(seconds=100)  # not the 0.05 s
    assert len(receiver.received()) == 2


async def test_redirects_are_not_followed(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url, event_types=["decision.denied"])
    receiver.answer = lambda _: (307, {"Location": "http://127.0.0.1:1/elsewhere"})
    async with dispatching(server):
        await propose(client, denial())
        [failed] = await _wait_status(client, endpoint["id"], "failed", 1)
    assert "redirect" in failed["last_error"]
    assert {r.path for r in receiver.received()} == {"/hook"}


async def test_slack_body(server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver) -> None:
    endpoint = await create_endpoint(client, receiver.url, event_types=["decision.escalated"], format="slack")
    async with dispatching(server):
        decision = await propose(client, proposal("payments.transfer", actor="bot-<!channel>&", amount=5000))
        [request] = await receiver.wait_for(lambda got: len(got) == 1)
    message = request.verify(endpoint["secret"])
    text = message["text"]
    assert text.startswith(":warning: ESCALATE payments.transfer by ai-agent:bot-&lt;!channel&gt;&amp; (risk ")
    assert f"<{PUBLIC_URL}/console/decisions/{decision['decision_id']}|Review>" in text
    assert "<!channel>" not in json.dumps(message)
    assert message["blocks"][0]["text"]["text"] == text
    assert message["blocks"][-1]["elements"][0]["url"] == f"{PUBLIC_URL}/console/decisions/{decision['decision_id']}"


async def test_test_event_reaches_the_receiver(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url, event_types=["review.expired"])
    async with dispatching(server):
        queued = (await client.post(f"/api/v1/webhooks/{endpoint['id']}/test")).json()
        [request] = await receiver.wait_for(lambda got: len(got) == 1)
    body = request.verify(endpoint["secret"])
    assert body["type"] == "webhook.test"
    assert request.webhook_id == queued["event_id"]
    assert body["data"]["console_url"] == f"{PUBLIC_URL}/console/webhooks"


async def test_rotated_secret_signs_the_next_attempts(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url)
    rotated = (await client.post(f"/api/v1/webhooks/{endpoint['id']}/rotate-secret")).json()["secret"]
    async with dispatching(server):
        await client.post(f"/api/v1/webhooks/{endpoint['id']}/test")
        [request] = await receiver.wait_for(lambda got: len(got) == 1)
    request.verify(rotated)
    with pytest.raises(WebhookVerificationError):
        request.verify(endpoint["secret"])


async def test_run_once_attempts_what_is_due(
    server: InProcessServer, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await create_endpoint(client, receiver.url, event_types=["decision.denied"])
    await propose(client, denial())
    dispatcher = WebhookDispatcher(server.store, server.app.state.settings)
    try:
        assert await dispatcher.run_once() == 1
        assert await dispatcher.run_once() == 0  # delivered: nothing is due any more
    finally:
        await dispatcher.stop()
    [delivery] = await _deliveries(client, endpoint["id"])
    assert delivery["status"] == "delivered"
    assert len(receiver.received()) == 1


async def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt(make_server: Any, receiver: Receiver) -> None:
    async with make_server(webhook_timeout_seconds=0.3, webhook_retry_schedule_seconds=()) as server:
        client = server.async_http_client()
        endpoint = await create_endpoint(client, receiver.url, event_types=["decision.denied"])
        receiver.hold()
        async with dispatching(server):
            await propose(client, denial())
            [failed] = await _wait_status(client, endpoint["id"], "failed", 1)
        receiver.release()
    assert (failed["attempts"], failed["last_status_code"]) == (1, None)
    assert failed["last_error"] == "timed out waiting for the receiver"


async def test_the_server_runs_the_dispatcher_in_its_lifespan(make_server: Any, receiver: Receiver) -> None:
    async with make_server(run_background_tasks=True) as server:
        client = server.async_http_client()
        endpoint = await create_endpoint(client, receiver.url)
        decision = await propose(client, denial())
        [request] = await receiver.wait_for(lambda got: len(got) == 1)
        await _wait_status(client, endpoint["id"], "delivered", 1)
    assert request.verify(endpoint["secret"])["data"]["decision_id"] == decision["decision_id"]
