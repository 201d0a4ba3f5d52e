"""propose(): dicts or typed models in, a Decision out; bad input fails before any request; the request
carries the documented headers; confirm() resubmits the remembered proposal with its token."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sdk_support import API_KEY, ENDPOINT, FakePlatform, decision_body, error_body, reply, resolve

from aegis_sdk import (
    Action,
    Actor,
    AegisError,
    ConfirmationError,
    ConfirmationUsedError,
    Context,
    Decision,
    InvalidRequestError,
    __version__,
)
from aegis_sdk._constants import PROPOSAL_MEMORY_SIZE

ACTOR = {"id": "agent-001", "type": "ai-agent"}
ACTION = {"capability": "payments.refund", "parameters": {"amount": 40, "order": "A-17"}}


async def test_typed_models_are_accepted(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    decision = await resolve(
        client.propose(
            Actor(id="agent-001", type="automation"),
            Action(capability="payments.refund", parameters={"amount": 40}, resource="order/A-17"),
            Context(session_id="sess_1", metadata={"channel": "chat"}),
        )
    )
    assert isinstance(decision, Decision)
    assert platform.bodies()[0] == {
        "actor": {"id": "agent-001", "type": "automation"},
        "action": {"capability": "payments.refund", "parameters": {"amount": 40}, "resource": "order/A-17"},
        "context": {"session_id": "sess_1", "metadata": {"channel": "chat"}},
    }


async def test_context_defaults_and_type_defaults(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose({"id": "agent-001"}, {"capability": "payments.refund"}))
    assert platform.bodies()[0] == {
        "actor": {"id": "agent-001", "type": "ai-agent"},
        "action": {"capability": "payments.refund", "parameters": {}},
        "context": {"metadata": {}},
    }


async def test_headers(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose(ACTOR, ACTION))
    request = platform.last
    assert request.method == "POST"
    assert str(request.url) == f"{ENDPOINT}/api/v1/governance/propose"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    user_agent = request.headers["User-Agent"]
    assert user_agent.startswith(f"aegis-sdk/{__version__} python/3.")
    assert request.headers["Idempotency-Key"]


async def test_parameters_keep_nulls_and_unicode(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    params = {"note": None, "name": "Zoë", "nested": {"list": [1, 2.5, True]}}
    await resolve(client.propose(ACTOR, {"capability": "crm.update", "parameters": params}))
    assert json.loads(platform.last.content)["action"]["parameters"] == params


@pytest.mark.parametrize(
    ("actor", "action", "context", "field"),
    [
        ({"type": "ai-agent"}, ACTION, None, "actor.id"),
        ({"id": ""}, ACTION, None, "actor.id"),
        ({"id": "a", "type": "robot"}, ACTION, None, "actor.type"),
        ({"id": "a", "name": "x"}, ACTION, None, "actor.name"),
        (ACTOR, {"parameters": {}}, None, "action.capability"),
        (ACTOR, {"capability": "drop table"}, None, "action.capability"),
        (ACTOR, {"capability": "x", "parameters": [1]}, None, "action.parameters"),
        (ACTOR, ACTION, {"session_id": 5}, "context.session_id"),
        ("agent-001", ACTION, None, "actor"),
    ],
)
async def test_bad_input_fails_before_any_request(
    make_client: Any, actor: Any, action: Any, context: Any, field: str
) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError) as caught:
        await resolve(client.propose(actor, action, context))
    assert platform.requests == []
    assert field in str(caught.value)
    assert caught.value.status_code is None
    assert isinstance(caught.value, ValueError)
    assert any(problem["loc"] == field for problem in caught.value.details["errors"])


async def test_bad_input_never_echoes_parameter_values(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(200, decision_body())))
    with pytest.raises(InvalidRequestError) as caught:
        await resolve(client.propose({"id": "a", "password": "hunter2"}, ACTION))
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.details)


async def test_parameters_that_are_not_json(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match="JSON"):
        await resolve(client.propose(ACTOR, {"capability": "x", "parameters": {"handle": object()}}))
    assert platform.requests == []


async def test_confirmation_token_is_sent(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    await resolve(client.propose(ACTOR, ACTION, confirmation_token="ctok_abc"))
    assert platform.bodies()[0]["confirmation_token"] == "ctok_abc"


async def test_confirm_resubmits_the_same_proposal_with_the_token(make_client: Any) -> None:
    pending = decision_body(
        "REQUIRE_CONFIRMATION", decision_id="dec_1", confirmation_token="ctok_1", expires_at="2026-01-01T00:05:00Z"
    )
    allowed = decision_body("ALLOW", decision_id="dec_2", parent_decision_id="dec_1")
    used = error_body("governance_error", "confirmation_used", "This confirmation token was already used.")
    platform = FakePlatform(reply(200, pending), reply(200, allowed), reply(409, used))
    client = make_client(platform)
    context = {"session_id": "sess_9", "metadata": {"ticket": 7}}
    decision = await resolve(client.propose(ACTOR, ACTION, context))
    assert decision.outcome == "REQUIRE_CONFIRMATION"
    confirmed = await resolve(client.confirm(decision))
    assert (confirmed.outcome, confirmed.parent_decision_id) == ("ALLOW", "dec_1")
    first, second = platform.bodies()
    assert second == {**first, "confirmation_token": "ctok_1"}
    keys = [r.headers["Idempotency-Key"] for r in platform.requests]
    assert keys[0] != keys[1]
    # confirming twice reaches the platform, which refuses the used token with its precise reason
    with pytest.raises(ConfirmationUsedError):
        await resolve(client.confirm(decision))
    assert platform.bodies()[2] == second


async def test_confirm_of_an_unknown_decision_says_what_to_do(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    foreign = Decision(**decision_body("REQUIRE_CONFIRMATION", decision_id="dec_other", confirmation_token="ctok_x"))
    with pytest.raises(ConfirmationError) as caught:
        await resolve(client.confirm(foreign))
    message = str(caught.value)
    assert "propose(actor, action, context, confirmation_token=decision.confirmation_token)" in message
    assert "ctok_x" not in message
    assert caught.value.code == "proposal_unknown"
    assert platform.requests == []


@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "ESCALATE"])
async def test_confirm_without_a_token(make_client: Any, outcome: str) -> None:
    platform = FakePlatform(reply(200, decision_body(outcome, review={"status": "pending"})))
    client = make_client(platform)
    decision = await resolve(client.propose(ACTOR, ACTION))
    with pytest.raises(ConfirmationError, match="no confirmation token") as caught:
        await resolve(client.confirm(decision))
    assert caught.value.code == "no_confirmation_token"
    if outcome == "ESCALATE":
        assert "wait_for_review" in str(caught.value)
    assert len(platform.requests) == 1


async def test_confirm_takes_a_decision(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(200, decision_body())))
    with pytest.raises(InvalidRequestError, match="Decision"):
        await resolve(client.confirm({"decision_id": "dec_1"}))


async def test_token_reuse_is_a_governance_error(make_client: Any) -> None:
    pending = decision_body("REQUIRE_CONFIRMATION", decision_id="dec_1", confirmation_token="ctok_1")
    used = reply(409, error_body("governance_error", "confirmation_used", "This token was already used."))
    platform = FakePlatform(reply(200, pending), used)
    client = make_client(platform)
    decision = await resolve(client.propose(ACTOR, ACTION))
    with pytest.raises(ConfirmationUsedError):
        await resolve(client.confirm(decision))


async def test_proposal_memory_is_bounded(make_client: Any) -> None:
    counter = iter(range(10_000))

    def answer(request: httpx.Request) -> httpx.Response:
        n = next(counter)
        return reply(200, decision_body("REQUIRE_CONFIRMATION", decision_id=f"dec_{n}", confirmation_token=f"t{n}"))

    client = make_client(FakePlatform(answer))
    first = await resolve(client.propose(ACTOR, ACTION))
    for _ in range(PROPOSAL_MEMORY_SIZE):
        await resolve(client.propose(ACTOR, ACTION))
    assert len(client._proposals) == PROPOSAL_MEMORY_SIZE
    with pytest.raises(ConfirmationError, match="does not remember"):
        await resolve(client.confirm(first))


async def test_allow_and_deny_are_not_remembered(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(200, decision_body("ALLOW")), reply(200, decision_body("DENY"))))
    await resolve(client.propose(ACTOR, ACTION))
    await resolve(client.propose(ACTOR, ACTION))
    assert len(client._proposals) == 0


async def test_decision_repr_hides_the_token(make_client: Any) -> None:
    body = decision_body("REQUIRE_CONFIRMATION", confirmation_token="ctok_secret")
    client = make_client(FakePlatform(reply(200, body)))
    decision = await resolve(client.propose(ACTOR, ACTION))
    assert "ctok_secret" not in repr(decision)
    assert decision.confirmation_token == "ctok_secret"


async def test_calls_after_close_fail_clearly(make_client: Any) -> None:
    platform = FakePlatform(reply(200, decision_body()))
    client = make_client(platform)
    closing = client.aclose() if hasattr(client, "aclose") else client.close()
    await resolve(closing)
    with pytest.raises(AegisError, match="closed") as caught:
        await resolve(client.propose(ACTOR, ACTION))
    assert caught.value.code == "client_closed"
    assert platform.requests == []
