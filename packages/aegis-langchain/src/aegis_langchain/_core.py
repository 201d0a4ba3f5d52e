"""Governance of one tool call, shared by the governed tools and the agent middleware: who proposes, with
which parameters and context, what each outcome does, and the execution report afterwards. Sync functions
use `AegisClient`, async ones `AsyncAegisClient` (never a thread hop around a sync call)."""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import logging
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from pydantic_core import PydanticSerializationError, to_jsonable_python

from aegis_langchain._artifact import GovernanceArtifact, governance_artifact
from aegis_langchain._errors import (
    ActionDenied,
    ConfirmationRequired,
    GovernanceRefusal,
    GovernanceUnavailable,
    ReviewPending,
)
from aegis_sdk import (
    Actor,
    AegisClient,
    AegisError,
    AsyncAegisClient,
    ConfigurationError,
    Decision,
    ParameterValidationError,
    ReviewTimeoutError,
)

logger = logging.getLogger("aegis_langchain")

EscalationMode = Literal["wait", "raise", "interrupt"]
ConfirmCallback = Callable[[Decision], bool | Awaitable[bool]]
EscalationCallback = Callable[[Decision], Awaitable[None] | None]
ParameterMapper = Callable[[dict[str, Any]], Mapping[str, Any]]
ActorLike = str | Actor | Mapping[str, Any]

DEFAULT_ACTOR_ID = "langchain-agent"
DEFAULT_REVIEW_TIMEOUT = 600.0
INTERRUPT_TYPE = "aegis_escalation"
_ESCALATION_MODES = ("wait", "raise", "interrupt")
_CAPABILITY_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]")
_ERROR_MESSAGE_LIMIT = 1000

_current_decision: contextvars.ContextVar[Decision | None] = contextvars.ContextVar(
    "aegis_langchain_current_decision", default=None
)


def current_decision() -> Decision | None:
    """The ALLOW decision the running governed tool was allowed under (None outside one). Read it inside
    the tool to honour `decision.constraints` (e.g. `max_rows`, `max_amount`)."""
    return _current_decision.get()


# ---------------------------------------------------------------------------------------------
# Defaults: configure() once, or the AEGIS_* environment
# ---------------------------------------------------------------------------------------------


class _Defaults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.client: AegisClient | None = None
        self.async_client: AsyncAegisClient | None = None
        self.actor: Actor | None = None
        self.env_client: AegisClient | None = None
        self.env_async_client: AsyncAegisClient | None = None


_defaults = _Defaults()


def configure(
    *,
    client: AegisClient | None = None,
    async_client: AsyncAegisClient | None = None,
    actor: ActorLike | None = None,
) -> None:
    """Set the process-wide defaults every governed tool and middleware falls back on: the sync client
    (used by `invoke`), the async client (used by `ainvoke`) and the actor. Arguments left out keep their
    current value. Without a configured client, one is created from `AEGIS_ENDPOINT` / `AEGIS_API_KEY` on
    first use."""
    if client is not None and not isinstance(client, AegisClient):
        raise ConfigurationError(
            f"configure(client=) takes an aegis_sdk.AegisClient, got {type(client).__name__}"
            + (" (pass it as async_client=)" if isinstance(client, AsyncAegisClient) else "")
            + ".",
            code="invalid_client",
        )
    if async_client is not None and not isinstance(async_client, AsyncAegisClient):
        raise ConfigurationError(
            f"configure(async_client=) takes an aegis_sdk.AsyncAegisClient, got {type(async_client).__name__}"
            + (" (pass it as client=)" if isinstance(async_client, AegisClient) else "")
            + ".",
            code="invalid_client",
        )
    with _defaults.lock:
        if client is not None:
            _defaults.client = client
        if async_client is not None:
            _defaults.async_client = async_client
        if actor is not None:
            _defaults.actor = to_actor(actor, "configure(actor=)")


def reset_configuration() -> None:
    """Forget what `configure()` set and the clients created from the environment (they are not closed:
    close clients you created yourself)."""
    with _defaults.lock:
        _defaults.client = None
        _defaults.async_client = None
        _defaults.actor = None
        _defaults.env_client = None
        _defaults.env_async_client = None


