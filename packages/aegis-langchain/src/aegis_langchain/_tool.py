"""`GovernedTool`: any LangChain tool with an AEGIS decision before every call; `governed_tool` (decorator),
`govern_tool` (one existing tool) and `govern_tools` (a list, with a capability mapping)."""

from __future__ import annotations

import contextvars
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, NoReturn, overload

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools import tool as make_tool
from langchain_core.tools.base import ArgsSchema
from langchain_core.utils.pydantic import TypeBaseModel
from pydantic import BaseModel, PrivateAttr, ValidationError

from aegis_langchain._artifact import GovernanceArtifact
from aegis_langchain._call import GovernedCall, build_call
from aegis_langchain._errors import GovernanceRefusal
from aegis_langchain._flow import Ran, Refused
from aegis_langchain._hitl import with_edit_notice
from aegis_langchain._settings import (
    DEFAULT_REVIEW_TIMEOUT,
    ActorLike,
    ConfirmCallback,
    ConfirmMode,
    EscalationCallback,
    EscalationMode,
    ParameterMapper,
    Settings,
    derive_capability,
    resolve_async_client,
    resolve_client,
    settings_from,
)
from aegis_langchain._tracing import govern_async, govern_sync
from aegis_sdk import AegisClient, AsyncAegisClient, ConfigurationError

HandleToolError = bool | str | Callable[[ToolException], Any] | None


class _RunState:
    """Per-run state shared between `run()` and `_run()`: LangChain hands the tool call id to `run()` only,
    and builds the error ToolMessage of a handled refusal without an artifact, so `run()` attaches it."""

    __slots__ = ("refusal", "tool_call_id")

    def __init__(self, tool_call_id: str | None) -> None:
        self.tool_call_id = tool_call_id
        self.refusal: GovernanceRefusal | None = None


_run_state: contextvars.ContextVar[_RunState | None] = contextvars.ContextVar("aegis_langchain_run", default=None)


def _refusals_only(error: ToolException) -> Any:
    """The default `handle_tool_error` of a governed tool: a refusal becomes the tool message the model
    reads; any other ToolException (from the wrapped tool, which chose not to handle it) is raised."""
    if isinstance(error, GovernanceRefusal):
        return str(error)
    raise error


