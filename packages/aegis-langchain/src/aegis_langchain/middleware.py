"""`GovernanceMiddleware`: governs every tool call of a LangChain v1 agent (`create_agent(...,
middleware=[GovernanceMiddleware(...)])`), as an alternative to wrapping tools one by one. Needs the
`agents` extra (`pip install 'aegis-langchain[agents]'`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain.agents.middleware.types import ToolCallRequest
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.types import Command
from pydantic import BaseModel, ValidationError

from aegis_langchain._call import GovernedCall, build_call
from aegis_langchain._flow import Ran, Refused
from aegis_langchain._hitl import with_edit_notice
from aegis_langchain._settings import (
    DEFAULT_REVIEW_TIMEOUT,
    ActorLike,
    ConfirmCallback,
    ConfirmMode,
    EscalationCallback,
    EscalationMode,
    Settings,
    derive_capability,
    first_error,
    resolve_async_client,
    resolve_client,
    settings_from,
)
from aegis_langchain._tool import GovernedTool, visible_keys
from aegis_langchain._tracing import govern_async, govern_sync
from aegis_sdk import AegisClient, AsyncAegisClient, ConfigurationError

CapabilityMap = Mapping[str, str] | Callable[[str], str | None]

ARTIFACT_KEY = "aegis"
"""The key of `ToolMessage.response_metadata` under which the middleware stores the GovernanceArtifact."""


class GovernanceMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Propose every tool call of the agent to AEGIS and run it only on ALLOW.

    - `capabilities`: tool name → capability (a mapping, or a function returning a name or None); a tool
      it does not name gets `derive_capability(tool name)`.
    - `skip`: tool names that are not governed (tools already wrapped with `govern_tool` are always
      skipped, so nothing is proposed twice).
    - The other arguments are those of `govern_tool` (clients, actor, session, metadata, confirm,
      on_escalate, review_timeout, on_escalation, report_execution).

    A refusal becomes an error `ToolMessage` the model reads (status "error"); its `artifact` (and, for
    every governed call, `response_metadata["aegis"]`) is the `GovernanceArtifact`. A tool's own artifact
    is kept; then the record is only in `response_metadata`.
    """

    def __init__(
        self,
        capabilities: CapabilityMap | None = None,
        *,
        client: AegisClient | None = None,
        async_client: AsyncAegisClient | None = None,
        actor: ActorLike | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        confirm: ConfirmCallback | ConfirmMode | None = "auto",
        on_escalate: EscalationMode = "auto",
        review_timeout: float | None = DEFAULT_REVIEW_TIMEOUT,
        on_escalation: EscalationCallback | None = None,
        report_execution: bool = True,
        reviewer: AegisClient | None = None,
        async_reviewer: AsyncAegisClient | None = None,
        skip: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.capabilities = capabilities
        self.skip = frozenset(skip)
        self.settings: Settings = settings_from(locals())

    @property
    def name(self) -> str:
        return "GovernanceMiddleware"

    # -- what to govern -----------------------------------------------------------------------------

    def capability_for(self, tool_name: str) -> str:
        """The capability proposed for a tool of this name."""
        if callable(self.capabilities):
            mapped = self.capabilities(tool_name)
            if mapped:
                return mapped
        elif self.capabilities is not None and tool_name in self.capabilities:
            return self.capabilities[tool_name]
        return derive_capability(tool_name)

    def _prepare(self, request: ToolCallRequest) -> GovernedCall | ToolMessage | None:
        """The call to propose; None when the call is not governed here (already governed, skipped, not a
        registered tool); an error message when its arguments cannot be governed (the tool does not run)."""
        tool = request.tool
        name = request.tool_call["name"]
        if tool is None or isinstance(tool, GovernedTool) or name in self.skip:
            return None
        try:
            arguments = _checked(tool, request.tool_call.get("args") or {}, request.tool_call.get("id"))
        except InvalidArguments as problem:
            return _invalid_arguments(request, problem)  # never run ungoverned
        return self._call(request, tool, arguments)

    def _call(self, request: ToolCallRequest, tool: BaseTool, arguments: dict[str, Any]) -> GovernedCall:
        runtime = getattr(request, "runtime", None)
        config: RunnableConfig | None = getattr(runtime, "config", None)
        name = request.tool_call["name"]

        def revise(edited: Mapping[str, Any]) -> GovernedCall:
            """The call with a person's edited arguments (the tool receives them as the model's would be)."""
            try:
                validated = _checked(tool, edited, request.tool_call.get("id"))
            except InvalidArguments as exc:
                raise ConfigurationError(
                    f"The edited arguments of {name} do not fit the tool's schema: {exc}. Resume again with "
                    "arguments the tool accepts.",
                    code="invalid_resume",
                ) from None
            edited_request = request.override(tool_call={**request.tool_call, "args": dict(edited)})
            return self._call(edited_request, tool, validated)

        return build_call(
            capability=self.capability_for(name),
            tool_name=name,
            tool_call_id=request.tool_call.get("id"),
            arguments=arguments,
            config=config,
            settings=self.settings,
            invocation=request,
            revise=revise,
        )

    # -- sync -------------------------------------------------------------------------------------

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        call = self._prepare(request)
        if call is None:
            return handler(request)
        if isinstance(call, ToolMessage):
            return call
        outcome = govern_sync(call, resolve_client(self.settings.client), handler)
        return _message(request, outcome)

    # -- async ------------------------------------------------------------------------------------

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        call = self._prepare(request)
        if call is None:
            return await handler(request)
        if isinstance(call, ToolMessage):
            return call
        client = resolve_async_client(self.settings.async_client)
        outcome = await govern_async(call, client, handler)
        return _message(request, outcome)


class InvalidArguments(ValueError):
    """Arguments the middleware will not propose: the tool would reject them, or they hold names the model's
    schema does not have (which the tool's own schema might read otherwise: an alias)."""


def _checked(tool: BaseTool, args: Mapping[str, Any], tool_call_id: str | None) -> dict[str, Any]:
    """The arguments the tool will run with, read as the tool itself reads them (its own schema, validators
    and aliases included) and limited to those the model sees; InvalidArguments when it would reject them.
    Before ToolNode injects state or store, the tool's own schema may miss them: then the model's schema
    (`tool_call_schema`) reads the arguments."""
    visible = visible_keys(tool)
    unknown = sorted(set(args) - visible) if visible is not None else []
    if unknown:
        raise InvalidArguments(
            f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not an argument of {tool.name}"
        )
    try:
        _, parsed = tool._to_args_and_kwargs(dict(args), tool_call_id)
    except (ValidationError, ValueError, TypeError):
        parsed = None
    if parsed is not None:
        return {name: value for name, value in parsed.items() if visible is None or name in visible}
    schema: Any = tool.tool_call_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            model = schema.model_validate(dict(args))
        except ValidationError as exc:
            raise InvalidArguments(first_error(exc)) from None
        return {name: getattr(model, name) for name in type(model).model_fields}
    return dict(args)


def _invalid_arguments(request: ToolCallRequest, problem: InvalidArguments) -> ToolMessage:
    """The error message of a call whose arguments cannot be governed: nothing is proposed and nothing runs."""
    name = request.tool_call["name"]
    return ToolMessage(
        content=f"The arguments of {name} are invalid ({problem}), so it was not called. Correct them and call it "
        "again.",
        tool_call_id=request.tool_call.get("id") or "",
        name=name,
        status="error",
    )


def _message(request: ToolCallRequest, outcome: Ran | Refused) -> ToolMessage | Command[Any]:
    """The tool's result with its governance record, or the error message of a refusal."""
    if isinstance(outcome, Ran):
        result: ToolMessage | Command[Any] = outcome.output
        artifact = outcome.artifact
        if isinstance(result, ToolMessage):
            result.response_metadata = {**result.response_metadata, ARTIFACT_KEY: artifact}
            if result.artifact is None:
                result.artifact = artifact
            if outcome.edited_arguments is not None:
                result.content = with_edit_notice(result.content, request.tool_call["name"], outcome.edited_arguments)
        return result
    artifact = outcome.refusal.artifact
    return ToolMessage(
        content=str(outcome.refusal),
        tool_call_id=request.tool_call.get("id") or "",
        name=request.tool_call["name"],
        status="error",
        artifact=artifact,
        response_metadata={ARTIFACT_KEY: artifact},
    )


__all__ = ["ARTIFACT_KEY", "GovernanceMiddleware"]
