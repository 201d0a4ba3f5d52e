"""No duplicate escalations: a call that left its escalation pending (a wait that timed out, raise mode) and
is called again — same actor, capability, parameters and session — re-attaches to that decision instead
of escalating again. Anything else about the call that differs is a new proposal."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from lc_support import calls, scripted, tool_messages

from aegis_langchain import GovernedTool, governed_tool
from aegis_sdk import AegisClient

ARGS = {"order_id": "A-70", "amount": 5000, "currency": "EUR"}


def make_refund(client: AegisClient, ran: list[str], **settings: Any) -> GovernedTool:
    @governed_tool("payments.refund", client=client, actor="billing-bot", **settings)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return f"refunded {order_id}"

    return refund


def tool_call(call_id: str, **changes: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": "refund", "args": {**ARGS, **changes}}


def session(name: str) -> dict[str, Any]:
    return {"metadata": {"aegis_session_id": name}}


def escalations(client: AegisClient) -> list[str]:
    """Every proposal of a refund (an approval's ALLOW has the escalation as its parent)."""
    return [d.decision_id for d in client.decisions.list(capability="payments.refund") if d.parent_decision_id is None]


def test_the_models_retry_after_a_timed_out_wait_waits_on_the_same_escalation(
    client: AegisClient, reviewer: AegisClient
) -> None:
    ran: list[str] = []
    refund = make_refund(client, ran, review_timeout=0.2)  # outside a graph, "auto" waits
    model = scripted(
        calls(("refund", ARGS)),
        calls(("refund", ARGS), prefix="retry"),
        AIMessage(content="it awaits approval"),
    )
    agent = create_agent(model, [refund])
    result = agent.invoke({"messages": [("user", "refund A-70")]}, session("ticket-70"))

    first, second = tool_messages(result["messages"])
    assert first.artifact["refusal"] == second.artifact["refusal"] == "review_timeout"
    assert "same arguments picks up the same request" in first.content
    (decision_id,) = escalations(client)  # one escalation, not one per attempt
    assert first.artifact["decision_id"] == second.artifact["decision_id"] == decision_id
    assert ran == []

    reviewer.decisions.review(decision_id, approve=True)
    message = refund.invoke(tool_call("call_3"), session("ticket-70"))

    assert ran == ["A-70"]
    assert message.artifact["parent_decision_id"] == decision_id
    assert escalations(client) == [decision_id]
    # used: the next identical call is a new proposal
    refund.invoke(tool_call("call_4"), session("ticket-70"))
    assert len(escalations(client)) == 2


def test_raise_mode_retries_reattach_until_the_review(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[str] = []
    refund = make_refund(client, ran, on_escalate="raise")
    first = refund.invoke(tool_call("c1"), session("s"))
    again = refund.invoke(tool_call("c2"), session("s"))
    assert first.artifact["decision_id"] == again.artifact["decision_id"]
    assert again.artifact["refusal"] == "review_pending" and ran == []

    reviewer.decisions.review(first.artifact["decision_id"], approve=False, note="no")
    denied = refund.invoke(tool_call("c3"), session("s"))
    assert denied.artifact["refusal"] == "review_denied" and "no" in denied.content
    assert len(escalations(client)) == 1
    refund.invoke(tool_call("c4"), session("s"))  # after the denial was read, a retry asks again
    assert len(escalations(client)) == 2


def test_another_session_actor_or_argument_is_a_new_escalation(client: AegisClient) -> None:
    refund = make_refund(client, [], on_escalate="raise")
    refund.invoke(tool_call("c1"), session("s"))
    refund.invoke(tool_call("c2"), session("other"))
    refund.invoke(tool_call("c3", amount=6000), session("s"))
    refund.invoke(tool_call("c4"), {"metadata": {"aegis_session_id": "s", "aegis_actor": "another-bot"}})
    assert len(escalations(client)) == 4
    refund.invoke(tool_call("c5"), session("s"))
    assert len(escalations(client)) == 4


def test_another_client_does_not_reattach(client: AegisClient, server: Any) -> None:
    mine = make_refund(client, [], on_escalate="raise")
    other_key = server.client(server.create_key("other-agent", ["governance:propose", "governance:read"]))
    theirs = make_refund(other_key, [], on_escalate="raise")
    first = mine.invoke(tool_call("c1"), session("s"))
    second = theirs.invoke(tool_call("c2"), session("s"))
    assert first.artifact["decision_id"] != second.artifact["decision_id"]
