"""A real tool-calling loop (LangChain v1 `create_agent`, driven by langchain-core's fake chat model) with
governed tools and with the governance middleware, sync and async, against the in-process server."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from lc_support import calls, execution_payload, scripted, tool_messages

from aegis_langchain import GovernanceMiddleware, governed_tool
from aegis_sdk import AegisClient, AsyncAegisClient, Decision
from aegis_server.inprocess import InProcessServer


def test_agent_with_governed_tools_each_outcome(client: AegisClient) -> None:
    ran: list[str] = []

    @governed_tool("database.query", client=client, actor="support-bot")
    def query(query: str, database: str) -> str:
        """Run one SQL statement."""
        ran.append(query)
        return "42 rows"

    @governed_tool("payments.refund", client=client, actor="support-bot", confirm=lambda d: True)
    def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(f"refund {order_id}")
        return "refunded"

    model = scripted(
        calls(
            ("query", {"query": "SELECT * FROM users LIMIT 10", "database": "production"}),
            ("query", {"query": "DROP TABLE users", "database": "production"}),
            ("refund", {"order_id": "A-1", "amount": 250, "currency": "EUR"}),
        ),
        AIMessage(content="Done: one query ran, the DROP was refused, the refund went through."),
    )
    agent = create_agent(model, [query, refund])
    result = agent.invoke({"messages": [("user", "clean up")]}, {"configurable": {"thread_id": "sess-1"}})

    # the model was shown the tools exactly as plain tools would be
    assert model.bound[0] == [convert_to_openai_tool(query.tool), convert_to_openai_tool(refund.tool)]
    messages = tool_messages(result["messages"])
    by_call = {m.tool_call_id: m for m in messages}
    assert by_call["call_1"].content == "42 rows" and by_call["call_1"].status == "success"
    assert by_call["call_2"].status == "error" and "Destructive SQL" in by_call["call_2"].content
    assert by_call["call_3"].content == "refunded"
    assert sorted(ran) == ["SELECT * FROM users LIMIT 10", "refund A-1"]
    assert [by_call[c].artifact["outcome"] for c in ("call_1", "call_2", "call_3")] == ["ALLOW", "DENY", "ALLOW"]
    assert result["messages"][-1].content.startswith("Done")
    # the session is the agent's thread; executions are in the audit trail
    for call_id in ("call_1", "call_3"):
        decision_id = by_call[call_id].artifact["decision_id"]
        assert client.audit.trail(decision_id).records[0].session_id == "sess-1"
        assert execution_payload(client, decision_id)["status"] == "SUCCESS"


async def test_async_agent_uses_the_async_client(aserver: InProcessServer) -> None:
    aclient = aserver.async_client()
    confirmations: list[Decision] = []
    ran: list[str] = []

    async def confirm(decision: Decision) -> bool:
        confirmations.append(decision)
        return True

    # no sync client exists anywhere: a sync call would raise ConfigurationError
    @governed_tool("payments.refund", async_client=aclient, confirm=confirm)
    async def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        ran.append(order_id)
        return f"refunded {order_id}"

    model = scripted(
        calls(
            ("refund", {"order_id": "A-1", "amount": 40, "currency": "EUR"}),
            ("refund", {"order_id": "A-2", "amount": 400, "currency": "EUR"}),
        ),
        AIMessage(content="ok"),
    )
    agent = create_agent(model, [refund])
    result = await agent.ainvoke({"messages": [("user", "refund both")]})

    messages = {m.tool_call_id: m for m in tool_messages(result["messages"])}
    assert messages["call_1"].content == "refunded A-1"
    assert messages["call_2"].content == "refunded A-2"
    assert messages["call_2"].artifact["parent_decision_id"] == confirmations[0].decision_id
    assert sorted(ran) == ["A-1", "A-2"]
    assert await aclient.flush_reports()  # the reports were queued, sent in the background
    trail = await aclient.audit.trail(messages["call_2"].artifact["decision_id"])
    assert [r.payload.get("status") for r in trail.records if r.event_type == "execution"] == ["SUCCESS"]


async def test_async_escalation_denied_and_unreachable(aserver: InProcessServer, closed_port: int) -> None:
    aclient = aserver.async_client()
    reviewer = aserver.async_client(await aserver.acreate_key("operator", ["governance:review"]))

    async def operator(decision: Decision) -> None:
        await reviewer.decisions.review(decision.decision_id, approve=False, note="no")

    @governed_tool("payments.refund", async_client=aclient, on_escalation=operator)
    async def refund(order_id: str, amount: float, currency: str) -> str:
        """Refund an order."""
        raise AssertionError("must not run")

    message = await refund.ainvoke(
        {
            "type": "tool_call",
            "id": "c1",
            "name": "refund",
            "args": {"order_id": "A", "amount": 5000, "currency": "EUR"},
        }
    )
    assert message.status == "error" and message.artifact["refusal"] == "review_denied"

    async with AsyncAegisClient(endpoint=f"http://127.0.0.1:{closed_port}", api_key="aegis_sk_x", retries=0) as down:

        @governed_tool("payments.refund", async_client=down)
        async def refund_down(order_id: str, amount: float, currency: str) -> str:
            """Refund an order."""
            raise AssertionError("must not run")

        message = await refund_down.ainvoke(
            {
                "type": "tool_call",
                "id": "c2",
                "name": "refund_down",
                "args": {"order_id": "A", "amount": 5, "currency": "EUR"},
            }
        )
    assert message.status == "error" and message.artifact["refusal"] == "unavailable"


def test_middleware_governs_every_tool_call(client: AegisClient) -> None:
    executed: list[str] = []

    @tool
    def run_sql(query: str, database: str = "production") -> str:
        """Run SQL."""
        executed.append(query)
        return "rows"

    @tool
    def shell(command: str) -> str:
        """Run a shell command."""
        executed.append(command)
        return "ok"

    middleware = GovernanceMiddleware({"run_sql": "database.query", "shell": "shell.exec"}, client=client)
    model = scripted(
        calls(
            ("run_sql", {"query": "SELECT 1"}),
            ("run_sql", {"query": "DROP TABLE users"}),
            ("shell", {"command": "rm -rf /"}),
            ("shell", {"command": "git status"}),
        ),
        AIMessage(content="done"),
    )
    agent = create_agent(model, [run_sql, shell], middleware=[middleware])
    result = agent.invoke({"messages": [("user", "go")]})

    by_call = {m.tool_call_id: m for m in tool_messages(result["messages"])}
    assert sorted(executed) == ["SELECT 1", "git status"]
    assert [by_call[f"call_{n}"].status for n in range(1, 5)] == ["success", "error", "error", "success"]
    assert [by_call[f"call_{n}"].response_metadata["aegis"]["outcome"] for n in range(1, 5)] == [
        "ALLOW",
        "DENY",
        "DENY",
        "ALLOW",
    ]
    allowed = by_call["call_1"].artifact
    assert allowed["constraints"] == {"max_rows": 1000}
    assert execution_payload(client, allowed["decision_id"])["status"] == "SUCCESS"
    proposal = client.audit.trail(allowed["decision_id"]).records[0].payload
    assert proposal["action"]["parameters"] == {"query": "SELECT 1", "database": "production"}


async def test_middleware_async_with_confirmation(aserver: InProcessServer) -> None:
    aclient = aserver.async_client()
    sent: list[list[str]] = []

    @tool("email.send")
    async def send(to: list[str], subject: str) -> str:
        """Send an email."""
        sent.append(to)
        return "sent"

    answers = iter([False, True])
    middleware = GovernanceMiddleware(async_client=aclient, confirm=lambda decision: next(answers))
    model = scripted(
        calls(("email.send", {"to": ["jane@customer.org"], "subject": "Your refund"})),
        calls(("email.send", {"to": ["jane@customer.org"], "subject": "Your refund"}), prefix="retry"),
        AIMessage(content="sent after the user agreed"),
    )
    agent = create_agent(model, [send], middleware=[middleware])
    result = await agent.ainvoke({"messages": [("user", "tell jane")]})

    messages: list[ToolMessage] = tool_messages(result["messages"])
    assert [m.status for m in messages] == ["error", "success"]
    assert "did not confirm" in str(messages[0].content)
    assert messages[1].artifact["parent_decision_id"] is not None
    assert sent == [["jane@customer.org"]]


def test_middleware_skips_tools_that_are_already_governed(client: AegisClient) -> None:
    @governed_tool("email.send", client=client)
    def send(to: list[str], subject: str) -> str:
        """Send an email."""
        return "sent"

    model = scripted(calls(("send", {"to": ["ops@example.com"], "subject": "s"})), AIMessage(content="ok"))
    agent = create_agent(model, [send], middleware=[GovernanceMiddleware(client=client)])
    agent.invoke({"messages": [("user", "go")]})
    assert len(list(client.decisions.list(capability="email.send"))) == 1
