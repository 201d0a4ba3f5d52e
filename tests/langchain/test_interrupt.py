"""ESCALATE with on_escalate="interrupt": the LangGraph graph pauses with the decision, and on resume the
tool checks that same decision's review (no second escalation) and runs only if it was approved."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_support import calls, execution_payload, scripted, tool_messages

from aegis_langchain import INTERRUPT_TYPE, GovernanceMiddleware, governed_tool
from aegis_sdk import AegisClient
from aegis_server.inprocess import InProcessServer


def refund_agent(client: AegisClient, ran: list[str], *, via_middleware: bool = False) -> Any:
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return f"refunded {amount} on {order_id}"

    model = scripted(
        calls(("refund", {"order_id": "A-50", "amount": 5000, "currency": "EUR"})),
        AIMessage(content="finished"),
    )
    if via_middleware:
        from langchain_core.tools import tool

        middleware = GovernanceMiddleware({"refund": "payments.refund"}, client=client, on_escalate="interrupt")
        return create_agent(model, [tool(refund)], middleware=[middleware], checkpointer=InMemorySaver())
    governed = governed_tool("payments.refund", client=client, on_escalate="interrupt")(refund)
    return create_agent(model, [governed], checkpointer=InMemorySaver())


def escalations(client: AegisClient) -> list[str]:
    """Every proposal decided for payments.refund (an approval's ALLOW has the escalation as parent)."""
    return [d.decision_id for d in client.decisions.list(capability="payments.refund") if d.parent_decision_id is None]


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_interrupt_then_resume_after_approval(client: AegisClient, reviewer: AegisClient, via_middleware: bool) -> None:
    ran: list[str] = []
    agent = refund_agent(client, ran, via_middleware=via_middleware)
    config = {"configurable": {"thread_id": "thread-approve"}}

    paused = agent.invoke({"messages": [("user", "refund A-50")]}, config)
    (interrupt,) = paused["__interrupt__"]
    payload = interrupt.value
    assert payload["type"] == INTERRUPT_TYPE and payload["capability"] == "payments.refund"
    assert payload["parameters"] == {"order_id": "A-50", "amount": 5000.0, "currency": "EUR"}
    assert "confirmation_token" not in payload
    decision_id = payload["decision_id"]
    assert escalations(client) == [decision_id]
    assert ran == []

    # resumed before anyone reviewed: the graph pauses again on the same decision
    again = agent.invoke(Command(resume={"decision_id": decision_id}), config)
    assert again["__interrupt__"][0].value["decision_id"] == decision_id
    assert escalations(client) == [decision_id]
    assert ran == []

    reviewer.decisions.review(decision_id, approve=True, note="verified by phone")
    done = agent.invoke(Command(resume={"decision_id": decision_id}), config)

    assert "__interrupt__" not in done
    assert ran == ["A-50"]
    (message,) = tool_messages(done["messages"])
    assert message.content == "refunded 5000.0 on A-50"
    assert message.artifact["parent_decision_id"] == decision_id
    assert escalations(client) == [decision_id]  # never a second escalation
    assert execution_payload(client, message.artifact["decision_id"])["status"] == "SUCCESS"
    assert done["messages"][-1].content == "finished"


@pytest.mark.parametrize("via_middleware", [False, True], ids=["tool", "middleware"])
def test_interrupt_then_resume_after_denial(client: AegisClient, reviewer: AegisClient, via_middleware: bool) -> None:
    ran: list[str] = []
    agent = refund_agent(client, ran, via_middleware=via_middleware)
    config = {"configurable": {"thread_id": "thread-deny"}}

    paused = agent.invoke({"messages": [("user", "refund A-50")]}, config)
    decision_id = paused["__interrupt__"][0].value["decision_id"]
    reviewer.decisions.review(decision_id, approve=False, note="duplicate refund")
    done = agent.invoke(Command(resume=True), config)

    assert ran == []
    (message,) = tool_messages(done["messages"])
    assert message.status == "error"
    assert message.artifact["refusal"] == "review_denied"
    assert "duplicate refund" in message.content
    assert escalations(client) == [decision_id]


async def test_interrupt_and_resume_async(aserver: InProcessServer) -> None:
    aclient = aserver.async_client()
    ran: list[str] = []

    @governed_tool("payments.refund", async_client=aclient, on_escalate="interrupt")
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
    decision_id = paused["__interrupt__"][0].value["decision_id"]
    reviewer = aserver.async_client(await aserver.acreate_key("operator", ["governance:review"]))
    await reviewer.decisions.review(decision_id, approve=True)
    done = await agent.ainvoke(Command(resume=True), config)

    assert ran == ["A-60"]
    (message,) = tool_messages(done["messages"])
    assert message.artifact["parent_decision_id"] == decision_id
    listed = [d async for d in aclient.decisions.list(capability="payments.refund") if d.parent_decision_id is None]
    assert [d.decision_id for d in listed] == [decision_id]
