"""AEGIS pauses where agents live: beside LangChain's HumanInTheLoopMiddleware (one approval UI answers
both), several pauses in one step (resumed by interrupt id), and a plain LangGraph graph with a ToolNode
and a checkpointer."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from lc_support import calls, scripted, tool_messages

from aegis_langchain import GovernanceMiddleware, governed_tool
from aegis_sdk import AegisClient


def approval_ui(request: dict[str, Any], answer: str = "approve") -> dict[str, Any]:
    """An approval UI written for HumanInTheLoopMiddleware: it knows HITLRequest and nothing of AEGIS."""
    assert set(request) >= {"action_requests", "review_configs"}
    decisions = []
    for action, config in zip(request["action_requests"], request["review_configs"], strict=True):
        assert action["name"] == config["action_name"] and answer in config["allowed_decisions"]
        decisions.append({"type": answer, "message": "no"} if answer == "reject" else {"type": answer})
    return {"decisions": decisions}


def test_beside_human_in_the_loop_middleware_one_ui_answers_both(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []

    @tool
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(
        calls(("refund", {"order_id": "A-80", "amount": 5000, "currency": "EUR"})),
        AIMessage(content="done"),
    )
    agent = create_agent(
        model,
        [refund],
        middleware=[
            HumanInTheLoopMiddleware(interrupt_on={"refund": True}),
            GovernanceMiddleware({"refund": "payments.refund"}, client=client, review_timeout=1),
        ],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "thread-hitl"}}

    # LangChain's own pause comes first (after the model), then AEGIS's (when the tool is called)
    paused = agent.invoke({"messages": [("user", "refund A-80")]}, config)
    (hitl,) = paused["__interrupt__"]
    assert "aegis" not in hitl.value
    paused = agent.invoke(Command(resume=approval_ui(hitl.value)), config)
    (aegis_pause,) = paused["__interrupt__"]
    assert aegis_pause.value["aegis"]["kind"] == "escalation" and ran == []

    # the user's approval in the UI is not the operator's: the tool runs only after the review in AEGIS
    reviewer.decisions.review(aegis_pause.value["aegis"]["decision_id"], approve=True)
    done = agent.invoke(Command(resume=approval_ui(aegis_pause.value)), config)

    assert ran == ["A-80"]
    (message,) = tool_messages(done["messages"])
    assert message.artifact["parent_decision_id"] == aegis_pause.value["aegis"]["decision_id"]


def test_several_pauses_in_one_step_are_resumed_by_interrupt_id(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []

    @governed_tool("payments.refund", client=client, review_timeout=1)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(
        calls(
            ("refund", {"order_id": "A-1", "amount": 5000, "currency": "EUR"}),
            ("refund", {"order_id": "A-2", "amount": 6000, "currency": "EUR"}),
        ),
        AIMessage(content="one refunded, one pending"),
    )
    agent = create_agent(model, [refund], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "thread-parallel"}}

    paused = agent.invoke({"messages": [("user", "refund both")]}, config)
    interrupts = {i.value["action_requests"][0]["args"]["order_id"]: i for i in paused["__interrupt__"]}
    assert sorted(interrupts) == ["A-1", "A-2"]
    with pytest.raises(RuntimeError, match="multiple pending interrupts"):
        agent.invoke(Command(resume={"type": "approve"}), config)

    reviewer.decisions.review(interrupts["A-1"].value["aegis"]["decision_id"], approve=True)
    done = agent.invoke(Command(resume={i.id: {"type": "approve"} for i in interrupts.values()}), config)

    assert ran == ["A-1"]
    by_call = {m.tool_call_id: m for m in tool_messages(done["messages"])}
    assert by_call["call_1"].status == "success"
    assert by_call["call_2"].artifact["refusal"] == "review_pending"


def test_a_langgraph_graph_with_a_tool_node_pauses(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []

    @governed_tool("payments.refund", client=client, review_timeout=1)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([refund]))
    builder.add_edge(START, "tools")
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "thread-graph"}}

    request = calls(("refund", {"order_id": "A-90", "amount": 5000, "currency": "EUR"}))
    paused = graph.invoke({"messages": [request]}, config)
    decision_id = paused["__interrupt__"][0].value["aegis"]["decision_id"]
    reviewer.decisions.review(decision_id, approve=True)
    done = graph.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)

    assert ran == ["A-90"]
    assert tool_messages(done["messages"])[0].artifact["parent_decision_id"] == decision_id
