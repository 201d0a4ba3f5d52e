"""The steps a governed flow yields (the I/O it needs: a client call, a user callback, the tool's run, the
client's pending escalations) and the two loops that perform them: `run_sync` with an `AegisClient`,
`run_async` with an `AsyncAegisClient` (never a thread hop around a sync call). They are the only places
where sync and async differ."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aegis_langchain._pending import pending_escalations
from aegis_sdk import AegisClient, AsyncAegisClient, ConfigurationError, Decision

_T = TypeVar("_T")


@dataclass(frozen=True)
class ClientCall:
    """Call `client.<method>(*args, **kwargs)` (a dotted method, e.g. `decisions.get`) and send back the
    result; an error is thrown back into the flow."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def bound(self, client: object) -> Callable[[], Any]:
        target: Any = client
        for name in self.method.split("."):
            target = getattr(target, name)
        return lambda: target(*self.args, **self.kwargs)


@dataclass(frozen=True)
class ReviewerCall:
    """Make `call` with the reviewer's client of the driver's kind (`sync_client` for `run_sync`,
    `async_client` for `run_async`); a missing one is a ConfigurationError thrown back into the flow."""

    call: ClientCall
    sync_client: AegisClient | None
    async_client: AsyncAegisClient | None

    def client(self, kind: str) -> Any:
        client = self.sync_client if kind == "sync" else self.async_client
        if client is None:
            arg, path = ("reviewer", "invoke()") if kind == "sync" else ("async_reviewer", "ainvoke()")
            raise ConfigurationError(
                f"This tool was called with {path}, so submitting the pause's answer as a review needs {arg}=, "
                "a client of that kind with the reviewer's key.",
                code="no_reviewer_client",
            )
        return client


@dataclass(frozen=True)
class UserCallback:
    """Call a user callback (`confirm`, `on_escalation`), which may be sync or async, with the decision."""

    name: str
    func: Callable[[Decision], Any]
    decision: Decision


@dataclass(frozen=True)
class RunTool:
    """Run the governed tool (or the agent's tool handler) for `invocation` (the call's, or the edited
    call's) and send back its output."""

    invocation: Any


@dataclass(frozen=True)
class PendingStore:
    """Send back the escalations the driver's client left pending (`pending_escalations(client)`)."""


Step = ClientCall | ReviewerCall | UserCallback | RunTool | PendingStore
Flow = Generator[Step, Any, _T]


def run_sync(flow: Flow[_T], client: AegisClient, run: Callable[[Any], Any] | None = None) -> _T:
    """Drive `flow` with the sync client; `run` runs the tool."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            value: _T = stop.value
            return value
        result, error = None, None
        try:
            if isinstance(step, ClientCall):
                result = step.bound(client)()
            elif isinstance(step, ReviewerCall):
                result = step.call.bound(step.client("sync"))()
            elif isinstance(step, UserCallback):
                answer = step.func(step.decision)
                result = _run_awaitable(answer, step.name) if inspect.isawaitable(answer) else answer
            elif isinstance(step, PendingStore):
                result = pending_escalations(client)
            else:
                assert run is not None
                result = run(step.invocation)
        except BaseException as exc:
            error = exc


async def run_async(flow: Flow[_T], client: AsyncAegisClient, run: Callable[[Any], Awaitable[Any]] | None = None) -> _T:
    """Drive `flow` with the async client; `run` runs the tool."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(result) if error is None else flow.throw(error)
        except StopIteration as stop:
            value: _T = stop.value
            return value
        result, error = None, None
        try:
            if isinstance(step, ClientCall):
                result = await step.bound(client)()
            elif isinstance(step, ReviewerCall):
                result = await step.call.bound(step.client("async"))()
            elif isinstance(step, UserCallback):
                answer = step.func(step.decision)
                result = await answer if inspect.isawaitable(answer) else answer
            elif isinstance(step, PendingStore):
                result = pending_escalations(client)
            else:
                assert run is not None
                result = await run(step.invocation)
        except BaseException as exc:
            error = exc


def _run_awaitable(awaitable: Awaitable[Any], name: str) -> Any:
    """An async callback of a sync call: run it when no event loop is running, else refuse."""
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


__all__ = [
    "ClientCall",
    "Flow",
    "PendingStore",
    "ReviewerCall",
    "RunTool",
    "Step",
    "UserCallback",
    "run_async",
    "run_sync",
]
