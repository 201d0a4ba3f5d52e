"""Helpers for the aegis-langchain tests: a scripted tool-calling chat model (langchain-core's fake chat
model plus `bind_tools`), tool-call messages, and audit look-ups against the in-process server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from aegis_sdk import AegisClient

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "examples" / "policies"


class ScriptedChatModel(FakeMessagesListChatModel):
    """Answers with the scripted messages in order and records what `bind_tools` showed it."""

    bound: list[list[dict[str, Any]]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        self.bound.append([convert_to_openai_tool(t) for t in tools])
        return self


def calls(*tool_calls: tuple[str, dict[str, Any]], prefix: str = "call") -> AIMessage:
    """One AI turn that calls the given tools, with ids `<prefix>_<n>`."""
    return AIMessage(
        content="",
        tool_calls=[
            {"name": name, "args": args, "id": f"{prefix}_{n}", "type": "tool_call"}
            for n, (name, args) in enumerate(tool_calls, start=1)
        ],
    )


def scripted(*turns: BaseMessage) -> ScriptedChatModel:
    return ScriptedChatModel(responses=list(turns), bound=[])


def tool_messages(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    return [m for m in messages if isinstance(m, ToolMessage)]


def event_types(client: AegisClient, decision_id: str) -> list[str]:
    """The decision's audit trail, once `client`'s queued execution reports were sent (the adapter reports in
    the background)."""
    assert client.flush_reports(), client.report_stats
    return [record.event_type for record in client.audit.trail(decision_id).records]


def execution_payload(client: AegisClient, decision_id: str) -> dict[str, Any]:
    """The execution record of the decision, once `client`'s queued execution reports were sent."""
    assert client.flush_reports(), client.report_stats
    records = [r for r in client.audit.trail(decision_id).records if r.event_type == "execution"]
    assert len(records) == 1, [r.event_type for r in client.audit.trail(decision_id).records]
    return records[0].payload
