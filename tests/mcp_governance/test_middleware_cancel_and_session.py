"""What a client that goes away, or that has no session, cannot do: keep an allowed run out of the execution
record by cancelling it, escalate one call twice by cancelling the wait, or pick up another client's review."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_platform import AegisPlatform
from mw_support import MODES, decisions_of, executions_of, governed, meta_of, text_of

pytestmark = pytest.mark.parametrize("mode", MODES)


async def _escalations(platform: AegisPlatform, actor: str) -> list[str]:
    return [d.decision_id for d in await decisions_of(platform, actor) if d.outcome == "ESCALATE"]


async def _reports_within(platform: AegisPlatform, decision_id: str, *, seconds: float) -> list[dict[str, Any]]:
    """The decision's execution reports, once there is one (the report of a cancelled run comes after the
    client has given up)."""
    with anyio.fail_after(seconds):
        for _ in range(100_000):
            if reports := await executions_of(platform, decision_id):
                return reports
            await anyio.sleep(0.05)
    raise AssertionError("unreachable")


async def test_a_run_the_client_cancels_is_still_reported(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key), capabilities={"slow": "mcp.echo"})
    started = anyio.Event()

    @made.server.tool(description="Takes its time.")
    async def slow(text: str) -> str:
        made.ran.append("slow")
        started.set()
        await anyio.sleep(30)
        return text

    async with Client(made.server, mode=mode) as client:
        with pytest.raises(MCPError):  # the client's own timeout: it cancels the call
            await client.call_tool("slow", {"text": "x"}, read_timeout_seconds=1.0)
    assert made.ran == ["slow"]
    (allowed,) = await decisions_of(platform, made.actor)
    reports = await _reports_within(platform, allowed.decision_id, seconds=15)
    assert reports[0]["status"] == "FAILED"
    assert "cancelled" in reports[0]["error"]["message"]


async def test_a_wait_the_client_cancels_is_picked_up_by_the_same_call(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key), review_timeout=30.0)
    async with Client(made.server, mode=mode) as client:
        with pytest.raises(MCPError):
            await client.call_tool("deploy", {"service": "api"}, read_timeout_seconds=1.0)
        (pending,) = await _escalations(platform, made.actor)
        async with platform.async_client(platform.reviewer_key) as reviewer:
            await reviewer.decisions.review(pending, approve=True)
        again = await client.call_tool("deploy", {"service": "api"})
    assert not again.is_error and made.ran == ["deploy"], text_of(again)
    assert await _escalations(platform, made.actor) == [pending]


async def test_without_a_session_a_call_never_picks_up_an_earlier_review(platform: AegisPlatform, mode: Any) -> None:
    """Streamable HTTP from 2026-07-28 has no session: nothing tells one client's call from another's, so an
    approval given for one is never carried to the next call; each asks for its own review."""
    made = governed(platform.async_client(platform.agent_key), review_timeout=0.5, session_id=lambda ctx: None)
    async with Client(made.server, mode=mode) as client:
        first = await client.call_tool("deploy", {"service": "api"})
        assert first.is_error and "no MCP session" in text_of(first)
        approved = meta_of(first)["decision_id"]
        async with platform.async_client(platform.reviewer_key) as reviewer:
            await reviewer.decisions.review(approved, approve=True)
        second = await client.call_tool("deploy", {"service": "api"})
    assert second.is_error and meta_of(second)["decision_id"] != approved and made.ran == []
    assert len(await _escalations(platform, made.actor)) == 2
