"""One governed `tools/call`, as AEGIS sees it: who asks (actor, session), what (capability and arguments),
and the names that tie it back to the MCP request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aegis_sdk import Action, Actor, Context

CAPABILITY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9_.:\-]")


@dataclass(frozen=True)
class ToolCall:
    """A `tools/call` to govern. `arguments` are the tool's arguments, sent to AEGIS as the parameters."""

    tool: str
    capability: str
    arguments: dict[str, Any]
    actor: Actor
    session_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def action(self) -> Action:
        return Action(capability=self.capability, parameters=self.arguments)

    def context(self) -> Context:
        return Context(session_id=self.session_id, metadata={"mcp_tool": self.tool, **self.metadata})


def capability_for(tool: str, *, prefix: str | None, mapping: Mapping[str, str] | None = None) -> str:
    """The capability a tool maps to: the mapping's entry, else `<prefix>.<tool>` (or the bare tool name when
    the prefix is empty). Characters a capability name cannot hold (MCP allows `/` in tool names) become `_`."""
    if mapping and tool in mapping:
        return mapping[tool]
    name = _NOT_IN_A_NAME.sub("_", tool)
    if prefix:
        return f"{prefix}.{name}"
    if not CAPABILITY_NAME.match(name):
        return f"_{name}"
    return name


def as_actor(actor: str | Actor | Mapping[str, Any]) -> Actor:
    """`"agent-7"` → an `ai-agent` actor with that id; a mapping or an Actor is validated as it is."""
    if isinstance(actor, Actor):
        return actor
    if isinstance(actor, str):
        return Actor(id=actor, type="ai-agent")
    return Actor.model_validate(dict(actor))


__all__ = ["CAPABILITY_NAME", "ToolCall", "as_actor", "capability_for"]
