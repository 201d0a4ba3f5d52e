"""How calls are governed: the `Settings` of a governed tool or middleware (checked once when it is built),
the process-wide defaults `configure()` sets (clients, actor) with clients from the `AEGIS_*` environment
as the last resort, and the default capability of a tool."""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import pydantic

from aegis_sdk import Actor, AegisClient, AsyncAegisClient, ConfigurationError, Decision
from aegis_sdk._validation import describe_validation

EscalationMode = Literal["auto", "interrupt", "wait", "raise"]
ConfirmCallback = Callable[[Decision], bool | Awaitable[bool]]
ConfirmMode = Literal["auto", "interrupt", "refuse"]
EscalationCallback = Callable[[Decision], Awaitable[None] | None]
ParameterMapper = Callable[[dict[str, Any]], Mapping[str, Any]]
ActorLike = str | Actor | Mapping[str, Any]

DEFAULT_ACTOR_ID = "langchain-agent"
DEFAULT_REVIEW_TIMEOUT = 600.0
_ESCALATION_MODES = ("auto", "interrupt", "wait", "raise")
_CONFIRM_MODES = ("auto", "interrupt", "refuse")
_CAPABILITY_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]")


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


def _check_clients(
    client: object, async_client: object, name: Callable[[str], str], args: tuple[str, str] = ("client", "async_client")
) -> None:
    """Refuse a client of the wrong kind; `name("client")` says where it was passed. `args` names the pair
    (`("reviewer", "async_reviewer")` for the reviewer's clients)."""
    sync_arg, async_arg = args
    for arg, value, expected, other, other_arg in (
        (sync_arg, client, AegisClient, AsyncAegisClient, async_arg),
        (async_arg, async_client, AsyncAegisClient, AegisClient, sync_arg),
    ):
        if value is not None and not isinstance(value, expected):
            raise ConfigurationError(
                f"{name(arg)} takes an aegis_sdk.{expected.__name__}, got {type(value).__name__}"
                + (f" (pass it as {other_arg}=)" if isinstance(value, other) else "")
                + ".",
                code="invalid_client",
            )


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
    _check_clients(client, async_client, lambda arg: f"configure({arg}=)")
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


def default_actor() -> Actor | None:
    """The actor `configure()` set, if any."""
    with _defaults.lock:
        return _defaults.actor


def _default_client(kind: Literal["sync", "async"]) -> Any:
    """The configured client of this kind, else the one created (once) from the environment."""
    arg, cls, path = (
        ("client", AegisClient, "invoke()") if kind == "sync" else ("async_client", AsyncAegisClient, "ainvoke()")
    )
    with _defaults.lock:
        configured = getattr(_defaults, arg)
        if configured is not None:
            return configured
        env_attr = f"env_{arg}"
        if getattr(_defaults, env_attr) is None:
            try:
                setattr(_defaults, env_attr, cls())
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"A governed tool needs an aegis_sdk.{cls.__name__} for {path} and none was given: pass "
                    f"{arg}= to the decorator/wrapper or middleware, call aegis_langchain.configure({arg}=...), "
                    f"or set AEGIS_ENDPOINT and AEGIS_API_KEY. The tool did not run. ({exc.message})",
                    code="no_client",
                ) from None
        return getattr(_defaults, env_attr)


def resolve_client(explicit: AegisClient | None) -> AegisClient:
    """The sync client of a call: the tool's own, the configured one, or one from the environment."""
    if explicit is not None:
        return explicit
    client: AegisClient = _default_client("sync")
    return client


def resolve_async_client(explicit: AsyncAegisClient | None) -> AsyncAegisClient:
    """The async client of a call: the tool's own, the configured one, or one from the environment."""
    if explicit is not None:
        return explicit
    client: AsyncAegisClient = _default_client("async")
    return client


# ---------------------------------------------------------------------------------------------
# Settings of a governed tool / middleware
# ---------------------------------------------------------------------------------------------


def to_actor(value: ActorLike, where: str) -> Actor:
    """An `Actor` from an id, a mapping or an `Actor`; `where` names the argument in the error."""
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
                f"'type': ai-agent, ai-copilot, automation, human); it is invalid: {first_error(exc)}",
                code="invalid_actor",
            ) from None
    raise ConfigurationError(
        f"{where} must be an actor id (str), an aegis_sdk.Actor or a mapping, got {type(value).__name__}.",
        code="invalid_actor",
    )


