"""One tool call as it is proposed: the capability, the validated arguments as parameters, the actor,
session and context metadata (the run's config wins over the tool's settings), whether it runs in a
LangGraph graph that can pause (a checkpointer and a thread), and the key that keeps a LangGraph resume on
the same decision. Also the decision the running tool was allowed under."""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from pydantic_core import PydanticSerializationError, to_jsonable_python

from aegis_langchain._errors import ActionDenied
from aegis_langchain._settings import DEFAULT_ACTOR_ID, Settings, default_actor, to_actor
from aegis_sdk import Actor, ConfigurationError, Decision

current_decision_var: contextvars.ContextVar[Decision | None] = contextvars.ContextVar(
    "aegis_langchain_current_decision", default=None
)
"""Set by the flow around the governed tool's run; read it with `current_decision()`."""


def current_decision() -> Decision | None:
    """The ALLOW decision the running governed tool was allowed under (None outside one). Read it inside
    the tool to honour `decision.constraints` (e.g. `max_rows`, `max_amount`)."""
    return current_decision_var.get()


@dataclass(frozen=True)
class GovernedCall:
    """Everything proposed for one tool call."""

    capability: str
    tool_name: str
    tool_call_id: str | None
    parameters: dict[str, Any]
    actor: Actor
    session_id: str | None
    metadata: dict[str, Any]
    settings: Settings
    resume_key: str | None  # stable across a LangGraph resume of the same task and tool call; None: cannot pause
    arguments: dict[str, Any] = field(default_factory=dict)  # the tool's arguments, validated (JSON-encoded)
    invocation: Any = None  # what the tool or the middleware runs for this call (opaque to the flow)
    revise: Callable[[Mapping[str, Any]], GovernedCall] | None = None  # the same call with edited arguments

    @property
    def can_pause(self) -> bool:
        """The call runs in a LangGraph graph with a checkpointer and a thread: `interrupt()` can pause it."""
        return self.resume_key is not None

    def action(self) -> dict[str, Any]:
        return {"capability": self.capability, "parameters": self.parameters}

    def context(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "metadata": self.metadata}


def _config_value(config: RunnableConfig | None, key: str) -> Any:
    if not config:
        return None
    metadata = config.get("metadata") or {}
    if key in metadata:
        return metadata[key]
    configurable = config.get("configurable") or {}
    return configurable.get(key)


# The key under which LangGraph puts the run's checkpointer in `config["configurable"]` (present, as None,
# in a graph compiled without one); `langgraph._internal._constants.CONFIG_KEY_CHECKPOINTER`.
_CHECKPOINTER_KEY = "__pregel_checkpointer"


def _has_checkpointer(config: RunnableConfig | None) -> bool:
    configurable = (config or {}).get("configurable") or {}
    checkpointer = configurable.get(_CHECKPOINTER_KEY)
    return checkpointer is not None and checkpointer is not False


def build_call(
    *,
    capability: str,
    tool_name: str,
    tool_call_id: str | None,
    arguments: Mapping[str, Any],
    config: RunnableConfig | None,
    settings: Settings,
    invocation: Any = None,
    revise: Callable[[Mapping[str, Any]], GovernedCall] | None = None,
) -> GovernedCall:
    """Resolve actor, session, context metadata and parameters for one call.

    The run's config wins over the tool's settings: `metadata={"aegis_actor": ..., "aegis_session_id": ...,
    "aegis_metadata": {...}}` (or the same keys in `configurable`); the session falls back on the tool's
    `session_id`, then on the LangGraph `thread_id`."""
    run_actor = _config_value(config, "aegis_actor")
    if run_actor is not None:
        actor = to_actor(run_actor, "the run's config aegis_actor")
    elif settings.actor is not None:
        actor = settings.actor
    else:
        configured = default_actor()
        actor = configured if configured is not None else Actor(id=DEFAULT_ACTOR_ID, type="ai-agent")

    session = _config_value(config, "aegis_session_id")
    if session is None:
        session = settings.session_id
    thread_id = _config_value(config, "thread_id")
    if session is None and thread_id is not None:
        session = str(thread_id)

    metadata: dict[str, Any] = dict(settings.metadata)
    run_metadata = _config_value(config, "aegis_metadata")
    if isinstance(run_metadata, Mapping):
        metadata.update(run_metadata)
    metadata["langchain_tool"] = tool_name
    if tool_call_id:
        metadata["langchain_tool_call_id"] = tool_call_id

    parameters = dict(arguments)
    if settings.parameters is not None:
        mapped = settings.parameters(dict(parameters))
        if not isinstance(mapped, Mapping):
            raise ConfigurationError(
                f"The parameters= mapper of tool {tool_name!r} must return a mapping, got {type(mapped).__name__}.",
                code="invalid_parameters_mapper",
            )
        parameters = dict(mapped)
    try:
        parameters = to_jsonable_python(parameters)
    except (PydanticSerializationError, TypeError, ValueError):
        raise ActionDenied(
            f"The arguments of {tool_name} cannot be sent to AEGIS as JSON, so the action was not performed. "
            "Use plain values (strings, numbers, lists, objects).",
            capability=capability,
            code="invalid_parameters",
        ) from None

    try:
        shown = to_jsonable_python(dict(arguments))
    except (PydanticSerializationError, TypeError, ValueError):
        shown = parameters

    resume_key: str | None = None
    namespace = _config_value(config, "checkpoint_ns")
    if thread_id is not None and namespace is not None and tool_call_id and _has_checkpointer(config):
        raw = f"{thread_id}\x1f{namespace}\x1f{tool_call_id}\x1f{capability}"
        resume_key = "aegis-langchain-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:48]

    return GovernedCall(
        capability=capability,
        tool_name=tool_name,
        tool_call_id=tool_call_id,
        parameters=parameters,
        actor=actor,
        session_id=session,
        metadata=metadata,
        settings=settings,
        resume_key=resume_key,
        arguments=shown,
        invocation=invocation,
        revise=revise,
    )


__all__ = ["GovernedCall", "build_call", "current_decision", "current_decision_var"]