def _accepts(func: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _config_param(func: Callable[..., Any]) -> str | None:
    """The parameter of `func` annotated `RunnableConfig` (how LangChain injects the config into `_run`)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return None
    for name, hint in hints.items():
        if hint is RunnableConfig:
            return name
    return None


def visible_keys(tool: BaseTool) -> frozenset[str] | None:
    """The argument names the model sees (injected arguments excluded); None when unknown."""
    schema: Any = tool.tool_call_schema
    if isinstance(schema, dict):
        properties = schema.get("properties")
        return frozenset(properties) if isinstance(properties, dict) else None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return frozenset(schema.model_fields)
    fields = getattr(schema, "__fields__", None)
    return frozenset(fields) if isinstance(fields, dict) else None


class GovernedTool(BaseTool):
    """A tool whose every call is proposed to AEGIS first and runs only on ALLOW.

    It keeps the wrapped tool's name, description and argument schema (the model sees the same tool) and
    runs it on its native sync (`invoke`) and async (`ainvoke`) paths. The tool message's artifact is a
    `GovernanceArtifact` (decision id, audit ref, execution report), never shown to the model. Build it with
    `governed_tool`, `govern_tool` or `govern_tools`.
    """

    tool: BaseTool
    """The wrapped tool, which does the work."""

    capability: str
    """The AEGIS capability proposed for each call."""

    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    _settings: Settings = PrivateAttr(default_factory=Settings)

    @property
    def settings(self) -> Settings:
        """How calls are governed (clients, actor, confirmation, escalation mode, reporting)."""
        return self._settings

    # -- what the model sees: exactly the wrapped tool -------------------------------------------

    @property
    def tool_call_schema(self) -> ArgsSchema:
        return self.tool.tool_call_schema

    @property
    def args(self) -> dict[str, Any]:
        return self.tool.args

    @property
    def is_single_input(self) -> bool:
        return self.tool.is_single_input

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.tool.get_input_schema(config)

    @property
    def func(self) -> Callable[..., Any] | None:
        """The wrapped function, when the wrapped tool has one (LangGraph reads it for injected arguments)."""
        func = getattr(self.tool, "func", None)
        return func if callable(func) else None

    @property
    def coroutine(self) -> Callable[..., Any] | None:
        coroutine = getattr(self.tool, "coroutine", None)
        return coroutine if callable(coroutine) else None

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # Validate exactly as the wrapped tool does (its schema, its injected arguments).
        return self.tool._to_args_and_kwargs(tool_input, tool_call_id)

    # -- runs: remember the refusal so its artifact reaches the error message ------------------------

    def run(self, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        state = _RunState(_call_id(kwargs))
        token = _run_state.set(state)
        try:
            output = super().run(tool_input, *args, **kwargs)
        finally:
            _run_state.reset(token)
        return _with_refusal_artifact(output, state)

    async def arun(self, tool_input: str | dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        state = _RunState(_call_id(kwargs))
        token = _run_state.set(state)
        try:
            output = await super().arun(tool_input, *args, **kwargs)
        finally:
            _run_state.reset(token)
        return _with_refusal_artifact(output, state)

    # -- governance ---------------------------------------------------------------------------------

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], config: RunnableConfig | None) -> GovernedCall:
        arguments: dict[str, Any]
        if args:
            keys = list(self.tool.args) or ["tool_input"]
            arguments = dict(zip(keys, args, strict=False))
        else:
            shown = visible_keys(self.tool)
            arguments = {k: v for k, v in kwargs.items() if shown is None or k in shown}
        state = _run_state.get()
        tool_call_id = state.tool_call_id if state is not None else None

        visible = visible_keys(self.tool)
        injected = {k: v for k, v in kwargs.items() if visible is not None and k not in visible}

        def revise(edited: Mapping[str, Any]) -> GovernedCall:
            """The call with a person's edited arguments, validated as the wrapped tool validates them. Only
            the arguments the model gives can be edited: what LangGraph injected (state, store) stays."""
            outside = sorted(set(edited) - visible) if visible is not None else []
            if outside:
                raise ConfigurationError(
                    f"An edit may change only the arguments of {self.name} that the model gives; "
                    f"{', '.join(outside)} cannot be edited. Resume again without them.",
                    code="invalid_resume",
                )
            try:
                merged = {**kwargs, **arguments, **edited, **injected}
                new_args, new_kwargs = self.tool._to_args_and_kwargs(merged, tool_call_id)
            except (ValidationError, ValueError, TypeError) as exc:
                raise ConfigurationError(
                    f"The edited arguments of {self.name} do not fit the tool's schema: {exc}. Resume again with "
                    "arguments the tool accepts.",
                    code="invalid_resume",
                ) from None
            return self._call(new_args, new_kwargs, config)

        return build_call(
            capability=self.capability,
            tool_name=self.name,
            tool_call_id=tool_call_id,
            arguments=arguments,
            config=config,
            settings=self._settings,
            invocation=(args, kwargs),
            revise=revise,
        )

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        call = self._call(args, kwargs, config)
        client = resolve_client(self._settings.client)
        inner = self.tool
        extra = _injected(inner._run, config, run_manager)

        def run(invocation: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
            return inner._run(*invocation[0], **invocation[1], **extra)

        return self._outcome(govern_sync(call, client, run))

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        call = self._call(args, kwargs, config)
        client = resolve_async_client(self._settings.async_client)
        inner = self.tool
        native_async = type(inner)._arun is not BaseTool._arun
        manager = run_manager if native_async or run_manager is None else run_manager.get_sync()
        extra = _injected(inner._arun if native_async else inner._run, config, manager)

        # BaseTool._arun runs a sync-only tool in an executor (copying this context): that is the wrapped
        # tool's own behaviour; every governance call stays on the async client.
        def run(invocation: tuple[tuple[Any, ...], dict[str, Any]]) -> Awaitable[Any]:
            return inner._arun(*invocation[0], **invocation[1], **extra)

        return self._outcome(await govern_async(call, client, run))

    def _outcome(self, outcome: Ran | Refused) -> Any:
        if isinstance(outcome, Refused):
            refusal = outcome.refusal
            state = _run_state.get()
            if state is not None:
                state.refusal = refusal
            raise refusal from refusal.__cause__
        return self._with_artifact(outcome.output, outcome.artifact, outcome.edited_arguments)

    def _with_artifact(self, output: Any, artifact: GovernanceArtifact, edited: dict[str, Any] | None) -> Any:
        if self.tool.response_format == "content_and_artifact":
            if isinstance(output, tuple) and len(output) == 2:
                content, inner_artifact = output
                artifact["tool_artifact"] = inner_artifact
                return self._noted(content, edited), artifact
            return output  # the wrapped tool broke its own contract; LangChain reports it as for the tool
        return self._noted(output, edited), artifact

    def _noted(self, content: Any, edited: dict[str, Any] | None) -> Any:
        return content if edited is None else with_edit_notice(content, self.name, edited)


def _injected(target: Callable[..., Any], config: RunnableConfig, run_manager: Any) -> dict[str, Any]:
    """The run manager and the config, for the wrapped tool's run method that takes them."""
    extra: dict[str, Any] = {}
    if _accepts(target, "run_manager"):
        extra["run_manager"] = run_manager
    if param := _config_param(target):
        extra[param] = config
    return extra


def _call_id(kwargs: Mapping[str, Any]) -> str | None:
    value = kwargs.get("tool_call_id")
    return value if isinstance(value, str) and value else None


def _with_refusal_artifact(output: Any, state: _RunState) -> Any:
    refusal = state.refusal
    if refusal is not None and isinstance(output, ToolMessage) and output.status == "error" and output.artifact is None:
        output.artifact = refusal.artifact
    return output


# ---------------------------------------------------------------------------------------------
# Constructors
# ---------------------------------------------------------------------------------------------


_UNSET: Any = object()


def _not_a_tool(value: object) -> NoReturn:
    raise ConfigurationError(
        f"Expected a LangChain BaseTool to govern, got {type(value).__name__}; decorate a function with "
        "governed_tool(...) instead.",
        code="not_a_tool",
    )


def _build(tool: BaseTool, capability: str, settings: Settings, handle_tool_error: HandleToolError) -> GovernedTool:
    if isinstance(tool, GovernedTool):
        raise ConfigurationError(
            f"Tool {tool.name!r} is already governed (capability {tool.capability!r}); wrap the original tool "
            "(governed.tool) instead of governing it twice.",
            code="already_governed",
        )
    if handle_tool_error is _UNSET:
        handle_tool_error = tool.handle_tool_error if tool.handle_tool_error else _refusals_only
    governed = GovernedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        verbose=tool.verbose,
        callbacks=tool.callbacks,
        tags=tool.tags,
        metadata=tool.metadata,
        handle_tool_error=handle_tool_error,
        handle_validation_error=tool.handle_validation_error,
        extras=tool.extras,
        tool=tool,
        capability=capability,
    )
    governed._settings = settings
    return governed