def _no_client(kind: str, exc: ConfigurationError) -> ConfigurationError:
    arg = "client" if kind == "sync" else "async_client"
    cls = "AegisClient" if kind == "sync" else "AsyncAegisClient"
    path = "invoke()" if kind == "sync" else "ainvoke()"
    return ConfigurationError(
        f"A governed tool needs an aegis_sdk.{cls} for {path} and none was given: pass {arg}= to the "
        f"decorator/wrapper or middleware, call aegis_langchain.configure({arg}=...), or set AEGIS_ENDPOINT "
        f"and AEGIS_API_KEY. The tool did not run. ({exc.message})",
        code="no_client",
    )


def resolve_client(explicit: AegisClient | None) -> AegisClient:
    if explicit is not None:
        return explicit
    with _defaults.lock:
        if _defaults.client is not None:
            return _defaults.client
        if _defaults.env_client is None:
            try:
                _defaults.env_client = AegisClient()
            except ConfigurationError as exc:
                raise _no_client("sync", exc) from None
        return _defaults.env_client


def resolve_async_client(explicit: AsyncAegisClient | None) -> AsyncAegisClient:
    if explicit is not None:
        return explicit
    with _defaults.lock:
        if _defaults.async_client is not None:
            return _defaults.async_client
        if _defaults.env_async_client is None:
            try:
                _defaults.env_async_client = AsyncAegisClient()
            except ConfigurationError as exc:
                raise _no_client("async", exc) from None
        return _defaults.env_async_client


# ---------------------------------------------------------------------------------------------
# Settings of a governed tool / middleware
# ---------------------------------------------------------------------------------------------


def to_actor(value: ActorLike, where: str) -> Actor:
    if isinstance(value, Actor):
        return value
    if isinstance(value, str):
        value = {"id": value}
    if isinstance(value, Mapping):
        try:
            return Actor.model_validate(dict(value))
        except ValueError as exc:
            raise ConfigurationError(
                f"{where} must be an actor id, an aegis_sdk.Actor or a mapping with 'id' (and optionally "
                f"'type': ai-agent, ai-copilot, automation, human); it is invalid: {_first_error(exc)}",
                code="invalid_actor",
            ) from None
    raise ConfigurationError(
        f"{where} must be an actor id (str), an aegis_sdk.Actor or a mapping, got {type(value).__name__}.",
        code="invalid_actor",
    )


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", ""))
    return str(exc)


def derive_capability(tool_name: str) -> str:
    """The default capability of a tool: its name, with every character a capability name cannot hold
    (anything but letters, digits, `_ . : -`) replaced by `_` (e.g. `search web` → `search_web`)."""
    name = _CAPABILITY_CHARS.sub("_", tool_name)
    if not name or name[0] in ".:-":
        name = "_" + name
    return name


@dataclass(frozen=True)
class Settings:
    """How calls are governed; built once per governed tool or middleware."""

    client: AegisClient | None = None
    async_client: AsyncAegisClient | None = None
    actor: Actor | None = None
    session_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    parameters: ParameterMapper | None = None
    confirm: ConfirmCallback | None = None
    on_escalate: EscalationMode = "wait"
    review_timeout: float | None = DEFAULT_REVIEW_TIMEOUT
    on_escalation: EscalationCallback | None = None
    report_execution: bool = True


def make_settings(
    *,
    client: AegisClient | None,
    async_client: AsyncAegisClient | None,
    actor: ActorLike | None,
    session_id: str | None,
    metadata: Mapping[str, Any] | None,
    parameters: ParameterMapper | None,
    confirm: ConfirmCallback | None,
    on_escalate: EscalationMode,
    review_timeout: float | None,
    on_escalation: EscalationCallback | None,
    report_execution: bool,
) -> Settings:
    if client is not None and not isinstance(client, AegisClient):
        raise ConfigurationError(
            f"client= takes an aegis_sdk.AegisClient, got {type(client).__name__}"
            + (" (pass it as async_client=)" if isinstance(client, AsyncAegisClient) else "")
            + ".",
            code="invalid_client",
        )
    if async_client is not None and not isinstance(async_client, AsyncAegisClient):
        raise ConfigurationError(
            f"async_client= takes an aegis_sdk.AsyncAegisClient, got {type(async_client).__name__}"
            + (" (pass it as client=)" if isinstance(async_client, AegisClient) else "")
            + ".",
            code="invalid_client",
        )
    if on_escalate not in _ESCALATION_MODES:
        raise ConfigurationError(
            f"on_escalate must be one of 'wait' (wait for the review, up to review_timeout), 'raise' (refuse at "
            f"once) or 'interrupt' (pause the LangGraph graph), got {on_escalate!r}.",
            code="invalid_on_escalate",
        )
    if review_timeout is not None and (
        isinstance(review_timeout, bool) or not isinstance(review_timeout, (int, float)) or review_timeout <= 0
    ):
        raise ConfigurationError(
            f"review_timeout must be a positive number of seconds (or None: until the review deadline), "
            f"got {review_timeout!r}.",
            code="invalid_review_timeout",
        )
    for name, value in (("confirm", confirm), ("on_escalation", on_escalation), ("parameters", parameters)):
        if value is not None and not callable(value):
            raise ConfigurationError(
                f"{name}= must be a callable, got {type(value).__name__}.", code="invalid_callback"
            )
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ConfigurationError(
            f"metadata= must be a mapping, got {type(metadata).__name__}.", code="invalid_metadata"
        )
    return Settings(
        client=client,
        async_client=async_client,
        actor=to_actor(actor, "actor=") if actor is not None else None,
        session_id=session_id,
        metadata=dict(metadata or {}),
        parameters=parameters,
        confirm=confirm,
        on_escalate=on_escalate,
        review_timeout=None if review_timeout is None else float(review_timeout),
        on_escalation=on_escalation,
        report_execution=report_execution,
    )


