"""The client's way back from an ESCALATE: `Retry-After`, the decision id and a status link on the 403, the
status route (long poll, approval, denial), and who may read it. The example app over a uvicorn socket,
against the real aegis-server in-process (example policies: a refund of 5000 escalates)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi_support import ALICE, BOT, load_example, serve

from aegis_fastapi import DECISION_HEADER, AegisRefusal
from aegis_fastapi._status import owned_decision
from aegis_sdk import Actor, AsyncAegisClient
from aegis_server.inprocess import InProcessServer

STATUS = "/aegis/decisions/{}"


def refund(amount: float) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


@asynccontextmanager
async def example_app(server: InProcessServer) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncAegisClient]]:
    """The example app (status route mounted at /aegis) on a loopback port; yields an HTTP client for it and
    the app's own AEGIS client."""
    client = server.async_client()
    app = load_example().create_app(client=client)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http, client


async def escalate(http: httpx.AsyncClient, order: str) -> httpx.Response:
    response = await http.post(f"/orders/{order}/refunds", json=refund(5000), headers=BOT)
    assert response.status_code == 403, response.text
    assert response.json()["detail"]["code"] == "review_pending"
    return response


async def reviewer(server: InProcessServer) -> AsyncAegisClient:
    """A reviewer's own key: the key that proposed may not review its decision."""
    return server.async_client(await server.acreate_key("operator", ["governance:review"]))