def govern_tool(
    tool: BaseTool,
    capability: str | None = None,
    *,
    client: AegisClient | None = None,
    async_client: AsyncAegisClient | None = None,
    actor: ActorLike | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    parameters: ParameterMapper | None = None,
    confirm: ConfirmCallback | ConfirmMode | None = "auto",
    on_escalate: EscalationMode = "auto",
    review_timeout: float | None = DEFAULT_REVIEW_TIMEOUT,
    on_escalation: EscalationCallback | None = None,
    report_execution: bool = True,
    reviewer: AegisClient | None = None,
    async_reviewer: AsyncAegisClient | None = None,
    handle_tool_error: HandleToolError = _UNSET,
) -> GovernedTool:
    """Govern an existing tool (any `BaseTool`, community tools included). `capability` defaults to the
    tool's name (see `derive_capability`). The other arguments are described in docs/langchain.md."""
    settings = settings_from(locals())
    if not isinstance(tool, BaseTool):
        _not_a_tool(tool)
    return _build(
        tool, capability if capability is not None else derive_capability(tool.name), settings, handle_tool_error
    )


def govern_tools(
    tools: Iterable[BaseTool],
    capabilities: Mapping[str, str] | Callable[[BaseTool], str] | None = None,
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
    handle_tool_error: HandleToolError = _UNSET,
) -> list[GovernedTool]:
    """Govern a list of tools with the same settings. `capabilities` maps tool names to capabilities (or is a
    function of the tool); a tool it does not name gets the capability derived from its name. Tools that are
    already governed are kept as they are."""
    settings = settings_from(locals())
    result: list[GovernedTool] = []
    for tool in tools:
        if isinstance(tool, GovernedTool):
            result.append(tool)
            continue
        if not isinstance(tool, BaseTool):
            _not_a_tool(tool)
        if callable(capabilities):
            capability = capabilities(tool)
        elif capabilities is not None and tool.name in capabilities:
            capability = capabilities[tool.name]
        else:
            capability = derive_capability(tool.name)
        result.append(_build(tool, capability, settings, handle_tool_error))
    return result


