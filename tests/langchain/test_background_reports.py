"""The adapter's execution reports go through the client's background reporter
(`decisions.report_execution_later`): queued when the tool returns, sent batched off the call's path, and in the
audit trail once flushed — sync and async tools, LangGraph parallel calls, and the ERROR a re-run of an allowed
step in another process still gets (against the in-process server)."""

from __future__ import annotations

import logging

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from lc_support import calls, execution_payload, scripted, tool_messages

from aegis_langchain import GovernanceMiddleware, governed_tool
from aegis_sdk import AegisClient
from aegis_server.inprocess import InProcessServer


async def test_an_async_tool_queues_its_report_and_the_flush_delivers_it(aserver: InProcessServer) -> None:
    aclient = aserver.async_client()

    @governed_tool("payments.refund", async_client=aclient, handle_tool_error=True)
    async def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        raise ToolException("the payment provider is down")

    message = await refund.ainvoke(
        {
            "type": "tool_call",
            "id": "c1",
            "name": "refund",
            "args": {"order_id": "A-9", "amount": 30, "currency": "EUR"},
        }
    )

    assert isinstance(message, ToolMessage) and message.status == "error"
    assert aclient.report_stats.queued == 1
    assert await aclient.flush_reports()
    assert (aclient.report_stats.sent, aclient.report_stats.pending) == (1, 0)
    (decision,) = [d async for d in aclient.decisions.list(capability="payments.refund", limit=1)]
    trail = (await aclient.audit.trail(decision.decision_id)).records
    (execution,) = [r for r in trail if r.event_type == "execution"]
    assert execution.payload["status"] == "FAILED"
    assert execution.payload["error"]["code"] == "ToolException"


async def test_an_async_tool_that_returns_has_no_execution_audit_ref_yet(aserver: InProcessServer) -> None:
    aclient = aserver.async_client()

    @governed_tool("payments.refund", async_client=aclient)
    async def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        return "refunded"

    message = await refund.ainvoke(
        {
            "type": "tool_call",
            "id": "c2",
            "name": "refund",
            "args": {"order_id": "A-8", "amount": 20, "currency": "EUR"},
        }
    )

    assert message.artifact["execution"] == "SUCCESS" and message.artifact["execution_audit_ref"] is None
    assert await aclient.flush_reports()
    trail = (await aclient.audit.trail(message.artifact["decision_id"])).records
    assert [r.payload["status"] for r in trail if r.event_type == "execution"] == ["SUCCESS"]


def test_parallel_tool_calls_of_an_agent_each_land_once(client: AegisClient) -> None:
    refunded: list[str] = []

    @tool
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        refunded.append(order_id)
        if order_id == "A-3":
            raise ToolException("card expired")
        return "refunded"

    model = scripted(
        calls(*[("refund", {"order_id": f"A-{n}", "amount": 10 * n, "currency": "EUR"}) for n in (1, 2, 3)]),
        AIMessage(content="done"),
    )
    middleware = GovernanceMiddleware({"refund": "payments.refund"}, client=client)
    refund.handle_tool_error = True
    agent = create_agent(model, [refund], middleware=[middleware])
    result = agent.invoke({"messages": [("user", "refund all three")]})

    assert sorted(refunded) == ["A-1", "A-2", "A-3"]
    by_call = {m.tool_call_id: m for m in tool_messages(result["messages"])}
    artifacts = [by_call[f"call_{n}"].response_metadata["aegis"] for n in (1, 2, 3)]
    assert [a["execution"] for a in artifacts] == ["SUCCESS", "SUCCESS", "FAILED"]
    assert all(a["execution_audit_ref"] is None for a in artifacts)
    statuses = [execution_payload(client, a["decision_id"])["status"] for a in artifacts]  # flushes first
    assert statuses == ["SUCCESS", "SUCCESS", "FAILED"]
    stats = client.report_stats
    assert (stats.queued, stats.sent, stats.failed, stats.synchronous) == (3, 3, 0, 0)


def test_a_re_run_in_another_process_is_logged_as_an_error(
    server: InProcessServer, reviewer: AegisClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers share one checkpointer; the first runs the allowed call of a ToolNode step that pauses on the
    other call, the second resumes the step: it meets the same ALLOW again (the proposal's Idempotency-Key)
    and, not knowing the first ran it, runs it too. Its report is answered `duplicate` on its first send: that
    is the ERROR an operator must see (the action may have been performed twice)."""
    saver = InMemorySaver()
    ran: list[tuple[str, str]] = []

    def worker(name: str, client: AegisClient) -> object:
        @governed_tool("payments.refund", client=client)
        def refund(order_id: str, amount: float, currency: str) -> str:
            """Refund an order."""
            ran.append((name, order_id))
            return "refunded"

        graph = StateGraph(MessagesState)
        graph.add_node("tools", ToolNode([refund]))
        graph.add_edge(START, "tools")
        return graph.compile(checkpointer=saver)

    first_client, second_client = server.client(), server.client()
    first, second = worker("first", first_client), worker("second", second_client)
    both = calls(
        ("refund", {"order_id": "A-1", "amount": 50, "currency": "EUR"}),
        ("refund", {"order_id": "A-2", "amount": 6000, "currency": "EUR"}),
    )
    config = {"configurable": {"thread_id": "thread-two-workers"}}
    paused = first.invoke({"messages": [both]}, config)  # type: ignore[attr-defined]
    assert ran == [("first", "A-1")]
    assert first_client.flush_reports() and first_client.report_stats.sent == 1
    reviewer.decisions.review(paused["__interrupt__"][0].value["aegis"]["decision_id"], approve=True)

    with caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        done = second.invoke(Command(resume={"type": "approve"}), config)  # type: ignore[attr-defined]
        assert second_client.flush_reports()

    assert ("second", "A-1") in ran
    again = next(m for m in tool_messages(done["messages"]) if m.tool_call_id == "call_1")
    decision_id = again.artifact["decision_id"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "aegis_sdk"]
    assert any(decision_id in r.getMessage() and "already reported" in r.getMessage() for r in errors), [
        r.getMessage() for r in caplog.records
    ]
    assert execution_payload(first_client, decision_id)["status"] == "SUCCESS"  # one record, the first's
