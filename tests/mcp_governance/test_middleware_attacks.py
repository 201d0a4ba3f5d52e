"""Attacks on GovernanceMiddleware: each would run a tool that AEGIS did not allow on a vulnerable
implementation. The modern-era retries are driven by hand (`client.session.call_tool(...,
allow_input_required=True)`), both on an MCPServer (AEGIS's requestState sealed by the SDK's
RequestStateBoundary) and on a lowlevel Server without a boundary (AEGIS's own binding is all there is)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from mcp import Client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_platform import AegisPlatform
from mcp_types import CallToolResult, ElicitResult, InputRequiredResult, ListToolsResult, TextContent, Tool
from mw_support import ACCEPT, Answers, governed, meta_of, new_actor, text_of

from aegis_mcp import GovernanceMiddleware

KEY = "aegis_confirmation"
YES: Any = {KEY: {"action": "accept", "content": {"confirm": True}}}


def lowlevel(platform: AegisPlatform, ran: list[str]) -> Server[Any]:
    """A lowlevel Server with the middleware and no RequestStateBoundary."""

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name=n, input_schema={"type": "object"}) for n in ("refund", "add")])

    async def call_tool(ctx: Any, params: Any) -> CallToolResult:
        ran.append(params.name)
        return CallToolResult(content=[TextContent(type="text", text=f"ran {params.name}")])

    server: Server[Any] = Server("mw-lowlevel", on_list_tools=list_tools, on_call_tool=call_tool)
    server.middleware.append(GovernanceMiddleware(platform.async_client(platform.agent_key), actor=new_actor()))
    return server


@pytest.fixture(params=["mcpserver", "lowlevel"])
def target(request: pytest.FixtureRequest, platform: AegisPlatform) -> tuple[Server[Any] | MCPServer, list[str]]:
    if request.param == "mcpserver":
        made = governed(platform.async_client(platform.agent_key))
        return made.server, made.ran
    ran: list[str] = []
    return lowlevel(platform, ran), ran


async def ask(client: Client, arguments: dict[str, Any]) -> InputRequiredResult:
    first = await client.session.call_tool("refund", arguments, allow_input_required=True)
    assert isinstance(first, InputRequiredResult), first
    assert first.request_state and KEY in (first.input_requests or {})
    return first


async def refused_or_rejected(client: Client, name: str, arguments: Any, **retry: Any) -> str:
    """Call by hand; the text of a refusal, or the wire error's message (a rejected requestState)."""
    try:
        result = await client.session.call_tool(name, arguments, allow_input_required=True, **retry)
    except MCPError as exc:
        return f"error: {exc}"
    assert isinstance(result, CallToolResult) and result.is_error, result
    return text_of(result)


async def test_the_answer_cannot_be_carried_to_other_arguments(target: Any, platform: AegisPlatform) -> None:
    server, ran = target
    async with Client(server, elicitation_callback=Answers(ACCEPT)) as client:
        question = await ask(client, {"amount": 5})
        text = await refused_or_rejected(
            client, "refund", {"amount": 5000}, input_responses=YES, request_state=question.request_state
        )
    assert ran == [] and ("does not belong to this call" in text or "Invalid or expired requestState" in text)


async def test_the_answer_cannot_be_carried_to_another_tool(target: Any) -> None:
    server, ran = target
    async with Client(server, elicitation_callback=Answers(ACCEPT)) as client:
        question = await ask(client, {"amount": 5})
        text = await refused_or_rejected(
            client, "add", {"a": 1, "b": 2}, input_responses=YES, request_state=question.request_state
        )
    assert ran == [] and ("does not belong to this call" in text or "Invalid or expired requestState" in text)


async def test_the_answer_cannot_be_replayed(target: Any) -> None:
    server, ran = target
    async with Client(server, elicitation_callback=Answers(ACCEPT)) as client:
        question = await ask(client, {"amount": 5})
        done = await client.session.call_tool(
            "refund", {"amount": 5}, input_responses=YES, request_state=question.request_state
        )
        assert not done.is_error and ran == ["refund"], text_of(done)
        text = await refused_or_rejected(
            client, "refund", {"amount": 5}, input_responses=YES, request_state=question.request_state
        )
    assert ran == ["refund"] and "does not belong to this call" in text


async def test_a_forged_state_does_not_run(target: Any) -> None:
    server, ran = target
    async with Client(server, elicitation_callback=Answers(ACCEPT)) as client:
        text = await refused_or_rejected(
            client, "refund", {"amount": 5}, input_responses=YES, request_state="aegis-confirm.forged"
        )
        run_text = await refused_or_rejected(client, "refund", {"amount": 5}, request_state="aegis-run.forged")
    assert ran == []
    assert "does not belong to this call" in text or "Invalid or expired requestState" in text
    assert "does not belong to this call" in run_text or "Invalid or expired requestState" in run_text