# ---------------------------------------------------------------------------------------------
# One governed call
# ---------------------------------------------------------------------------------------------


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
    resume_key: str | None  # stable across a LangGraph resume of the same task and tool call

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


def build_call(
    *,
    capability: str,
    tool_name: str,
    tool_call_id: str | None,
    arguments: Mapping[str, Any],
    config: RunnableConfig | None,
    settings: Settings,
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
        with _defaults.lock:
            default_actor = _defaults.actor
        actor = default_actor if default_actor is not None else Actor(id=DEFAULT_ACTOR_ID, type="ai-agent")

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

    resume_key: str | None = None
    namespace = _config_value(config, "checkpoint_ns")
    if thread_id is not None and namespace is not None and tool_call_id:
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
    )


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def _unavailable(call: GovernedCall, exc: AegisError) -> GovernanceUnavailable:
    logger.error(
        "governance check failed for tool %s (capability %s): %s; the tool did not run",
        call.tool_name,
        call.capability,
        type(exc).__name__,
    )
    refusal = GovernanceUnavailable(
        f"{call.tool_name} could not be checked with the governance platform ({type(exc).__name__}), so the "
        "action was not performed. It may work later; do not try to work around the check.",
        capability=call.capability,
        code="unavailable",
    )
    refusal.__cause__ = exc
    return refusal


def _invalid(call: GovernedCall, exc: ParameterValidationError) -> ActionDenied:
    field_name = exc.details.get("field") if isinstance(exc.details, dict) else None
    where = f" (field {field_name!r})" if field_name else ""
    refusal = ActionDenied(
        f"The arguments of {call.tool_name} do not fit what the governance platform accepts for "
        f"{call.capability}{where}: {exc.message} The action was not performed; correct the arguments.",
        capability=call.capability,
        code="invalid_parameters",
    )
    refusal.__cause__ = exc
    return refusal


def _denied(call: GovernedCall, decision: Decision) -> GovernanceRefusal:
    status = decision.review.status if decision.review is not None else None
    if status == "denied":
        note = f" Reviewer's note: {decision.review.note}" if decision.review and decision.review.note else ""
        return ActionDenied(
            f"An operator denied {call.tool_name}; the action was not performed.{note} Do not retry it unchanged.",
            capability=call.capability,
            code="review_denied",
            decision=decision,
        )
    if status == "expired":
        return ActionDenied(
            f"{call.tool_name} needed an operator's approval and nobody approved it before the review deadline; "
            "the action was not performed.",
            capability=call.capability,
            code="review_expired",
            decision=decision,
        )
    if status == "pending" or decision.outcome == "ESCALATE":
        return ReviewPending(
            f"{call.tool_name} is waiting for an operator's review ({decision.reason}); the action has not been "
            "performed. Tell the user it is pending approval.",
            capability=call.capability,
            code="review_pending",
            decision=decision,
        )
    if decision.outcome == "REQUIRE_CONFIRMATION":
        return ConfirmationRequired(
            f"{call.tool_name} needs the user's explicit confirmation ({decision.reason}); the action was not "
            "performed. Ask the user to confirm.",
            capability=call.capability,
            code="confirmation_required",
            decision=decision,
        )
    return ActionDenied(
        f"The governance policy denied {call.tool_name}: {decision.reason}. The action was not performed; do "
        "not retry it unchanged.",
        capability=call.capability,
        code="denied",
        decision=decision,
    )


