"""Every outcome of GovernanceMiddleware on an MCPServer, through the SDK's `Client` in process, in both eras
(`legacy`: elicitation/create mid-call; `auto`: the 2026-07-28 InputRequiredResult round trip), against the
real aegis-server of the session."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_platform import AegisPlatform, free_port
from mcp_types import ElicitResult
from mw_support import (
    ACCEPT,
    CANCEL,
    DECLINE,
    MODES,
    Answers,
    approve_when_pending,
    decisions_of,
    executions_of,
    governed,
    meta_of,
    text_of,
)

from aegis_sdk import AsyncAegisClient

pytestmark = pytest.mark.parametrize("mode", MODES)


async def test_allow_runs_and_reports_success(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key))
    async with Client(made.server, mode=mode) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert not result.is_error and text_of(result) == "5"
    assert made.ran == ["add"]
    meta = meta_of(result)
    assert meta["outcome"] == "ALLOW" and meta["capability"] == "mcp.add"
    assert meta["decision_id"].startswith("dec_") and meta["policy_ids"] and "degraded" not in meta
    [decision] = await decisions_of(platform, made.actor)
    assert decision.decision_id == meta["decision_id"]
    assert made.governance.client.report_stats.queued == 1  # queued on the call's path, sent in the background
    [report] = await executions_of(platform, decision.decision_id, made.governance)
    assert report["status"] == "SUCCESS"


async def test_deny_never_runs_and_names_the_decision(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key))
    async with Client(made.server, mode=mode) as client:
        result = await client.call_tool("wipe", {})
    assert result.is_error and made.ran == []
    [decision] = await decisions_of(platform, made.actor)
    assert decision.outcome == "DENY"
    assert text_of(result).startswith("AEGIS denied the tool call 'wipe': ") and "Wiping is never allowed" in text_of(
        result
    )
    assert decision.decision_id in text_of(result)
    assert meta_of(result)["refused"] == "denied" and meta_of(result)["decision_id"] == decision.decision_id


async def test_a_failing_tool_is_reported_failed(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key))
    async with Client(made.server, mode=mode) as client:
        result = await client.call_tool("fail", {})
    assert result.is_error and made.ran == ["fail"]
    [report] = await executions_of(platform, meta_of(result)["decision_id"], made.governance)
    assert report["status"] == "FAILED" and report["error"]["code"] == "tool_error"
    assert "Error executing tool fail" in report["error"]["message"]


async def test_confirmation_accepted_runs_once(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key))
    answers = Answers(ACCEPT)
    async with Client(made.server, mode=mode, elicitation_callback=answers) as client:
        result = await client.call_tool("refund", {"amount": 5})
    assert not result.is_error and text_of(result) == "refunded 5.0" and made.ran == ["refund"]
    [question] = answers.messages
    assert "Tool: refund (capability mcp.refund)" in question and '"amount": 5' in question
    assert (
        "Why: REQUIRE_CONFIRMATION by mcp-tools/refund: Refunds need the user's consent" in question
        and "Risk: " in question
    )
    assert meta_of(result)["outcome"] == "ALLOW"
    assert "confirmation_token" not in str(result.model_dump())


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (DECLINE, "The user declined"),
        (CANCEL, "The user dismissed the question"),
        (ElicitResult(action="accept", content={"confirm": False}), "did not check 'Allow this call'"),
    ],
)
async def test_confirmation_not_given_refuses(
    platform: AegisPlatform, mode: Any, reply: ElicitResult, said: str
) -> None:
    made = governed(platform.async_client(platform.agent_key))
    async with Client(made.server, mode=mode, elicitation_callback=Answers(reply)) as client:
        result = await client.call_tool("refund", {"amount": 5})
    assert result.is_error and made.ran == []
    assert said in text_of(result) and "The tool did not run" in text_of(result)
    assert meta_of(result)["refused"] == "confirmation_declined"


async def test_a_client_without_elicitation_is_refused(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key))
    async with Client(made.server, mode=mode) as client:
        result = await client.call_tool("refund", {"amount": 5})
    assert result.is_error and made.ran == []
    assert "this MCP client cannot ask the user (it has no elicitation)" in text_of(result)
    assert meta_of(result)["refused"] == "confirmation_unavailable"


async def test_escalation_approved_while_waiting_runs(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key), review_timeout=30.0)
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with Client(made.server, mode=mode) as client, anyio.create_task_group() as group:
        group.start_soon(approve_when_pending, platform, made.actor)
        result = await client.call_tool("deploy", {}, progress_callback=on_progress)  # type: ignore[arg-type]
    assert not result.is_error and made.ran == ["deploy"], text_of(result)
    assert progress and "Waiting for an operator to review decision dec_" in (progress[0][2] or "")
    assert progress[0][1] == 30.0


async def test_escalation_denied_refuses(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key), review_timeout=30.0)
    async with Client(made.server, mode=mode) as client, anyio.create_task_group() as group:
        group.start_soon(lambda: approve_when_pending(platform, made.actor, approve=False))
        result = await client.call_tool("deploy", {})
    assert result.is_error and made.ran == []
    assert "the operator review was denied" in text_of(result) and "checked by the test" in text_of(result)
    assert meta_of(result)["refused"] == "review_denied"


async def test_escalation_timed_out_reattaches_without_a_second_escalation(platform: AegisPlatform, mode: Any) -> None:
    made = governed(platform.async_client(platform.agent_key), review_timeout=0.5)
    async with Client(made.server, mode=mode) as client:
        first = await client.call_tool("deploy", {"service": "api"})
        assert first.is_error and meta_of(first)["refused"] == "review_pending" and made.ran == []
        assert "Call the tool again with the same arguments later" in text_of(first)
        pending = meta_of(first)["decision_id"]
        second = await client.call_tool("deploy", {"service": "api"})
        assert second.is_error and meta_of(second)["decision_id"] == pending
        async with platform.async_client(platform.reviewer_key) as reviewer:
            await reviewer.decisions.review(pending, approve=True)
        third = await client.call_tool("deploy", {"service": "api"})
    assert not third.is_error and made.ran == ["deploy"], text_of(third)
    escalations = [d for d in await decisions_of(platform, made.actor) if d.outcome == "ESCALATE"]
    assert [d.decision_id for d in escalations] == [pending]


async def test_platform_down_refuses(mode: Any) -> None:
    made = governed(AsyncAegisClient(endpoint=f"http://127.0.0.1:{free_port()}", api_key="k", retries=0))
    async with Client(made.server, mode=mode) as client:
        result = await client.call_tool("add", {"a": 1, "b": 1})
    assert result.is_error and made.ran == []
    assert "the AEGIS platform did not answer" in text_of(result) and "fail closed" in text_of(result)
    assert meta_of(result)["refused"] == "governance_unavailable"


async def test_platform_down_with_fail_open_runs_degraded(mode: Any) -> None:
    client_of_nothing = AsyncAegisClient(endpoint=f"http://127.0.0.1:{free_port()}", api_key="k", retries=0)
    made = governed(client_of_nothing, fail_open=True)
    async with Client(made.server, mode=mode) as client:
        result = await client.call_tool("add", {"a": 1, "b": 1})
    assert not result.is_error and made.ran == ["add"]
    assert meta_of(result)["degraded"] is True and meta_of(result)["outcome"] == "ALLOW"
    assert client_of_nothing.report_stats.queued == 0  # a degraded decision is never reported (AEGIS never saw it)