@pytest.mark.parametrize(
    "answer",
    [
        {KEY: {"action": "accept"}},
        {KEY: {"action": "accept", "content": {"confirm": "yes"}}},
        {KEY: {"action": "accept", "content": {"confirm": 1}}},
        {"something_else": {"action": "accept", "content": {"confirm": True}}},
    ],
)
async def test_an_answer_without_confirm_true_does_not_run(target: Any, answer: dict[str, Any]) -> None:
    server, ran = target
    async with Client(server, elicitation_callback=Answers(ACCEPT)) as client:
        question = await ask(client, {"amount": 5})
        text = await refused_or_rejected(
            client, "refund", {"amount": 5}, input_responses=answer, request_state=question.request_state
        )
    assert ran == [] and "The tool did not run" in text


async def test_input_responses_without_state_ask_again(target: Any) -> None:
    server, ran = target
    async with Client(server, elicitation_callback=Answers(ACCEPT)) as client:
        again = await client.session.call_tool("refund", {"amount": 5}, input_responses=YES, allow_input_required=True)
    assert isinstance(again, InputRequiredResult) and ran == []


async def test_legacy_accept_with_a_non_boolean_confirm_does_not_run(platform: AegisPlatform) -> None:
    made = governed(platform.async_client(platform.agent_key))
    reply = ElicitResult(action="accept", content={"confirm": "yes"})
    async with Client(made.server, mode="legacy", elicitation_callback=Answers(reply)) as client:
        result = await client.call_tool("refund", {"amount": 5})
    assert result.is_error and made.ran == [] and "did not check 'Allow this call'" in text_of(result)


@pytest.mark.parametrize("arguments", [[1, 2], "a string", 42])
async def test_arguments_that_are_not_an_object_do_not_run(platform: AegisPlatform, arguments: Any) -> None:
    # The SDK's Client refuses to send these, so the raw params go straight to the middleware (as a hostile
    # client's would: the middleware runs before the SDK validates the params).
    governance = GovernanceMiddleware(platform.async_client(platform.agent_key), actor=new_actor())
    ran: list[str] = []

    async def call_next(ctx: Any) -> Any:
        ran.append("handler")
        return {"content": []}

    ctx: ServerRequestContext[Any, Any] = ServerRequestContext(
        session=None,  # type: ignore[arg-type]
        lifespan_context={},
        protocol_version="2025-11-25",
        method="tools/call",
        params={"name": "add", "arguments": arguments},
        request_id=1,
    )
    result = await governance(ctx, call_next)
    assert isinstance(result, CallToolResult) and result.is_error and ran == []
    assert "its arguments must be a JSON object" in text_of(result)


async def test_huge_arguments_are_refused_not_run_even_failing_open(platform: AegisPlatform) -> None:
    made = governed(platform.async_client(platform.agent_key), fail_open=True)
    async with Client(made.server, elicitation_callback=Answers(ACCEPT)) as client:
        result = await client.call_tool("echo", {"text": "x" * 3_000_000})
    assert result.is_error and made.ran == [] and "degraded" not in meta_of(result), text_of(result)[:300]


async def test_the_tools_own_question_still_works_under_governance(platform: AegisPlatform) -> None:
    made = governed(platform.async_client(platform.agent_key))
    answers = Answers(None, pin="4321")
    async with Client(made.server, elicitation_callback=answers) as client:
        result = await client.call_tool("add_with_pin", {"a": 1, "b": 2})
    assert not result.is_error and text_of(result) == "3 with pin 4321" and made.ran == ["add_with_pin"]
    assert answers.messages == ["Your PIN, please"]
    assert meta_of(result)["outcome"] == "ALLOW"


async def test_the_tools_own_state_cannot_resume_other_arguments(platform: AegisPlatform) -> None:
    made = governed(platform.async_client(platform.agent_key))
    async with Client(made.server, elicitation_callback=Answers(ACCEPT)) as client:
        asked = await client.session.call_tool("add_with_pin", {"a": 1, "b": 2}, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult) and asked.request_state
        [key] = list(asked.input_requests or {})
        pin = {key: {"action": "accept", "content": {"pin": "0"}}}
        text = await refused_or_rejected(
            client, "add_with_pin", {"a": 100, "b": 2}, input_responses=pin, request_state=asked.request_state
        )
    assert made.ran == [] and ("does not belong" in text or "Invalid or expired requestState" in text)


async def test_the_confirmation_token_never_leaves(platform: AegisPlatform, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = governed(platform.async_client(platform.agent_key))
    tokens: list[str] = []
    original = made.governance.client.propose

    async def spy(*args: Any, **kwargs: Any) -> Any:
        decision = await original(*args, **kwargs)
        if decision.confirmation_token:
            tokens.append(decision.confirmation_token)
        return decision

    made.governance.client.propose = spy  # type: ignore[method-assign]
    seen: list[str] = []
    async with Client(made.server, elicitation_callback=Answers(ACCEPT)) as client:
        question = await client.session.call_tool("refund", {"amount": 5}, allow_input_required=True)
        seen.append(question.model_dump_json())
        assert isinstance(question, InputRequiredResult)
        done = await client.session.call_tool(
            "refund", {"amount": 5}, input_responses=YES, request_state=question.request_state
        )
        seen.append(done.model_dump_json())
        refused = await client.call_tool("wipe", {})
        seen.append(refused.model_dump_json())
    assert tokens and made.ran == ["refund"]
    everything = "\n".join(seen) + "\n".join(record.getMessage() for record in caplog.records)
    for token in tokens:
        assert token not in everything
