"""Pauses in a LangGraph run with a checkpointer, the default there (`on_escalate="auto"`, `confirm="auto"`):
the interrupt value is a HumanInTheLoopMiddleware `HITLRequest` with the AEGIS details under "aegis", and the
resume value one of its decisions. Approve never bypasses the platform: an escalation runs only once the
review is approved in AEGIS; edit proposes the edited call anew; reject is the refusal the model reads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import is_invalid_resume
from langgraph.types import Command
from lc_support import calls, execution_payload, scripted, tool_messages
from pydantic import ValidationError

from aegis_langchain import INTERRUPT_KEY, GovernanceMiddleware, governed_tool
from aegis_langchain._hitl import RESUME_SCHEMA
from aegis_sdk import AegisClient, ConfigurationError
from aegis_server.inprocess import InProcessServer

APPROVE = {"decisions": [{"type": "approve"}]}


def refund_agent(
    client: AegisClient, ran: list[dict[str, Any]], *turns: AIMessage, via_middleware: bool = False
) -> Any:
    """An agent whose model asks for the given turns (default: one refund of 5000, then "finished")."""

    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append({"order_id": order_id, "amount": amount})
        return f"refunded {amount} on {order_id}"

    model = scripted(*(turns or (refund_call(5000), AIMessage(content="finished"))))
    # Default modes; the short review_timeout would only matter if the call waited instead of pausing.
    if via_middleware:
        middleware = GovernanceMiddleware({"refund": "payments.refund"}, client=client, review_timeout=1)
        return create_agent(model, [tool(refund)], middleware=[middleware], checkpointer=InMemorySaver())
    governed = governed_tool("payments.refund", client=client, review_timeout=1)(refund)
    return create_agent(model, [governed], checkpointer=InMemorySaver())


def refund_call(amount: float, order_id: str = "A-50", prefix: str = "call") -> AIMessage:
    return calls(("refund", {"order_id": order_id, "amount": amount, "currency": "EUR"}), prefix=prefix)


def proposals(client: AegisClient) -> list[tuple[str, str, str | None]]:
    """(decision id, outcome, parent) of every payments.refund decision, oldest first."""
    listed = client.decisions.list(capability="payments.refund")
    return sorted((d.timestamp, d.decision_id, d.outcome, d.parent_decision_id) for d in listed)  # type: ignore[return-value]


def escalations(client: AegisClient) -> list[str]:
    return [d.decision_id for d in client.decisions.list(capability="payments.refund", outcome="ESCALATE")]


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_a_graph_pauses_by_default_with_a_hitl_request(
    client: AegisClient, reviewer: AegisClient, via_middleware: bool
) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(client, ran, via_middleware=via_middleware)
    config = {"configurable": {"thread_id": "thread-approve"}}

    paused = agent.invoke({"messages": [("user", "refund A-50")]}, config)
    (interrupt,) = paused["__interrupt__"]
    request = interrupt.value
    assert request["action_requests"] == [
        {
            "name": "refund",
            "args": {"order_id": "A-50", "amount": 5000.0, "currency": "EUR"},
            "description": request["action_requests"][0]["description"],
        }
    ]
    assert "operator" in request["action_requests"][0]["description"]
    assert request["review_configs"] == [{"action_name": "refund", "allowed_decisions": ["approve", "edit", "reject"]}]
    details = request[INTERRUPT_KEY]
    assert details["kind"] == "escalation" and details["capability"] == "payments.refund"
    assert details["parameters"] == {"order_id": "A-50", "amount": 5000.0, "currency": "EUR"}
    assert details["tool_call_id"] == "call_1" and details["session_id"] == "thread-approve"
    assert details["expires_at"] and details["reason"] and details["risk_score"] > 0
    assert "confirmation_token" not in json.dumps(request)
    decision_id = details["decision_id"]
    assert escalations(client) == [decision_id] and ran == []

    reviewer.decisions.review(decision_id, approve=True, note="verified by phone")
    done = agent.invoke(Command(resume=APPROVE), config)

    assert "__interrupt__" not in done
    assert ran == [{"order_id": "A-50", "amount": 5000.0}]
    (message,) = tool_messages(done["messages"])
    assert message.content == "refunded 5000.0 on A-50"
    assert message.artifact["parent_decision_id"] == decision_id
    assert escalations(client) == [decision_id]  # never a second escalation
    assert execution_payload(client, message.artifact["decision_id"])["status"] == "SUCCESS"
    assert done["messages"][-1].content == "finished"


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_approve_before_the_review_does_not_run_and_the_retry_reattaches(
    client: AegisClient, reviewer: AegisClient, via_middleware: bool
) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(
        client,
        ran,
        refund_call(5000),
        AIMessage(content="it awaits approval"),
        refund_call(5000, prefix="retry"),
        AIMessage(content="refunded now"),
        via_middleware=via_middleware,
    )
    config = {"configurable": {"thread_id": "thread-early"}}
    decision_id = agent.invoke({"messages": [("user", "refund")]}, config)["__interrupt__"][0].value["aegis"][
        "decision_id"
    ]

    # the person in the chat approves, the operator has not: the platform decides, and the tool does not run
    early = agent.invoke(Command(resume={"type": "approve"}), config)
    assert ran == []
    (message,) = tool_messages(early["messages"])
    assert message.status == "error" and message.artifact["refusal"] == "review_pending"
    assert "operator's approval in AEGIS" in message.content

    # the model calls again: the same call re-attaches to the pending decision and pauses on it
    again = agent.invoke({"messages": [("user", "is it approved now?")]}, config)
    assert again["__interrupt__"][0].value["aegis"]["decision_id"] == decision_id
    assert escalations(client) == [decision_id]

    reviewer.decisions.review(decision_id, approve=True)
    done = agent.invoke(Command(resume=APPROVE), config)
    assert ran == [{"order_id": "A-50", "amount": 5000.0}]
    assert tool_messages(done["messages"])[-1].artifact["parent_decision_id"] == decision_id
    assert escalations(client) == [decision_id]


def test_a_reject_stands_when_aegis_approves_before_the_resume(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(
        client,
        ran,
        refund_call(5000),
        AIMessage(content="it awaits approval"),
        refund_call(5000, prefix="retry"),
        AIMessage(content="not refunded"),
    )
    config = {"configurable": {"thread_id": "thread-reject-stands"}}
    agent.invoke({"messages": [("user", "refund")]}, config)
    agent.invoke(Command(resume=APPROVE), config)  # too early: the model reads that it is pending
    paused = agent.invoke({"messages": [("user", "try again")]}, config)  # re-attached: pauses on it
    decision_id = paused["__interrupt__"][0].value["aegis"]["decision_id"]

    reviewer.decisions.review(decision_id, approve=True)
    done = agent.invoke(Command(resume={"type": "reject", "message": "the customer called back"}), config)

    assert ran == []
    message = tool_messages(done["messages"])[-1]
    assert message.artifact["refusal"] == "rejected" and message.artifact["decision_id"] == decision_id


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_reject_is_the_refusal_the_model_reads(client: AegisClient, via_middleware: bool) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(client, ran, via_middleware=via_middleware)
    config = {"configurable": {"thread_id": "thread-reject"}}
    decision_id = agent.invoke({"messages": [("user", "refund")]}, config)["__interrupt__"][0].value["aegis"][
        "decision_id"
    ]

    done = agent.invoke(Command(resume={"decisions": [{"type": "reject", "message": "not this order"}]}), config)

    assert ran == []
    (message,) = tool_messages(done["messages"])
    assert message.status == "error" and message.artifact["refusal"] == "rejected"
    assert message.content == "User rejected the tool call for `refund` with reason: not this order"
    assert message.artifact["decision_id"] == decision_id
    assert done["messages"][-1].content == "finished"


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_edit_is_a_new_proposal_governed_from_scratch(client: AegisClient, via_middleware: bool) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(client, ran, via_middleware=via_middleware)
    config = {"configurable": {"thread_id": "thread-edit"}}
    first = agent.invoke({"messages": [("user", "refund")]}, config)["__interrupt__"][0].value["aegis"]

    # edited to 250: a new proposal, which needs the user's confirmation: the graph pauses on it
    edit = {
        "type": "edit",
        "edited_action": {"name": "refund", "args": {"order_id": "A-50", "amount": 250, "currency": "EUR"}},
    }
    paused = agent.invoke(Command(resume={"decisions": [edit]}), config)
    second = paused["__interrupt__"][0].value
    assert second["aegis"]["kind"] == "confirmation"
    assert second["aegis"]["decision_id"] != first["decision_id"]
    assert second["action_requests"][0]["args"] == {"order_id": "A-50", "amount": 250, "currency": "EUR"}
    assert ran == []

    done = agent.invoke(Command(resume=APPROVE), config)

    assert ran == [{"order_id": "A-50", "amount": 250.0}]  # the edited call ran, not the model's
    (message,) = tool_messages(done["messages"])
    assert message.artifact["parent_decision_id"] == second["aegis"]["decision_id"]
    # the model is told that the call that ran is not the one it asked for
    assert "changed it before it ran" in message.content and '"amount": 250' in message.content
    assert message.content.endswith("refunded 250.0 on A-50")
    outcomes = [outcome for _, _, outcome, _ in proposals(client)]
    assert outcomes == ["ESCALATE", "REQUIRE_CONFIRMATION", "ALLOW"]  # the first escalation stays as it was


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_edit_that_the_tool_rejects_is_an_error_and_can_be_answered_again(
    client: AegisClient, via_middleware: bool
) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(client, ran, via_middleware=via_middleware)
    config = {"configurable": {"thread_id": f"thread-bad-edit-{via_middleware}"}}
    agent.invoke({"messages": [("user", "refund")]}, config)

    # LangGraph refuses each before it saves it (is_invalid_resume), so the pause stays open
    bad = {"type": "edit", "edited_action": {"name": "refund", "args": {"amount": "a lot"}}}
    with pytest.raises(ValidationError, match="edited arguments of refund") as caught:
        agent.invoke(Command(resume=bad), config)
    assert is_invalid_resume(caught.value)
    with pytest.raises(ValidationError, match="resume value of an AEGIS pause"):
        agent.invoke(Command(resume=True), config)
    other_tool = {"type": "edit", "edited_action": {"name": "shell", "args": {"command": "ls"}}}
    with pytest.raises(ValidationError, match="not call another tool"):
        agent.invoke(Command(resume=other_tool), config)
    assert ran == []
    assert agent.get_state(config).interrupts[0].response_schema == RESUME_SCHEMA

    done = agent.invoke(Command(resume={"type": "reject"}), config)
    (message,) = tool_messages(done["messages"])
    assert message.artifact["refusal"] == "rejected" and "Do not retry" in message.content


def test_denied_in_aegis_then_approved_in_the_chat_is_denied(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(client, ran)
    config = {"configurable": {"thread_id": "thread-deny"}}
    decision_id = agent.invoke({"messages": [("user", "refund")]}, config)["__interrupt__"][0].value["aegis"][
        "decision_id"
    ]
    reviewer.decisions.review(decision_id, approve=False, note="duplicate refund")

    done = agent.invoke(Command(resume=APPROVE), config)

    assert ran == []
    (message,) = tool_messages(done["messages"])
    assert message.artifact["refusal"] == "review_denied" and "duplicate refund" in message.content


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_confirmation_pauses_by_default_and_approve_confirms(client: AegisClient, via_middleware: bool) -> None:
    ran: list[dict[str, Any]] = []
    agent = refund_agent(
        client,
        ran,
        refund_call(250, order_id="A-1"),
        refund_call(250, order_id="A-2", prefix="second"),
        AIMessage(content="one refunded, one not"),
        via_middleware=via_middleware,
    )
    config = {"configurable": {"thread_id": "thread-confirm"}}

    paused = agent.invoke({"messages": [("user", "refund")]}, config)
    details = paused["__interrupt__"][0].value["aegis"]
    assert details["kind"] == "confirmation" and ran == []
    confirmed = agent.invoke(Command(resume=APPROVE), config)
    assert ran == [{"order_id": "A-1", "amount": 250.0}]
    assert tool_messages(confirmed["messages"])[0].artifact["parent_decision_id"] == details["decision_id"]

    declined = agent.invoke(Command(resume={"type": "reject", "message": "too much"}), config)
    assert ran == [{"order_id": "A-1", "amount": 250.0}]
    message = tool_messages(declined["messages"])[-1]
    assert message.artifact["refusal"] == "confirmation_declined" and "too much" in message.content
    assert [outcome for _, _, outcome, _ in proposals(client)] == [
        "REQUIRE_CONFIRMATION",
        "ALLOW",
        "REQUIRE_CONFIRMATION",
    ]


def test_explicit_modes_still_apply_in_a_graph(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []

    @governed_tool(
        "payments.refund",
        client=client,
        on_escalate="wait",
        on_escalation=lambda d: reviewer.decisions.review(d.decision_id, approve=True),
        confirm="refuse",
    )
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(
        calls(
            ("refund", {"order_id": "A-1", "amount": 5000, "currency": "EUR"}),
            ("refund", {"order_id": "A-2", "amount": 250, "currency": "EUR"}),
        ),
        AIMessage(content="done"),
    )
    agent = create_agent(model, [refund], checkpointer=InMemorySaver())
    done = agent.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "thread-modes"}})

    assert "__interrupt__" not in done
    assert ran == ["A-1"]
    by_call = {m.tool_call_id: m for m in tool_messages(done["messages"])}
    assert by_call["call_2"].artifact["refusal"] == "confirmation_required"


async def test_pause_and_resume_async(aserver: InProcessServer) -> None:
    aclient = aserver.async_client()
    ran: list[str] = []

    @governed_tool("payments.refund", async_client=aclient, review_timeout=1)
    async def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(
        calls(("refund", {"order_id": "A-60", "amount": 2000, "currency": "USD"})), AIMessage(content="ok")
    )
    agent = create_agent(model, [refund], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "thread-async"}}

    paused = await agent.ainvoke({"messages": [("user", "refund")]}, config)
    decision_id = paused["__interrupt__"][0].value["aegis"]["decision_id"]
    early = await agent.ainvoke(Command(resume=APPROVE), config)
    assert ran == [] and tool_messages(early["messages"])[0].artifact["refusal"] == "review_pending"

    reviewer = aserver.async_client(await aserver.acreate_key("operator", ["governance:review"]))
    await reviewer.decisions.review(decision_id, approve=True)
    message = await refund.ainvoke(
        {
            "type": "tool_call",
            "id": "c9",
            "name": "refund",
            "args": {"order_id": "A-60", "amount": 2000, "currency": "USD"},
        },
        config,
    )
    assert ran == ["A-60"]  # the retry re-attached to the approved escalation
    assert message.artifact["parent_decision_id"] == decision_id
    listed = [d async for d in aclient.decisions.list(capability="payments.refund", outcome="ESCALATE")]
    assert [d.decision_id for d in listed] == [decision_id]


def test_modes_are_checked_when_the_tool_is_built(client: AegisClient) -> None:
    def refund(order_id: str) -> str:
        """Refund an order."""
        return "refunded"

    with pytest.raises(ConfigurationError, match="'auto'") as caught:
        governed_tool("payments.refund", client=client, on_escalate="pause")(refund)
    assert caught.value.code == "invalid_on_escalate"
    with pytest.raises(ConfigurationError, match="'interrupt'") as caught:
        GovernanceMiddleware(client=client, confirm="ask")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_confirm"
    assert GovernanceMiddleware(client=client, confirm=None).settings.confirm == "refuse"
    assert governed_tool("payments.refund", client=client)(refund).settings.on_escalate == "auto"