async def until_long_polling(server: InProcessServer) -> None:
    """Until a long poll subscribed to the platform's review notifications (at most 10 s)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10.0
    while loop.time() < give_up:
        if server.service.notifier.waiting:
            return
        await asyncio.sleep(0.001)
    raise AssertionError("no long poll subscribed within 10 s")


def same_answer(first: httpx.Response, second: httpx.Response, first_id: str, second_id: str) -> None:
    """The two answers cannot be told apart, but for the id each asked about and the request id."""
    assert first.status_code == second.status_code
    one, other = first.json()["detail"], second.json()["detail"]
    assert {**one, "request_id": None, "message": one["message"].replace(first_id, "ID")} == {
        **other,
        "request_id": None,
        "message": other["message"].replace(second_id, "ID"),
    }
    varying = {"date", "content-length"}
    assert {k: v for k, v in first.headers.items() if k not in varying} == {
        k: v for k, v in second.headers.items() if k not in varying
    }


async def test_the_review_pending_answer_says_when_and_where_to_come_back(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        response = await escalate(http, "A-30")
    detail = response.json()["detail"]
    decision_id = detail["decision_id"]
    assert response.headers[DECISION_HEADER] == decision_id
    assert response.headers["Retry-After"] == "10"
    status_url = str(http.base_url).rstrip("/") + STATUS.format(decision_id)
    assert detail["status_url"] == status_url
    assert response.headers["Link"] == f'<{status_url}>; rel="status"'
    assert response.links["status"]["url"] == status_url
    assert status_url in detail["message"]


async def test_long_poll_sees_the_approval_then_the_repeat_runs_once(server: InProcessServer) -> None:
    async with example_app(server) as (http, client):
        first = await escalate(http, "A-31")
        decision_id = first.json()["detail"]["decision_id"]
        status_url = first.links["status"]["url"]

        plain = await http.get(status_url, headers=BOT)
        assert plain.status_code == 200
        assert plain.json()["next_step"] == "wait" and plain.json()["review_status"] == "pending"
        assert plain.headers["Retry-After"] == "10" and plain.headers["Cache-Control"] == "no-store"

        poll = asyncio.create_task(http.get(status_url, params={"wait": 30}, headers=BOT))
        await until_long_polling(server)
        assert not poll.done()
        await (await reviewer(server)).decisions.review(decision_id, approve=True, note="checked")
        approved = await poll

        view = approved.json()
        assert approved.status_code == 200
        assert view["review_status"] == "approved" and view["next_step"] == "repeat"
        assert view["confirmation_header"] == "AEGIS-Confirmation" and view["decision_id"] == decision_id
        assert "Retry-After" not in approved.headers
        assert set(view) == {
            "decision_id",
            "outcome",
            "review_status",
            "expires_at",
            "next_step",
            "confirmation_header",
            "message",
        }

        repeat = {**BOT, view["confirmation_header"]: view["decision_id"]}
        ran = await http.post("/orders/A-31/refunds", json=refund(5000), headers=repeat)
        again = await http.post("/orders/A-31/refunds", json=refund(5000), headers=repeat)
    assert ran.status_code == 200, ran.text
    assert ran.json()["confirmed_from"] == decision_id
    assert again.status_code == 409 and again.json()["detail"]["code"] == "confirmation_used"
    allowed = [d async for d in client.decisions.list(outcome="ALLOW")]
    assert [d.parent_decision_id for d in allowed] == [decision_id]


async def test_a_denied_review_is_final_on_the_status_route(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        first = await escalate(http, "A-32")
        decision_id = first.json()["detail"]["decision_id"]
        poll = asyncio.create_task(http.get(first.links["status"]["url"], params={"wait": 30}, headers=BOT))
        await until_long_polling(server)
        await (await reviewer(server)).decisions.review(decision_id, approve=False, note="no")
        denied = await poll
        repeat = await http.post(
            "/orders/A-32/refunds", json=refund(5000), headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
    view = denied.json()
    assert denied.status_code == 200
    assert view["review_status"] == "denied" and view["next_step"] == "stop"
    assert view["confirmation_header"] is None and "Retry-After" not in denied.headers
    assert "note" not in denied.text and "no" not in view.values()
    assert repeat.status_code == 403 and repeat.json()["detail"]["code"] == "review_denied"


async def test_the_repeat_while_pending_carries_the_way_back_too(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        first = await escalate(http, "A-33")
        decision_id = first.json()["detail"]["decision_id"]
        repeat = await http.post(
            "/orders/A-33/refunds", json=refund(5000), headers={**BOT, "AEGIS-Confirmation": decision_id}
        )
    assert repeat.status_code == 403 and repeat.json()["detail"]["code"] == "review_pending"
    assert repeat.headers["Retry-After"] == "10"
    assert repeat.links["status"]["url"] == first.links["status"]["url"]
    assert repeat.json()["detail"]["status_url"] == first.json()["detail"]["status_url"]


async def test_another_actor_gets_the_404_of_an_unknown_id(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        first = await escalate(http, "A-34")
        decision_id = first.json()["detail"]["decision_id"]
        unknown_id = "dec_" + "0" * len(decision_id.removeprefix("dec_"))
        theirs = await http.get(STATUS.format(decision_id), headers=ALICE)
        theirs_waiting = await http.get(STATUS.format(decision_id), params={"wait": 30}, headers=ALICE)
        unknown = await http.get(STATUS.format(unknown_id), headers=ALICE)
        malformed = await http.get(STATUS.format("not-a-decision"), headers=BOT)
        mine = await http.get(STATUS.format(decision_id), headers=BOT)
    assert theirs.status_code == 404
    assert theirs.json()["detail"]["code"] == "decision_not_found"
    same_answer(theirs, unknown, decision_id, unknown_id)
    same_answer(theirs_waiting, unknown, decision_id, unknown_id)
    same_answer(malformed, unknown, "not-a-decision", unknown_id)
    assert mine.status_code == 200  # the decision exists: only its own actor sees it


async def test_the_same_actor_id_with_another_type_is_another_actor(server: InProcessServer) -> None:
    async with example_app(server) as (http, client):
        decision_id = (await escalate(http, "A-35")).json()["detail"]["decision_id"]
        bot = Actor(id="support-bot", type="ai-agent")
        assert (await owned_decision(client, decision_id, bot, "req_1", 5)).decision_id == decision_id
        with pytest.raises(AegisRefusal) as refused:
            await owned_decision(client, decision_id, Actor(id="support-bot", type="human"), "req_2", 5)
    assert refused.value.status_code == 404
    assert refused.value.detail["code"] == "decision_not_found"


async def test_an_unauthenticated_caller_gets_the_apps_own_401(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        first = await escalate(http, "A-35")
        status_path = STATUS.format(first.json()["detail"]["decision_id"])
        anonymous = await http.get(status_path)
        bad_token = await http.get(status_path, params={"wait": 30}, headers={"Authorization": "Bearer stolen"})
        unknown = await http.get(STATUS.format("dec_unknown"))
    for response in (anonymous, bad_token, unknown):
        assert response.status_code == 401
        assert response.json() == {"detail": "Send 'Authorization: Bearer <token>' with a known token."}


async def test_wait_is_bounded_with_a_clear_422(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        first = await escalate(http, "A-36")
        status_path = STATUS.format(first.json()["detail"]["decision_id"])
        answers = {}
        for wait in ("61", "-1", "soon"):
            answers[wait] = await http.get(status_path, params={"wait": wait}, headers=BOT)
    for wait, response in answers.items():
        assert response.status_code == 422, wait
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", "wait"]
    assert "less than or equal to 60" in answers["61"].json()["detail"][0]["msg"]
    assert "greater than or equal to 0" in answers["-1"].json()["detail"][0]["msg"]
    assert "integer" in answers["soon"].json()["detail"][0]["msg"]


async def test_a_confirmation_decision_has_no_link_but_its_status_says_repeat(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        asked = await http.post("/orders/A-37/refunds", json=refund(250), headers=BOT)
        decision_id = asked.json()["detail"]["decision_id"]
        status = await http.get(STATUS.format(decision_id), headers=BOT)
    assert asked.status_code == 428
    assert "Link" not in asked.headers and "Retry-After" not in asked.headers
    assert asked.json()["detail"]["status_url"] is None
    assert status.json()["next_step"] == "repeat" and status.json()["outcome"] == "REQUIRE_CONFIRMATION"


async def test_the_status_route_fails_closed_when_the_platform_is_down() -> None:
    from fastapi import FastAPI

    async with serve(FastAPI(), lifespan="off") as url:
        dead_endpoint = url  # nothing listens there once this block ends
    app = load_example().create_app(dead_endpoint, "aegis_sk_unused")
    async with serve(app) as app_url, httpx.AsyncClient(base_url=app_url, timeout=30) as http:
        response = await http.get(STATUS.format("dec_abc123"), headers=BOT)
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "governance_unavailable"
    assert int(response.headers["Retry-After"]) > 0


async def test_a_key_that_cannot_read_decisions_is_a_misconfiguration(server: InProcessServer) -> None:
    key = await server.acreate_key("propose-only", ["governance:propose"])
    app = load_example().create_app(client=server.async_client(key))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        first = await escalate(http, "A-38")
        status = await http.get(first.links["status"]["url"], headers=BOT)
    assert status.status_code == 503
    assert status.json()["detail"]["code"] == "governance_misconfigured"
    assert "Retry-After" in status.headers


async def test_the_status_route_is_in_openapi_with_its_answers(server: InProcessServer) -> None:
    async with example_app(server) as (http, _):
        schema = (await http.get("/openapi.json")).json()
    operation = schema["paths"]["/aegis/decisions/{decision_id}"]["get"]
    assert set(operation["responses"]) == {"200", "401", "404", "422", "503"}
    assert operation["tags"] == ["aegis"]
    assert "Retry-After" in operation["responses"]["200"]["headers"]
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    wait = next(p for p in operation["parameters"] if p["name"] == "wait")
    assert wait["in"] == "query" and wait["schema"]["maximum"] == 60 and wait["schema"]["minimum"] == 0
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/DecisionStatus")
    refund_403 = schema["paths"]["/orders/{order_id}/refunds"]["post"]["responses"]["403"]
    assert {"Retry-After", "Link", DECISION_HEADER} <= set(refund_403["headers"])
