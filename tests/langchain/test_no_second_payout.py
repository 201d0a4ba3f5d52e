"""What a tool may do is what AEGIS allowed, once: the middleware proposes the arguments the tool will run
with (its own schema, validators and aliases) and never runs a call it could not govern; an ALLOW met again
by a re-run of the same LangGraph step is not spent twice; an edit cannot change what LangGraph injected.
(Findings of a hostile review of issue 15.)"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode
from langgraph.types import Command
from lc_support import calls, scripted, tool_messages
from pydantic import BaseModel, Field, ValidationError, field_validator

from aegis_langchain import GovernanceMiddleware, governed_tool
from aegis_sdk import AegisClient


class ShopAmount(BaseModel):
    order_id: str
    amount: float
    currency: str = "EUR"

    @field_validator("amount", mode="before")
    @classmethod
    def parse_amount(cls, value: Any) -> Any:  # the shop's UI writes "5,000"
        return float(value.replace(",", "")) if isinstance(value, str) else value


class AliasedAmount(BaseModel):
    order_id: str
    amount: float = Field(alias="amt")
    currency: str = "EUR"


def run_agent(client: AegisClient, tools: list[Any], name: str, args: dict[str, Any]) -> Any:
    model = scripted(calls((name, args)), AIMessage(content="done"))
    middleware = GovernanceMiddleware({t.name: "payments.refund" for t in tools}, client=client, on_escalate="raise")
    agent = create_agent(model, tools, middleware=[middleware])
    return agent.invoke({"messages": [("user", "refund")]})


def test_the_middleware_proposes_what_the_tools_own_validator_reads(client: AegisClient) -> None:
    ran: list[float] = []

    @tool(args_schema=ShopAmount)
    def refund(order_id: str, amount: float, currency: str = "EUR") -> str:
        """Refund an order."""
        ran.append(amount)
        return "refunded"

    state = run_agent(client, [refund], "refund", {"order_id": "A-1", "amount": "5,000"})
    (message,) = tool_messages(state["messages"])
    # 5000 escalates in the example policies; with on_escalate="raise" the tool does not run.
    assert ran == [] and message.status == "error"
    assert message.response_metadata["aegis"]["outcome"] == "ESCALATE"


def test_an_argument_the_models_schema_does_not_have_is_refused_not_smuggled(client: AegisClient) -> None:
    ran: list[float] = []

    @tool(args_schema=AliasedAmount)
    def refund(order_id: str, amount: float, currency: str = "EUR") -> str:
        """Refund an order."""
        ran.append(amount)
        return "refunded"

    state = run_agent(client, [refund], "refund", {"order_id": "A-1", "amount": 50, "amt": 5000})
    (message,) = tool_messages(state["messages"])
    assert ran == [] and message.status == "error" and "amt" in message.content
    assert list(client.decisions.list(capability="payments.refund")) == []  # nothing was proposed


def test_a_toolnode_re_running_its_step_does_not_pay_the_allowed_call_twice(
    client: AegisClient, reviewer: AegisClient
) -> None:
    ran: list[tuple[str, float]] = []

    @governed_tool("payments.refund", client=client)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode([refund]))
    graph.add_edge(START, "tools")
    app = graph.compile(checkpointer=InMemorySaver())
    both = calls(
        ("refund", {"order_id": "A-1", "amount": 50, "currency": "EUR"}),
        ("refund", {"order_id": "A-2", "amount": 6000, "currency": "EUR"}),
    )
    config = {"configurable": {"thread_id": "thread-toolnode-twice"}}
    paused = app.invoke({"messages": [both]}, config)
    assert ran == [("A-1", 50.0)]  # the allowed call ran; the other paused the node
    reviewer.decisions.review(paused["__interrupt__"][0].value["aegis"]["decision_id"], approve=True)

    done = app.invoke(Command(resume={"type": "approve"}), config)  # the node re-runs both calls

    assert ran == [("A-1", 50.0), ("A-2", 6000.0)]
    refusals = [m.artifact.get("refusal") for m in tool_messages(done["messages"]) if m.status == "error"]
    assert refusals == ["already_performed"]


def test_resuming_an_older_checkpoint_does_not_spend_the_approval_again(
    client: AegisClient, reviewer: AegisClient
) -> None:
    ran: list[str] = []

    @governed_tool("payments.refund", client=client)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return "refunded"

    model = scripted(calls(("refund", {"order_id": "A-3", "amount": 5000, "currency": "EUR"})), *[AIMessage("ok")] * 3)
    agent = create_agent(model, [refund], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "thread-time-travel"}}
    paused = agent.invoke({"messages": [("user", "refund A-3")]}, config)
    reviewer.decisions.review(paused["__interrupt__"][0].value["aegis"]["decision_id"], approve=True)
    agent.invoke(Command(resume={"type": "approve"}), config)
    assert ran == ["A-3"]

    pause = next(s for s in agent.get_state_history(config) if s.interrupts)  # back to the pause
    again = agent.invoke(Command(resume={"type": "approve"}), pause.config)

    assert ran == ["A-3"]
    assert tool_messages(again["messages"])[-1].artifact["refusal"] == "already_performed"


def test_an_edit_at_the_pause_cannot_change_an_injected_argument(client: AegisClient) -> None:
    ran: list[str] = []

    class Shop(MessagesState):
        customer: str

    @governed_tool("payments.refund", client=client)
    def refund(order_id: str, amount: float, currency: str, customer: Annotated[str, InjectedState("customer")]) -> str:
        """Refund an order."""
        ran.append(customer)
        return "refunded"

    graph = StateGraph(Shop)
    graph.add_node("tools", ToolNode([refund]))
    graph.add_edge(START, "tools")
    app = graph.compile(checkpointer=InMemorySaver())
    call = calls(("refund", {"order_id": "A-4", "amount": 250, "currency": "EUR"}))
    config = {"configurable": {"thread_id": "thread-injected"}}
    paused = app.invoke({"messages": [call], "customer": "alice"}, config)
    assert paused["__interrupt__"][0].value["aegis"]["kind"] == "confirmation"

    edited = {"order_id": "A-4", "amount": 250, "currency": "EUR", "customer": "mallory"}
    with pytest.raises(ValidationError, match="customer cannot be edited"):  # refused before LangGraph saves it
        app.invoke(Command(resume={"type": "edit", "edited_action": {"name": "refund", "args": edited}}), config)
    assert ran == []
