"""Support of the middleware tests: a governed `MCPServer` built in the test (its tools record their runs in a
list), elicitation callbacks that answer as told and record the question, and reads of what the platform
recorded (decisions of an actor, the execution report of a decision)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_platform import AegisPlatform
from mcp_types import ElicitRequestParams, ElicitResult
from pydantic import BaseModel

from aegis_mcp import GovernanceMiddleware
from aegis_sdk import AsyncAegisClient, Decision

MODES = ("legacy", "auto")
"""`legacy`: the handshake era, elicitation/create mid-call; `auto`: 2026-07-28, InputRequiredResult round trip."""


class Pin(BaseModel):
    pin: str


def pin_question() -> Elicit[Pin]:
    return Elicit("Your PIN, please", Pin)


def new_actor() -> str:
    return f"mw-{uuid.uuid4().hex[:12]}"


MIDDLEWARE_CLIENTS: list[AsyncAegisClient] = []
"""The clients given to `governed()` in the running test: conftest closes them (their queued execution reports
flushed) at the end of the test, on its event loop, while the platform still runs."""


@dataclass
class Governed:
    """A governed MCPServer and what its tools did."""

    server: MCPServer
    governance: GovernanceMiddleware
    actor: str
    ran: list[str] = field(default_factory=list)


def governed(client: AsyncAegisClient, actor: str | None = None, **options: Any) -> Governed:
    actor = actor or new_actor()
    options.setdefault("review_timeout", 2.0)
    options.setdefault("progress_interval", 0.2)
    options.setdefault("capabilities", {"add_with_pin": "mcp.add"})
    governance = GovernanceMiddleware(client, actor=actor, **options)
    MIDDLEWARE_CLIENTS.append(client)
    server = MCPServer("mw-test", middleware=[governance])
    made = Governed(server, governance, actor)

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        made.ran.append("add")
        return a + b

    @server.tool(description="Delete everything.")
    def wipe() -> str:
        made.ran.append("wipe")
        return "wiped"

    @server.tool(description="Refund an amount.")
    def refund(amount: float) -> str:
        made.ran.append("refund")
        return f"refunded {amount}"

    @server.tool(description="Deploy the service.")
    def deploy(service: str = "web") -> str:
        made.ran.append("deploy")
        return f"deployed {service}"

    @server.tool(description="Always fails.")
    def fail() -> str:
        made.ran.append("fail")
        raise ValueError("the tool failed on purpose")

    @server.tool(description="Echo a text.")
    def echo(text: str) -> str:
        made.ran.append("echo")
        return text

    @server.tool(description="Asks the user for a PIN itself, then echoes it.")
    def add_with_pin(a: int, b: int, pin: Annotated[Pin, Resolve(pin_question)]) -> str:
        made.ran.append("add_with_pin")
        return f"{a + b} with pin {pin.pin}"

    return made


class Answers:
    """An elicitation callback: answers AEGIS's question with `reply` (an ElicitResult, or None → no answer is
    possible), the tool's own PIN question with `pin`, and records every question's message."""

    def __init__(self, reply: ElicitResult | None, pin: str = "1234") -> None:
        self.reply = reply
        self.pin = pin
        self.messages: list[str] = []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.messages.append(params.message)
        if "PIN" in params.message:
            return ElicitResult(action="accept", content={"pin": self.pin})
        assert self.reply is not None
        return self.reply


ACCEPT = ElicitResult(action="accept", content={"confirm": True})
DECLINE = ElicitResult(action="decline")
CANCEL = ElicitResult(action="cancel")


async def decisions_of(platform: AegisPlatform, actor: str) -> list[Decision]:
    async with platform.async_client() as admin:
        return [decision async for decision in admin.decisions.list(actor_id=actor)]


async def executions_of(
    platform: AegisPlatform, decision_id: str, reporter: GovernanceMiddleware | None = None
) -> list[dict[str, Any]]:
    """The execution reports the platform recorded for a decision (their audit payloads); with `reporter`, once
    the middleware's client sent what it queued (the middleware reports in the background)."""
    if reporter is not None:
        assert await reporter.client.flush_reports(), reporter.client.report_stats
    async with platform.async_client() as admin:
        trail = await admin.audit.trail(decision_id)
    return [record.payload for record in trail.records if "execution" in record.event_type.lower()]


async def approve_when_pending(platform: AegisPlatform, actor: str, *, approve: bool = True) -> str:
    """Wait (polling, with a deadline) for the actor's escalation to be pending, then review it as the
    reviewer. Returns the decision id."""
    with anyio.fail_after(30):
        while True:
            pending = [d for d in await decisions_of(platform, actor) if d.outcome == "ESCALATE"]
            if pending:
                break
            await anyio.sleep(0.05)
    async with platform.async_client(platform.reviewer_key) as reviewer:
        await reviewer.decisions.review(pending[0].decision_id, approve=approve, note="checked by the test")
    return pending[0].decision_id


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def meta_of(result: Any) -> dict[str, Any]:
    meta: dict[str, Any] = (result.meta or {}).get("io.aegis/governance", {})
    return meta
