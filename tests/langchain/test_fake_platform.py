"""The package against aegis_sdk.testing.FakePlatform (no server): how users unit-test governed tools, and
the suite that runs on Python 3.10 from the built wheels (it imports no aegis_server)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from lc_support import calls, scripted, tool_messages

from aegis_langchain import ActionDenied, GovernanceMiddleware, GovernanceUnavailable, governed_tool
from aegis_sdk import Decision
from aegis_sdk.testing import FakePlatform


def test_each_outcome_sync() -> None:
    fake = FakePlatform()
    fake.script("files.delete", lambda p: "DENY" if p.action.parameters["path"].startswith("/etc") else "ALLOW")
    deleted: list[str] = []
    with fake.client() as aegis:

        @governed_tool("files.delete", client=aegis, handle_tool_error=False)
        def delete(path: str) -> str:
            """Delete a file."""
            deleted.append(path)
            return "deleted"

        assert delete.invoke({"path": "/tmp/x"}) == "deleted"
        with pytest.raises(ActionDenied):
            delete.invoke({"path": "/etc/passwd"})
    assert deleted == ["/tmp/x"]
    fake.assert_proposed("files.delete", path="/tmp/x")
    allowed = [d for d in fake.decisions.values() if d.outcome == "ALLOW"]
    assert [fake.executions[d.decision_id].status for d in allowed] == ["SUCCESS"]


async def test_confirmation_and_review_async() -> None:
    fake = FakePlatform()
    fake.script("payments.refund", "REQUIRE_CONFIRMATION")
    fake.script("deploy.production", "ESCALATE")
    ran: list[str] = []

    async def yes(decision: Decision) -> bool:
        return True

    def approve(decision: Decision) -> None:
        fake.approve(decision.decision_id)

    async with fake.async_client() as aegis:

        @governed_tool("payments.refund", async_client=aegis, confirm=yes)
        async def refund(order_id: str) -> str:
            """Refund."""
            ran.append(order_id)
            return "refunded"

        @governed_tool("deploy.production", async_client=aegis, on_escalation=approve)
        async def deploy(version: str) -> str:
            """Deploy."""
            ran.append(version)
            return "deployed"

        assert await refund.ainvoke({"order_id": "A-1"}) == "refunded"
        assert await deploy.ainvoke({"version": "2.0"}) == "deployed"
    assert ran == ["A-1", "2.0"]


def test_platform_down_fails_closed() -> None:
    fake = FakePlatform()
    fake.fail_with_connect_error(times=10)
    with fake.client(retries=1) as aegis:

        @governed_tool("email.send", client=aegis, handle_tool_error=False)
        def send(to: str) -> str:
            """Send."""
            raise AssertionError("must not run")

        with pytest.raises(GovernanceUnavailable):
            send.invoke({"to": "a@example.com"})


def test_middleware_and_interrupt_with_a_fake_platform() -> None:
    fake = FakePlatform()
    fake.script("shell.exec", "ESCALATE")
    ran: list[str] = []

    @tool
    def shell(command: str) -> str:
        """Run a command."""
        ran.append(command)
        return "ok"

    with fake.client() as aegis:
        middleware = GovernanceMiddleware({"shell": "shell.exec"}, client=aegis)  # pauses: the graph can
        model = scripted(calls(("shell", {"command": "sudo reboot"})), AIMessage(content="done"))
        agent = create_agent(model, [shell], middleware=[middleware], checkpointer=InMemorySaver())
        config: Any = {"configurable": {"thread_id": "t"}}
        paused = agent.invoke({"messages": [("user", "reboot")]}, config)
        decision_id = paused["__interrupt__"][0].value["aegis"]["decision_id"]
        fake.approve(decision_id)
        done = agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
    assert ran == ["sudo reboot"]
    assert tool_messages(done["messages"])[0].content == "ok"
    assert len([p for p in fake.proposals if p.confirmation_token is None]) == 1


def test_escalation_expired_before_review() -> None:
    fake = FakePlatform()
    fake.script("deploy.production", "ESCALATE")
    with fake.client() as aegis:

        @governed_tool("deploy.production", client=aegis, on_escalation=lambda d: fake.expire(d.decision_id))
        def deploy(version: str) -> str:
            """Deploy."""
            raise AssertionError("must not run")

        message = deploy.invoke({"type": "tool_call", "id": "c1", "name": "deploy", "args": {"version": "1"}})
    assert message.status == "error" and message.artifact["refusal"] == "review_expired"
    assert "deadline" in message.content
