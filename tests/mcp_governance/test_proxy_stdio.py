"""The governing proxy over stdio, as a desktop or coding assistant starts it: `python -m aegis_mcp proxy
--actor ... -- UPSTREAM`, reached with the mcp SDK's `Client`, in front of the real test upstream, against a
real aegis-server. Every outcome; the upstream's run log tells whether a call reached it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import Client, StdioServerParameters, stdio_client
from mcp_platform import AegisPlatform, free_port, recorded_runs
from mcp_types import ElicitResult
from proxy_support import StdioTransport, execution_status, governance, proxy_env, proxy_over_stdio, text_of

MODES = ["legacy", "auto"]
PROGRESS_UPSTREAM = Path(__file__).resolve().parent / "mcp_progress_server.py"


def _direct(upstream_command: list[str]) -> StdioTransport:
    return stdio_client(StdioServerParameters(command=upstream_command[0], args=upstream_command[1:]))


async def test_the_client_sees_the_upstreams_tools_resources_and_prompts_unchanged(
    platform: AegisPlatform, upstream_command: list[str]
) -> None:
    async with Client(_direct(upstream_command)) as direct:
        tools = (await direct.list_tools()).tools
        resources = (await direct.list_resources()).resources
        prompts = (await direct.list_prompts()).prompts
        note = await direct.read_resource("note://welcome")
        greeting = await direct.get_prompt("greet", {"name": "Ada"})
    async with Client(proxy_over_stdio(platform, upstream_command)) as proxied:
        proxied_tools = (await proxied.list_tools()).tools
        proxied_resources = (await proxied.list_resources()).resources
        proxied_prompts = (await proxied.list_prompts()).prompts
        proxied_note = await proxied.read_resource("note://welcome")
        proxied_greeting = await proxied.get_prompt("greet", {"name": "Ada"})
        instructions = proxied.instructions
    assert [tool.model_dump() for tool in proxied_tools] == [tool.model_dump() for tool in tools]
    assert len(tools) == 7 and all(tool.input_schema for tool in tools)
    assert [r.model_dump() for r in proxied_resources] == [r.model_dump() for r in resources]
    assert [p.model_dump() for p in proxied_prompts] == [p.model_dump() for p in prompts]
    assert proxied_note.model_dump(exclude={"meta"}) == note.model_dump(exclude={"meta"})
    assert proxied_greeting.model_dump(exclude={"meta"}) == greeting.model_dump(exclude={"meta"})
    assert instructions == "Tools for the aegis-mcp tests."


@pytest.mark.parametrize("mode", MODES)
async def test_every_immediate_outcome_in_both_protocol_eras(
    platform: AegisPlatform, upstream_command: list[str], run_log: Path, mode: str
) -> None:
    """ALLOW forwarded and reported; DENY never reaches the upstream; REQUIRE_CONFIRMATION asks the user:
    accepted → forwarded, declined → refused."""
    answers = ["accept", "decline"]
    asked: list[str] = []

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        action = answers.pop(0)
        return ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)  # type: ignore[arg-type]

    server = proxy_over_stdio(platform, upstream_command)
    async with Client(server, mode=mode, elicitation_callback=elicit) as client:
        added = await client.call_tool("add", {"a": 2, "b": 3})
        wiped = await client.call_tool("wipe", {})
        failed = await client.call_tool("fail", {})
        accepted = await client.call_tool("refund", {"amount": 12.5})
        declined = await client.call_tool("refund", {"amount": 99})
    assert not added.is_error
    assert added.structured_content == {"result": 5}
    assert governance(added)["outcome"] == "ALLOW"
    assert wiped.is_error
    decision_id = governance(wiped)["decision_id"]
    assert decision_id in text_of(wiped) and "Wiping is never allowed" in text_of(wiped)
    assert failed.is_error and "fail" in text_of(failed)
    assert [await execution_status(platform, r) for r in (added, failed)] == ["SUCCESS", "FAILED"]
    assert not accepted.is_error and text_of(accepted) == "refunded 12.5"
    assert len(asked) == 2 and "refund" in asked[0]
    assert declined.is_error and governance(declined)["decision_id"] in text_of(declined)
    # never the wipe, nor the declined refund
    assert recorded_runs(run_log) == ['add {"a": 2, "b": 3}', "fail {}", 'refund {"amount": 12.5}']


async def test_without_elicitation_or_review_the_calls_are_refused_and_a_crash_is_survived(
    platform: AegisPlatform, upstream_command: list[str], run_log: Path
) -> None:
    """A client without elicitation is refused a confirmation and told why; an escalation nobody reviews in
    time is refused with its decision id; an upstream crash fails the call in flight (reported FAILED) and
    the next call restarts the upstream."""
    async with Client(proxy_over_stdio(platform, upstream_command, "--review-timeout", "0.3")) as client:
        with anyio.fail_after(60):
            unconfirmed = await client.call_tool("refund", {"amount": 1})
            expired = await client.call_tool("deploy", {"service": "db"})
            crashed = await client.call_tool("crash", {})
            again = await client.call_tool("add", {"a": 1, "b": 1})
    assert unconfirmed.is_error and "elicitation" in text_of(unconfirmed)
    assert expired.is_error
    decision_id = governance(expired)["decision_id"]
    assert decision_id in text_of(expired)
    async with platform.async_client() as aegis:
        pending = await aegis.decisions.get(decision_id)
    assert pending.outcome == "ESCALATE"
    assert crashed.is_error and "stopped" in text_of(crashed)
    assert await execution_status(platform, crashed) == "FAILED"
    assert not again.is_error and again.structured_content == {"result": 2}
    assert recorded_runs(run_log) == ["crash {}", 'add {"a": 1, "b": 1}']


async def test_escalation_approved_while_the_call_waits_with_progress(
    platform: AegisPlatform, upstream_command: list[str], run_log: Path
) -> None:
    messages: list[str] = []
    approved: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if not approved and message and "decision " in message:
            decision_id = message.split("decision ", 1)[1].split(":", 1)[0]
            async with platform.async_client(platform.reviewer_key) as reviewer:
                approved.append(await reviewer.decisions.review(decision_id, approve=True, note="ok"))

    async with Client(proxy_over_stdio(platform, upstream_command, "--review-timeout", "30")) as client:
        result = await client.call_tool("deploy", {"service": "api"}, progress_callback=on_progress)
    assert approved, messages
    assert not result.is_error, text_of(result)
    assert text_of(result) == "deployed api"
    assert recorded_runs(run_log) == ['deploy {"service": "api"}']


async def test_platform_down_refuses_and_fail_open_forwards_marked_degraded(
    upstream_command: list[str], run_log: Path
) -> None:
    down = {"AEGIS_ENDPOINT": f"http://127.0.0.1:{free_port()}", "AEGIS_API_KEY": "aegis_sk_unused"}
    async with Client(proxy_over_stdio(None, upstream_command, **down)) as client:
        refused = await client.call_tool("add", {"a": 1, "b": 2})
    assert refused.is_error and "did not answer" in text_of(refused) and "fail closed" in text_of(refused)
    assert recorded_runs(run_log) == []
    async with Client(proxy_over_stdio(None, upstream_command, "--fail-open", **down)) as client:
        forwarded = await client.call_tool("add", {"a": 1, "b": 2})
    assert not forwarded.is_error and forwarded.structured_content == {"result": 3}
    assert governance(forwarded)["degraded"] is True
    assert recorded_runs(run_log) == ['add {"a": 1, "b": 2}']


async def test_the_upstreams_progress_reaches_the_client(platform: AegisPlatform, tmp_path: Path) -> None:
    config = tmp_path / "aegis-mcp.yaml"
    upstream = {
        "name": "counter",
        "command": sys.executable,
        "args": [str(PROGRESS_UPSTREAM)],
        "capabilities": {"count": "mcp.echo"},  # governed as a capability the test policies allow
    }
    config.write_text(yaml.safe_dump({"actor": "counting-agent", "upstreams": [upstream]}), encoding="utf-8")
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    server = StdioServerParameters(
        command=sys.executable, args=["-m", "aegis_mcp", "proxy", "--config", str(config)], env=proxy_env(platform)
    )
    async with Client(stdio_client(server)) as client:
        result = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
    assert not result.is_error and result.structured_content == {"result": 3}
    assert governance(result)["capability"] == "mcp.echo"
    assert seen == [(1, 3, "step 1 of 3"), (2, 3, "step 2 of 3"), (3, 3, "step 3 of 3")]


async def test_a_stdio_upstream_gets_the_proxys_environment_but_never_its_aegis_key(
    platform: AegisPlatform, tmp_path: Path
) -> None:
    """An assistant's configuration gives the wrapped server's variables (tokens, paths) to the proxy: they
    reach the upstream. The proxy's own AEGIS variables, and the variable its configuration names for the
    key, do not."""
    config = tmp_path / "aegis-mcp.yaml"
    upstream = {
        "name": "environment",
        "command": sys.executable,
        "args": [str(PROGRESS_UPSTREAM)],
        "env": {"SET_BY_CONFIG": "1"},
        "capabilities": {"environment": "mcp.echo"},  # governed as a capability the test policies allow
    }
    settings = {"aegis": {"api_key_env": "MY_AEGIS_KEY"}, "actor": "env-agent", "upstreams": [upstream]}
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    env = proxy_env(platform, MY_AEGIS_KEY=platform.agent_key, WRAPPED_SERVER_TOKEN="t0k")
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "aegis_mcp", "proxy", "--config", str(config)], env=env
    )
    names = ["WRAPPED_SERVER_TOKEN", "SET_BY_CONFIG", "PATH", "MY_AEGIS_KEY", "AEGIS_API_KEY", "AEGIS_ENDPOINT"]
    async with Client(stdio_client(server)) as client:
        result = await client.call_tool("environment", {"names": names})
    assert not result.is_error, text_of(result)
    assert result.structured_content == {
        "WRAPPED_SERVER_TOKEN": True,
        "SET_BY_CONFIG": True,
        "PATH": True,
        "MY_AEGIS_KEY": False,
        "AEGIS_API_KEY": False,
        "AEGIS_ENDPOINT": False,
    }