def _declined(call: GovernedCall, decision: Decision) -> ConfirmationRequired:
    return ConfirmationRequired(
        f"The user did not confirm {call.tool_name}; the action was not performed.",
        capability=call.capability,
        code="confirmation_declined",
        decision=decision,
    )


def _timed_out(call: GovernedCall, decision: Decision) -> ReviewPending:
    return ReviewPending(
        f"{call.tool_name} needs an operator's approval ({decision.reason}) and none arrived in time; the action "
        "has not been performed and the request stays pending. Tell the user it awaits approval.",
        capability=call.capability,
        code="review_timeout",
        decision=decision,
    )


def _log_decision(call: GovernedCall, decision: Decision) -> None:
    logger.info(
        "tool %s capability %s: decision %s outcome=%s",
        call.tool_name,
        call.capability,
        decision.decision_id,
        decision.outcome,
    )


def _interrupt_payload(call: GovernedCall, decision: Decision) -> dict[str, Any]:
    """What the graph's `__interrupt__` carries (a plain dict; no token)."""
    return {
        "type": INTERRUPT_TYPE,
        "decision_id": decision.decision_id,
        "audit_ref": decision.audit_ref,
        "capability": call.capability,
        "tool": call.tool_name,
        "tool_call_id": call.tool_call_id,
        "actor_id": call.actor.id,
        "session_id": call.session_id,
        "parameters": call.parameters,
        "reason": decision.reason,
        "risk_score": decision.risk_score,
        "policy_ids": list(decision.policy_ids),
        "expires_at": decision.expires_at,
    }


def _interrupt(value: dict[str, Any]) -> Any:
    try:
        from langgraph.types import interrupt
    except ImportError:  # pragma: no cover - the extra is part of the workspace
        raise ConfigurationError(
            "on_escalate='interrupt' needs LangGraph: pip install 'aegis-langchain[langgraph]'.",
            code="langgraph_missing",
        ) from None
    return interrupt(value)


def _cannot_interrupt(call: GovernedCall, decision: Decision) -> ReviewPending:
    logger.warning(
        "tool %s: on_escalate='interrupt' outside a LangGraph run with a checkpointer and thread_id; refusing",
        call.tool_name,
    )
    return ReviewPending(
        f"{call.tool_name} needs an operator's approval ({decision.reason}); the action has not been performed and "
        "the request stays pending. Tell the user it awaits approval.",
        capability=call.capability,
        code="review_pending",
        decision=decision,
    )


def _review_status(decision: Decision) -> str | None:
    return decision.review.status if decision.review is not None else None


def _notify(call: GovernedCall, decision: Decision, interrupting: bool) -> bool:
    """Call on_escalation for a new, pending escalation. Not in interrupt mode: there the graph's
    `__interrupt__` is the notification, and a resumed run sees the same decision again."""
    if call.settings.on_escalation is None or interrupting:
        return False
    return _review_status(decision) in (None, "pending")


def _confirmation_answer(call: GovernedCall, decision: Decision) -> Any:
    assert call.settings.confirm is not None
    return call.settings.confirm(decision)


# ---------------------------------------------------------------------------------------------
# Sync
# ---------------------------------------------------------------------------------------------


def _propose(
    client: AegisClient, call: GovernedCall, *, token: str | None = None, idempotency_key: str | None = None
) -> Decision:
    try:
        decision = client.propose(
            call.actor,
            call.action(),
            call.context(),
            confirmation_token=token,
            idempotency_key=idempotency_key,
        )
    except ParameterValidationError as exc:
        raise _invalid(call, exc) from exc
    except AegisError as exc:
        raise _unavailable(call, exc) from exc
    _log_decision(call, decision)
    return decision


def govern(call: GovernedCall, client: AegisClient) -> Decision:
    """Return the ALLOW decision the tool may run under, or raise a GovernanceRefusal."""
    interrupting = call.settings.on_escalate == "interrupt" and call.resume_key is not None
    decision = _propose(client, call, idempotency_key=call.resume_key if interrupting else None)
    if decision.outcome == "ALLOW":
        return decision
    if decision.outcome == "REQUIRE_CONFIRMATION":
        if call.settings.confirm is None:
            raise _denied(call, decision)
        answer = _confirmation_answer(call, decision)
        if inspect.isawaitable(answer):
            answer = _run_awaitable(answer, "confirm")
        if not answer:
            raise _declined(call, decision)
        confirmed = _propose(client, call, token=decision.confirmation_token)
        if confirmed.outcome != "ALLOW":
            raise _denied(call, confirmed)
        return confirmed
    if decision.outcome == "ESCALATE":
        return _escalated(call, client, decision, interrupting)
    raise _denied(call, decision)


