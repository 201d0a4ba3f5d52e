"""The answer to an escalation's pause as a review in AEGIS: with `reviewer=` (a reviewer's own key) an
approve or a reject given at the pause is submitted to the platform, which records it, audits it and holds
it to its rules; without it, only a review in AEGIS approves (tests/langchain/test_hitl_graphs.py)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_support import calls, scripted, tool_messages

from aegis_langchain import GovernanceMiddleware, governed_tool
from aegis_sdk import AegisClient, ConfigurationError
from aegis_server.inprocess import InProcessServer

ESCALATED = {"order_id": "A-90", "amount": 5000, "currency": "EUR"}


def refund_agent(client: AegisClient, ran: list[str], **settings: Any) -> Any:
    @governed_tool("payments.refund", client=client, **settings)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(calls(("refund", ESCALATED)), AIMessage(content="done"))
    return create_agent(model, [refund], checkpointer=InMemorySaver())


def paused_decision(agent: Any, config: dict[str, Any]) -> str:
    paused = agent.invoke({"messages": [("user", "refund A-90")]}, config)
    (pause,) = paused["__interrupt__"]
    assert pause.value["aegis"]["kind"] == "escalation"
    return str(pause.value["aegis"]["decision_id"])


def test_an_approval_at_the_pause_is_the_reviewers_review_in_aegis(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []
    agent = refund_agent(client, ran, reviewer=reviewer)
    config = {"configurable": {"thread_id": "thread-approve"}}
    decision_id = paused_decision(agent, config)

    done = agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)

    assert ran == ["A-90"]
    (message,) = tool_messages(done["messages"])
    assert message.status == "success" and message.artifact["parent_decision_id"] == decision_id
    review = client.decisions.get(decision_id).review
    assert review is not None and (review.status, review.reviewer) == ("approved", "operator")


def test_a_rejection_at_the_pause_denies_the_escalation_in_aegis(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []
    agent = refund_agent(client, ran, reviewer=reviewer)
    config = {"configurable": {"thread_id": "thread-reject"}}
    decision_id = paused_decision(agent, config)

    done = agent.invoke(Command(resume={"type": "reject", "message": "not this customer"}), config)

    assert ran == []
    (message,) = tool_messages(done["messages"])
    assert message.status == "error" and "not this customer" in message.content
    review = client.decisions.get(decision_id).review
    assert review is not None and (review.status, review.note) == ("denied", "not this customer")


def test_the_proposing_key_as_reviewer_cannot_approve_its_own_escalation(client: AegisClient) -> None:
    ran: list[str] = []
    agent = refund_agent(client, ran, reviewer=client)  # the agent's own key: the platform refuses
    config = {"configurable": {"thread_id": "thread-self"}}
    decision_id = paused_decision(agent, config)

    done = agent.invoke(Command(resume={"type": "approve"}), config)

    assert ran == []
    (message,) = tool_messages(done["messages"])
    assert message.status == "error" and message.artifact["refusal"] == "review_not_recorded"
    review = client.decisions.get(decision_id).review
    assert review is not None and review.status == "pending"


async def test_the_middleware_submits_the_approval_on_the_async_path(aserver: InProcessServer) -> None:
    proposer = aserver.async_client()
    operator = aserver.async_client(await aserver.acreate_key("operator", ["governance:review"]))
    ran: list[str] = []

    async def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(calls(("refund", ESCALATED)), AIMessage(content="done"))
    middleware = GovernanceMiddleware({"refund": "payments.refund"}, async_client=proposer, async_reviewer=operator)
    agent = create_agent(
        model,
        [StructuredTool.from_function(coroutine=refund, name="refund")],
        middleware=[middleware],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "thread-async"}}
    paused = await agent.ainvoke({"messages": [("user", "refund A-90")]}, config)
    decision_id = paused["__interrupt__"][0].value["aegis"]["decision_id"]

    await agent.ainvoke(Command(resume={"decisions": [{"type": "approve"}]}), config)

    assert ran == ["A-90"]
    review = (await proposer.decisions.get(decision_id)).review
    assert review is not None and review.status == "approved"


def test_a_reviewer_of_the_wrong_kind_is_refused_at_once(aserver: InProcessServer) -> None:
    with pytest.raises(ConfigurationError, match="pass it as async_reviewer="):
        GovernanceMiddleware(reviewer=aserver.async_client())  # type: ignore[arg-type]