@overload
def governed_tool(
    capability: str,
    *,
    name: str | None = ...,
    description: str | None = ...,
    args_schema: ArgsSchema | None = ...,
    return_direct: bool = ...,
    parse_docstring: bool = ...,
    response_format: Literal["content", "content_and_artifact"] = ...,
    client: AegisClient | None = ...,
    async_client: AsyncAegisClient | None = ...,
    actor: ActorLike | None = ...,
    session_id: str | None = ...,
    metadata: Mapping[str, Any] | None = ...,
    parameters: ParameterMapper | None = ...,
    confirm: ConfirmCallback | ConfirmMode | None = ...,
    on_escalate: EscalationMode = ...,
    review_timeout: float | None = ...,
    on_escalation: EscalationCallback | None = ...,
    report_execution: bool = ...,
    reviewer: AegisClient | None = ...,
    async_reviewer: AsyncAegisClient | None = ...,
    handle_tool_error: HandleToolError = ...,
) -> Callable[[Callable[..., Any]], GovernedTool]: ...


@overload
def governed_tool(capability: Callable[..., Any]) -> GovernedTool: ...


def governed_tool(
    capability: str | Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    args_schema: ArgsSchema | None = None,
    return_direct: bool = False,
    parse_docstring: bool = False,
    response_format: Literal["content", "content_and_artifact"] = "content",
    client: AegisClient | None = None,
    async_client: AsyncAegisClient | None = None,
    actor: ActorLike | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    parameters: ParameterMapper | None = None,
    confirm: ConfirmCallback | ConfirmMode | None = "auto",
    on_escalate: EscalationMode = "auto",
    review_timeout: float | None = DEFAULT_REVIEW_TIMEOUT,
    on_escalation: EscalationCallback | None = None,
    report_execution: bool = True,
    reviewer: AegisClient | None = None,
    async_reviewer: AsyncAegisClient | None = None,
    handle_tool_error: HandleToolError = _UNSET,
) -> Callable[[Callable[..., Any]], GovernedTool] | GovernedTool:
    """Decorate a function or coroutine into a governed tool, as `@tool` would build it (name, docstring
    description, argument schema), proposing `capability` with the call's validated arguments:

    ```python
    @governed_tool("payments.refund", actor="billing-bot")
    def refund(order_id: str, amount: float, currency: str) -> str:
        \"\"\"Refund an order.\"\"\"
        ...
    ```

    Used bare (`@governed_tool`), the capability is derived from the function's name.
    """
    if callable(capability) and not isinstance(capability, str):
        return governed_tool(derive_capability(capability.__name__))(capability)
    if not isinstance(capability, str) or not capability:
        raise ConfigurationError(
            f"governed_tool() needs the capability name first, e.g. governed_tool('payments.refund'), got "
            f"{capability!r}.",
            code="invalid_capability",
        )
    settings = settings_from(locals())
    capability_name = capability

    def decorator(func: Callable[..., Any]) -> GovernedTool:
        if not callable(func):
            raise ConfigurationError(
                f"governed_tool({capability_name!r}) decorates a function or coroutine, got {type(func).__name__}.",
                code="not_a_function",
            )
        factory = make_tool(
            name or func.__name__,
            description=description,
            args_schema=args_schema,
            return_direct=return_direct,
            parse_docstring=parse_docstring,
            response_format=response_format,
        )
        inner = factory(func)
        assert isinstance(inner, BaseTool)
        return _build(inner, capability_name, settings, handle_tool_error)

    return decorator


__all__ = ["GovernedTool", "govern_tool", "govern_tools", "governed_tool", "visible_keys"]