def _escalated(call: GovernedCall, client: AegisClient, decision: Decision, interrupting: bool) -> Decision:
    mode = call.settings.on_escalate
    if _notify(call, decision, interrupting):
        assert call.settings.on_escalation is not None
        notified = call.settings.on_escalation(decision)
        if inspect.isawaitable(notified):
            _run_awaitable(notified, "on_escalation")
    if mode == "raise":
        raise _denied(call, decision)
    if mode == "interrupt":
        if not interrupting:
            raise _cannot_interrupt(call, decision)
        payload = _interrupt_payload(call, decision)
        while True:
            _interrupt(payload)
            try:
                current = client.decisions.get(decision.decision_id)
            except AegisError as exc:
                raise _unavailable(call, exc) from exc
            status = _review_status(current)
            if status == "approved" and current.confirmation_token:
                assert call.resume_key is not None
                allowed = _propose(
                    client, call, token=current.confirmation_token, idempotency_key=call.resume_key + "-approved"
                )
                if allowed.outcome != "ALLOW":
                    raise _denied(call, allowed)
                return allowed
            if status not in (None, "pending"):
                raise _denied(call, current)
            # resumed while the review is still pending: pause again on the same decision
    try:
        final = client.wait_for_review(decision, timeout=call.settings.review_timeout)
    except ReviewTimeoutError as exc:
        raise _timed_out(call, exc.decision) from None
    except AegisError as exc:
        raise _unavailable(call, exc) from exc
    _log_decision(call, final)
    if final.outcome == "ALLOW":
        return final
    raise _denied(call, final)


def _run_awaitable(awaitable: Awaitable[Any], name: str) -> Any:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:

        async def _await() -> Any:
            return await awaitable

        return asyncio.run(_await())
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
    raise ConfigurationError(
        f"The {name} callback is async but the tool was invoked synchronously inside a running event loop; "
        "use ainvoke() or give a sync callback.",
        code="async_callback_in_sync_call",
    )


def report(
    client: AegisClient, call: GovernedCall, decision: Decision, error: BaseException | None, ms: float
) -> str | None:
    """Report the execution of an allowed call; returns the audit ref, or None (errors are logged)."""
    if not call.settings.report_execution or decision.degraded:
        return None
    try:
        record = client.decisions.report_execution(decision.decision_id, **_report_fields(error, ms))
    except AegisError as exc:
        logger.warning(
            "could not report the execution of decision %s (tool %s): %s",
            decision.decision_id,
            call.tool_name,
            type(exc).__name__,
        )
        return None
    return record.audit_ref


def _report_fields(error: BaseException | None, ms: float) -> dict[str, Any]:
    if error is None:
        return {"status": "SUCCESS", "duration_ms": max(ms, 0.0)}
    message = str(error)
    if len(message) > _ERROR_MESSAGE_LIMIT:
        message = message[: _ERROR_MESSAGE_LIMIT - 1] + "…"
    return {
        "status": "FAILED",
        "error": {"code": type(error).__name__, "message": message},
        "duration_ms": max(ms, 0.0),
    }


# ---------------------------------------------------------------------------------------------
# Async
# ---------------------------------------------------------------------------------------------


async def _apropose(
    client: AsyncAegisClient, call: GovernedCall, *, token: str | None = None, idempotency_key: str | None = None
) -> Decision:
    try:
        decision = await client.propose(
            call.actor,
            call.action(),
            call.context(),
            confirmation_token=token,
            idempotency_key=idempotency_key,
        )
    except ParameterValidationError as exc:
        raise _invalid(call, exc) from exc
    except AegisError as exc:
        raise _unavailable(call, exc) from exc
    _log_decision(call, decision)
    return decision


