"""A governed LangChain agent: LangChain v1 `create_agent` with tools governed by AEGIS, driven by a scripted
fake chat model, so it runs offline with no API key for any LLM.

    uv run python examples/langchain_agent.py

`main()` starts the AEGIS platform in-process (no socket) with examples/policies/. `run_agent(client)` is
what the demo calls with its own `AegisClient`: it runs the agent once and returns, for every tool call the
model made, `(tool call, outcome, result)`.

The model asks for five tool calls; AEGIS decides each one:
- a read-only SQL query                     → ALLOW, the query runs (with the decision's `max_rows`)
- `DROP TABLE`                              → DENY, the model reads the refusal
- a refund of 250 EUR                       → REQUIRE_CONFIRMATION, the user says yes, it runs
- an email to a customer                    → REQUIRE_CONFIRMATION, the user says no, nothing is sent
- a refund of 5000 EUR                      → ESCALATE, the agent does not wait: pending an operator
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, ToolMessage

from aegis_langchain import GovernedTool, current_decision, governed_tool
from aegis_sdk import AegisClient, Decision

POLICIES = Path(__file__).resolve().parent / "policies"
ACTOR = {"id": "langchain-support-bot", "type": "ai-agent"}


class ScriptedChatModel(FakeMessagesListChatModel):
    """langchain-core's fake chat model, answering with scripted messages, plus `bind_tools` so that a
    tool-calling agent accepts it (the tools it is shown are ignored: the script decides)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


class AgentStep(NamedTuple):
    tool_call: dict[str, Any]
    outcome: str
    result: str


def _user_agrees(decision: Decision) -> bool:
    """The end user's answer when a refund needs confirmation (a real app would ask them)."""
    return True


def _user_refuses(decision: Decision) -> bool:
    """The end user's answer when an email to a customer needs confirmation."""
    return False


def build_tools(client: AegisClient) -> list[GovernedTool]:
    settings: dict[str, Any] = {"client": client, "actor": ACTOR, "on_escalate": "raise"}

    @governed_tool("database.query", **settings)
    def query(query: str, database: str) -> str:
        """Run one SQL statement against an application database."""
        decision = current_decision()
        limit = decision.constraints.get("max_rows") if decision else None
        return f"3 rows (at most {limit})"

    @governed_tool("payments.refund", confirm=_user_agrees, **settings)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund (part of) an order to the customer's card."""
        return f"refunded {amount:g} {currency} on {order_id}"

    @governed_tool("email.send", confirm=_user_refuses, **settings)
    def send_email(to: list[str], subject: str, body: str = "") -> str:
        """Send an email on the company's behalf."""
        return f"sent to {', '.join(to)}"

    return [query, refund, send_email]


def _script() -> list[AIMessage]:
    def call(n: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "args": args, "id": f"call_{n}", "type": "tool_call"}

    return [
        AIMessage(
            content="",
            tool_calls=[
                call(1, "query", {"query": "SELECT id, email FROM users LIMIT 3", "database": "production"}),
                call(2, "query", {"query": "DROP TABLE users", "database": "production"}),
                call(3, "refund", {"order_id": "A-1003", "amount": 250, "currency": "EUR"}),
                call(4, "send_email", {"to": ["jane@customer.org"], "subject": "Your refund"}),
                call(5, "refund", {"order_id": "A-1004", "amount": 5000, "currency": "EUR"}),
            ],
        ),
        AIMessage(content="Done: the query and the small refund ran; the rest were stopped by governance."),
    ]


def _outcome(message: ToolMessage) -> str:
    record = message.artifact if isinstance(message.artifact, dict) else {}
    if record.get("refusal") is None:
        return "ALLOW (confirmed)" if record.get("parent_decision_id") else "ALLOW"
    return f"{record.get('outcome') or 'NO DECISION'} ({record['refusal']})"


def run_agent(client: AegisClient, *, thread_id: str | None = None) -> list[AgentStep]:
    """Run the governed agent once with `client` (an AegisClient whose key may propose, read and report);
    return every tool call with its outcome and the result the model was given."""
    agent = create_agent(ScriptedChatModel(responses=_script()), build_tools(client))
    config = {"configurable": {"thread_id": thread_id or f"lc-demo-{uuid.uuid4().hex[:8]}"}}
    state = agent.invoke({"messages": [("user", "Tidy up the support queue.")]}, config)
    calls = {c["id"]: c for m in state["messages"] if isinstance(m, AIMessage) for c in m.tool_calls}
    return [
        AgentStep(dict(calls[m.tool_call_id]), _outcome(m), str(m.content))
        for m in state["messages"]
        if isinstance(m, ToolMessage)
    ]


def print_steps(steps: Sequence[AgentStep]) -> None:
    for step in steps:
        args = ", ".join(f"{k}={v!r}" for k, v in step.tool_call["args"].items())
        print(f"{step.tool_call['name']}({args})")
        print(f"    {step.outcome}: {step.result}")


def main() -> int:
    from aegis_server.inprocess import InProcessServer

    # The client closes before the server stops: closing sends the execution reports still queued.
    with InProcessServer(policy_paths=[POLICIES]) as server, server.client() as client:
        steps = run_agent(client)
        print_steps(steps)
        expected = ["ALLOW", "DENY (denied)", "ALLOW (confirmed)", "REQUIRE_CONFIRMATION (confirmation_declined)"]
        expected.append("ESCALATE (review_pending)")
        return 0 if [s.outcome for s in steps] == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