def first_error(exc: ValueError) -> str:
    """The first problem of a validation error, as `loc: message` (never the offending value)."""
    if isinstance(exc, pydantic.ValidationError):
        first = describe_validation(exc)[1][0]
        return f"{first['loc']}: {first['msg']}"
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
    """How calls are governed; built once per governed tool or middleware.

    - `confirm`: who confirms a REQUIRE_CONFIRMATION: `"auto"` (pause the LangGraph run when it can pause —
      a checkpointer and a thread — else as `"refuse"`), `"interrupt"`, `"refuse"` (the model reads that
      the user's confirmation is required), or a callback `decision -> bool`.
    - `on_escalate`: what an ESCALATE does: `"auto"` (pause the LangGraph run when it can pause, else as
      `"wait"`), `"interrupt"`, `"wait"` (for the review, up to `review_timeout` seconds) or `"raise"`.
    - `reviewer` / `async_reviewer`: a client with a reviewer's own key (`governance:review`, not the
      proposing key). Given, the answer to an escalation's pause is submitted to AEGIS as that reviewer's
      review (approve, or reject with its message): the platform records it, audits it and holds it to
      its rules. Without it, only a review in AEGIS itself approves an escalation.
    """

    client: AegisClient | None = None
    async_client: AsyncAegisClient | None = None
    actor: Actor | None = None
    session_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    parameters: ParameterMapper | None = None
    confirm: ConfirmCallback | ConfirmMode = "auto"
    on_escalate: EscalationMode = "auto"
    review_timeout: float | None = DEFAULT_REVIEW_TIMEOUT
    on_escalation: EscalationCallback | None = None
    report_execution: bool = True
    reviewer: AegisClient | None = None
    async_reviewer: AsyncAegisClient | None = None


def settings_from(arguments: Mapping[str, Any]) -> Settings:
    """Check and build the `Settings` from the arguments of a constructor (`govern_tool`, `govern_tools`,
    `governed_tool`, `GovernanceMiddleware`): they all take `Settings`' fields as keywords, so each passes
    its `locals()`; a field a constructor does not take keeps its default. An error names the argument and
    what it takes."""
    given = {option.name: arguments[option.name] for option in fields(Settings) if option.name in arguments}
    _check_clients(given.get("client"), given.get("async_client"), lambda arg: f"{arg}=")
    _check_clients(
        given.get("reviewer"), given.get("async_reviewer"), lambda arg: f"{arg}=", ("reviewer", "async_reviewer")
    )
    on_escalate = given.get("on_escalate", "auto")
    if not isinstance(on_escalate, str) or on_escalate not in _ESCALATION_MODES:
        raise ConfigurationError(
            f"on_escalate must be one of 'auto' (pause the LangGraph graph when the call runs in a graph with a "
            f"checkpointer, else wait), 'interrupt' (pause the graph), 'wait' (wait for the review, up to "
            f"review_timeout) or 'raise' (refuse at once), got {on_escalate!r}.",
            code="invalid_on_escalate",
        )
    confirm = given.get("confirm", "auto")
    if confirm is None:
        given["confirm"] = "refuse"
    elif isinstance(confirm, str):
        if confirm not in _CONFIRM_MODES:
            raise ConfigurationError(
                f"confirm= takes a callback (decision -> bool), 'auto' (pause the LangGraph graph when the call "
                f"runs in a graph with a checkpointer, else refuse), 'interrupt' (pause the graph) or 'refuse' "
                f"(the model reads that the user's confirmation is required), got {confirm!r}.",
                code="invalid_confirm",
            )
    elif not callable(confirm):
        raise ConfigurationError(
            f"confirm= must be a callable or one of {', '.join(map(repr, _CONFIRM_MODES))}, got "
            f"{type(confirm).__name__}.",
            code="invalid_callback",
        )
    review_timeout = given.get("review_timeout", DEFAULT_REVIEW_TIMEOUT)
    if review_timeout is not None and (
        isinstance(review_timeout, bool) or not isinstance(review_timeout, (int, float)) or review_timeout <= 0
    ):
        raise ConfigurationError(
            f"review_timeout must be a positive number of seconds (or None: until the review deadline), "
            f"got {review_timeout!r}.",
            code="invalid_review_timeout",
        )
    for name in ("on_escalation", "parameters"):
        value = given.get(name)
        if value is not None and not callable(value):
            raise ConfigurationError(
                f"{name}= must be a callable, got {type(value).__name__}.", code="invalid_callback"
            )
    metadata = given.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ConfigurationError(
            f"metadata= must be a mapping, got {type(metadata).__name__}.", code="invalid_metadata"
        )
    actor = given.get("actor")
    given["actor"] = to_actor(actor, "actor=") if actor is not None else None
    given["metadata"] = dict(metadata or {})
    given["review_timeout"] = None if review_timeout is None else float(review_timeout)
    return Settings(**given)


__all__ = [
    "DEFAULT_ACTOR_ID",
    "DEFAULT_REVIEW_TIMEOUT",
    "ActorLike",
    "ConfirmCallback",
    "ConfirmMode",
    "EscalationCallback",
    "EscalationMode",
    "ParameterMapper",
    "Settings",
    "configure",
    "default_actor",
    "derive_capability",
    "first_error",
    "reset_configuration",
    "resolve_async_client",
    "resolve_client",
    "settings_from",
    "to_actor",
]