async def agovern(call: GovernedCall, client: AsyncAegisClient) -> Decision:
    """Async `govern`."""
    interrupting = call.settings.on_escalate == "interrupt" and call.resume_key is not None
    decision = await _apropose(client, call, idempotency_key=call.resume_key if interrupting else None)
    if decision.outcome == "ALLOW":
        return decision
    if decision.outcome == "REQUIRE_CONFIRMATION":
        if call.settings.confirm is None:
            raise _denied(call, decision)
        answer = _confirmation_answer(call, decision)
        if inspect.isawaitable(answer):
            answer = await answer
        if not answer:
            raise _declined(call, decision)
        confirmed = await _apropose(client, call, token=decision.confirmation_token)
        if confirmed.outcome != "ALLOW":
            raise _denied(call, confirmed)
        return confirmed
    if decision.outcome == "ESCALATE":
        return await _aescalated(call, client, decision, interrupting)
    raise _denied(call, decision)


async def _aescalated(call: GovernedCall, client: AsyncAegisClient, decision: Decision, interrupting: bool) -> Decision:
    mode = call.settings.on_escalate
    if _notify(call, decision, interrupting):
        assert call.settings.on_escalation is not None
        notified = call.settings.on_escalation(decision)
        if inspect.isawaitable(notified):
            await notified
    if mode == "raise":
        raise _denied(call, decision)
    if mode == "interrupt":
        if not interrupting:
            raise _cannot_interrupt(call, decision)
        payload = _interrupt_payload(call, decision)
        while True:
            _interrupt(payload)
            try:
                current = await client.decisions.get(decision.decision_id)
            except AegisError as exc:
                raise _unavailable(call, exc) from exc
            status = _review_status(current)
            if status == "approved" and current.confirmation_token:
                assert call.resume_key is not None
                allowed = await _apropose(
                    client, call, token=current.confirmation_token, idempotency_key=call.resume_key + "-approved"
                )
                if allowed.outcome != "ALLOW":
                    raise _denied(call, allowed)
                return allowed
            if status not in (None, "pending"):
                raise _denied(call, current)
    try:
        final = await client.wait_for_review(decision, timeout=call.settings.review_timeout)
    except ReviewTimeoutError as exc:
        raise _timed_out(call, exc.decision) from None
    except AegisError as exc:
        raise _unavailable(call, exc) from exc
    _log_decision(call, final)
    if final.outcome == "ALLOW":
        return final
    raise _denied(call, final)


async def areport(
    client: AsyncAegisClient, call: GovernedCall, decision: Decision, error: BaseException | None, ms: float
) -> str | None:
    """Async `report`."""
    if not call.settings.report_execution or decision.degraded:
        return None
    try:
        record = await client.decisions.report_execution(decision.decision_id, **_report_fields(error, ms))
    except AegisError as exc:
        logger.warning(
            "could not report the execution of decision %s (tool %s): %s",
            decision.decision_id,
            call.tool_name,
            type(exc).__name__,
        )
        return None
    return record.audit_ref


def allowed_artifact(
    call: GovernedCall, decision: Decision, error: BaseException | None, execution_ref: str | None
) -> GovernanceArtifact:
    artifact = governance_artifact(call.capability, decision)
    if call.settings.report_execution:
        artifact["execution"] = "SUCCESS" if error is None else "FAILED"
    artifact["execution_audit_ref"] = execution_ref
    return artifact


class ToolError(Exception):
    """Stands, in an execution report, for a tool call that ended in an error ToolMessage (the tool or the
    tool node turned its exception into a message, so the original type is not known)."""


def failure_of(output: Any) -> BaseException | None:
    """The failure to report for a tool output: an error ToolMessage is a failure."""
    from langchain_core.messages import ToolMessage

    if isinstance(output, ToolMessage) and output.status == "error":
        return ToolError(f"the tool returned an error message: {output.content}")
    return None


def is_graph_bubble_up(exc: BaseException) -> bool:
    """LangGraph's control-flow exceptions (interrupts, parent commands) are not tool failures."""
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - the extra is part of the workspace
        return False
    return isinstance(exc, GraphBubbleUp)


__all__ = [
    "DEFAULT_ACTOR_ID",
    "DEFAULT_REVIEW_TIMEOUT",
    "INTERRUPT_TYPE",
    "ActorLike",
    "ConfirmCallback",
    "EscalationCallback",
    "EscalationMode",
    "GovernedCall",
    "ParameterMapper",
    "Settings",
    "ToolError",
    "agovern",
    "allowed_artifact",
    "areport",
    "build_call",
    "configure",
    "current_decision",
    "derive_capability",
    "failure_of",
    "govern",
    "is_graph_bubble_up",
    "make_settings",
    "report",
    "reset_configuration",
    "resolve_async_client",
    "resolve_client",
    "to_actor",
]
