"""`GovernanceMiddleware`: AEGIS in front of every `tools/call` of an MCP server written with the MCP SDK
(`MCPServer(middleware=[...])`, or `server.middleware.append(...)` on a lowlevel `Server`). The proxy puts the
same middleware in front of the tools it forwards.

Each call is proposed first; the tool's handler runs only under an ALLOW:

- ALLOW → the handler runs; its result is returned and reported to AEGIS as the execution (`isError` →
  FAILED), in the background: the report is queued on the client's reporter (`report_execution_later`), sent
  batched off the call's path and flushed when the client closes (`aclose()`, `async with client`);
- DENY → a result with `isError: true` saying why, with the decision id; the handler never sees the call;
- REQUIRE_CONFIRMATION → the user is asked by elicitation; yes → confirmed with the decision's token, then
  run; no, or a client that cannot be asked → refused;
- ESCALATE → waits for the operator's review (with progress notifications) up to `review_timeout`, then runs
  on approval or refuses; the same call made again re-attaches to that review;
- platform unreachable → refused (fail closed), unless `fail_open=True`: then the handler runs, the result's
  `_meta` says `degraded`, and a warning is logged.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.request_state import authenticated_principal
from mcp_types import ElicitResult, InputRequiredResult
from pydantic import BaseModel

from aegis_mcp import _refusals as refusals
from aegis_mcp._ask import answer_in, ask_now, asks_by_input_required, can_ask, consented, input_required
from aegis_mcp._call import ToolCall, as_actor, capability_for
from aegis_mcp._pending import PendingEscalations, PendingQuestions, PendingRuns, is_our_run, is_our_state
from aegis_mcp._refusals import META_KEY, Refusal, governance_meta
from aegis_sdk import (
    Actor,
    AegisError,
    AsyncAegisClient,
    ConfirmationError,
    Decision,
    InvalidRequestError,
    ParameterValidationError,
    ReviewTimeoutError,
    UnknownCapabilityError,
)
from aegis_sdk._degraded import degraded_allow
from aegis_sdk._govern_tracing import GovernSpan
from aegis_sdk._version import installed_version
from aegis_sdk.errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)

logger = logging.getLogger("aegis_mcp")
_VERSION = installed_version("aegisgov-mcp")  # the tracer's version

ActorSource = str | Actor | Mapping[str, Any] | Callable[[ServerRequestContext[Any, Any]], Actor | str]
_ERROR_TEXT_LIMIT = 1000
_REPORT_ON_CANCEL_SECONDS = 5.0


class GovernanceMiddleware:
    """MCP server middleware that proposes every `tools/call` to AEGIS and runs the tool only under an ALLOW.

    ```python
    from mcp.server.mcpserver import MCPServer
    from aegis_mcp import GovernanceMiddleware
    from aegis_sdk import AsyncAegisClient

    governance = GovernanceMiddleware(AsyncAegisClient(), actor="support-agent")
    server = MCPServer("payments", middleware=[governance])
    ```

    Tool `t` is governed as capability `<capability_prefix>.<t>` unless `capabilities` maps it; its arguments
    are the parameters. `actor` is an id (an `ai-agent`), an `Actor`, or a callable of the request context
    returning one (say, from the authenticated principal). The session is the MCP session (`Mcp-Session-Id`
    over HTTP, the process over stdio) unless `session_id` says otherwise. `metadata` (and `tool_metadata`, per
    tool) goes into the proposal's context metadata. Tools in `ungoverned` run without
    a proposal. `review_timeout` (seconds) bounds the wait for an operator's review, with a progress
    notification every `progress_interval`; `confirmation_ttl` bounds how long a question asked through
    `InputRequiredResult` stays answerable.
    """

    def __init__(
        self,
        client: AsyncAegisClient,
        *,
        actor: ActorSource,
        capability_prefix: str | None = "mcp",
        capabilities: Mapping[str, str] | None = None,
        ungoverned: Collection[str] = (),
        fail_open: bool = False,
        review_timeout: float = 300.0,
        progress_interval: float = 5.0,
        confirmation_ttl: float = 600.0,
        report_execution: bool = True,
        session_id: Callable[[ServerRequestContext[Any, Any]], str | None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tool_metadata: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        if review_timeout < 0 or progress_interval <= 0 or confirmation_ttl <= 0:
            raise ValueError("review_timeout must be >= 0, and progress_interval and confirmation_ttl > 0 (seconds)")
        self.client = client
        self._actor = actor if callable(actor) else as_actor(actor)
        self.capability_prefix = capability_prefix
        self.capabilities = dict(capabilities or {})
        self.ungoverned = frozenset(ungoverned)
        self.fail_open = fail_open
        self.review_timeout = review_timeout
        self.progress_interval = progress_interval
        self.report_execution = report_execution
        self._session_id = session_id
        self._metadata = dict(metadata or {})
        self._tool_metadata = tool_metadata
        self._stdio_session = f"mcp-{uuid.uuid4().hex}"
        self._escalations = PendingEscalations()
        self._questions = PendingQuestions(confirmation_ttl)
        self._runs = PendingRuns(confirmation_ttl)

    # -- the middleware ----------------------------------------------------------------------------

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None or not isinstance(ctx.params, Mapping):
            return await call_next(ctx)
        params = dict(ctx.params)
        tool = params.get("name")
        if not isinstance(tool, str) or tool in self.ungoverned:
            return await call_next(ctx)
        if params.get("arguments") is not None and not isinstance(params.get("arguments"), dict):
            logger.info("MCP tool %s: refused a call whose arguments are not a JSON object", tool)
            return refusals.bad_arguments(tool)
        # The span covers the whole governed call: the decision and the tool's run (the execution report is only
        # queued in it; the client's reporter sends it later, in a trace of its own).
        with GovernSpan("aegis_mcp", _VERSION, "mcp", {"aegis.tool.name": tool}) as govern:
            try:
                call = self.tool_call(ctx, tool, params.get("arguments"))
            except (TypeError, ValueError) as exc:
                # The app's own actor source or capability map is wrong: refuse, never run ungoverned.
                logger.error("MCP tool %s: the governance set-up is invalid (%s); the call was refused", tool, exc)
                govern.failed(exc)
                return _setup_refusal(f"The tool call {tool!r} could not be governed: {exc}. The tool did not run.")
            govern.set("aegis.capability", call.capability)
            return await self._governed(ctx, call, params, call_next, govern)

    async def _governed(
        self,
        ctx: ServerRequestContext[Any, Any],
        call: ToolCall,
        params: dict[str, Any],
        call_next: CallNext,
        govern: GovernSpan,
    ) -> HandlerResult:
        state = params.get("requestState")
        if is_our_run(state):
            run = self._runs.take(str(state), call)
            if run is None:
                refusal = refusals.resume_changed(call)
                govern.refused(refusal, refusal.decision)
                return refusal.result
            resumed = {key: value for key, value in params.items() if key != "requestState"}
            if run.tool_state is not None:
                resumed["requestState"] = run.tool_state
            govern.decided(run.decision)
            return await self._run(ctx, call, run.decision, resumed, call_next)
        try:
            decision = await self._govern(ctx, call, params)
        except Refusal as refusal:
            govern.refused(refusal, refusal.decision)
            return refusal.result
        if isinstance(decision, InputRequiredResult):
            govern.decided(None)  # the user is being asked: an answer, not a failure
            return decision
        govern.decided(decision)
        return await self._run(ctx, call, decision, _without_our_round(params), call_next)

    def tool_call(self, ctx: ServerRequestContext[Any, Any], tool: str, arguments: object) -> ToolCall:
        """The ToolCall AEGIS governs for this request."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ValueError("the tool's arguments must be a JSON object")
        actor = self._actor(ctx) if callable(self._actor) else self._actor
        metadata = {**self._metadata, **(self._tool_metadata(tool) if self._tool_metadata is not None else {})}
        client = ctx.session.client_params
        if client is not None and client.client_info is not None:
            metadata["mcp_client"] = client.client_info.name
        return ToolCall(
            tool=tool,
            capability=capability_for(tool, prefix=self.capability_prefix, mapping=self.capabilities),
            arguments=arguments,
            actor=as_actor(actor),
            session_id=self._session_of(ctx),
            metadata=metadata,
        )

    def _session_of(self, ctx: ServerRequestContext[Any, Any]) -> str | None:
        if self._session_id is not None:
            return self._session_id(ctx)
        request = ctx.request
        headers = getattr(request, "headers", None)
        if headers is None:
            return self._stdio_session
        session: str | None = headers.get("mcp-session-id")
        if session is None:
            # Streamable HTTP from 2026-07-28 has no session: the authenticated caller, if the server has auth,
            # is the nearest thing. Without either, nothing ties two calls to one client (no re-attach).
            principal = authenticated_principal(ctx)
            return f"principal:{principal}" if principal else None
        return session

    # -- governing ---------------------------------------------------------------------------------

    async def _govern(
        self, ctx: ServerRequestContext[Any, Any], call: ToolCall, params: dict[str, Any]
    ) -> Decision | InputRequiredResult:
        """The ALLOW decision the tool may run under, an `InputRequiredResult` asking the user, or a Refusal."""
        state = params.get("requestState")
        if is_our_state(state):
            return await self._answered(call, str(state), answer_in(params))
        earlier = await self._reattach(call)
        if earlier is not None:
            return await self._escalated(ctx, call, earlier, new=False)
        decision = await self._propose(call)
        return await self._decided(ctx, call, decision)

    async def _decided(
        self, ctx: ServerRequestContext[Any, Any], call: ToolCall, decision: Decision
    ) -> Decision | InputRequiredResult:
        if decision.outcome == "ALLOW":
            return decision
        if decision.outcome == "REQUIRE_CONFIRMATION":
            return await self._confirmation(ctx, call, decision)
        if decision.outcome == "ESCALATE":
            return await self._escalated(ctx, call, decision, new=True)
        raise refusals.denied(call, decision)

    async def _propose(self, call: ToolCall, *, confirming: Decision | None = None) -> Decision:
        """A decision on `call`; with `confirming`, the proposal carries that decision's token (the user's
        consent or the operator's approval)."""
        token = confirming.confirmation_token if confirming is not None else None
        try:
            decision = await self.client.propose(call.actor, call.action(), call.context(), confirmation_token=token)
        except (ParameterValidationError, InvalidRequestError, UnknownCapabilityError) as exc:
            raise refusals.invalid(call, exc) from None
        except ConfirmationError as exc:
            raise refusals.confirmation_refused(call, confirming, exc) from None
        except AegisError as exc:
            if self.fail_open and token is None and _is_unavailable(exc):
                return _degraded_allow(call, exc)
            raise refusals.unavailable(call, exc) from None
        logger.info(
            "MCP tool %s capability %s: decision %s outcome=%s",
            call.tool,
            call.capability,
            decision.decision_id,
            decision.outcome,
        )
        return decision

    async def _allowed(self, call: ToolCall, decision: Decision) -> Decision:
        """Propose again with the decision's token (the user's consent, or the operator's approval)."""
        allowed = await self._propose(call, confirming=decision)
        if allowed.outcome != "ALLOW":
            raise refusals.denied(call, allowed)
        return allowed

    # -- REQUIRE_CONFIRMATION ----------------------------------------------------------------------

    async def _confirmation(
        self, ctx: ServerRequestContext[Any, Any], call: ToolCall, decision: Decision
    ) -> Decision | InputRequiredResult:
        if not can_ask(ctx):
            raise refusals.cannot_ask(call, decision, "this MCP client cannot ask the user (it has no elicitation)")
        if asks_by_input_required(ctx):
            state = self._questions.ask(call, decision)
            if state is None:
                raise refusals.cannot_ask(call, decision, "its arguments cannot be bound to a confirmation")
            return input_required(call, decision, state)
        answer = await ask_now(ctx, call, decision)
        if answer is None:
            raise refusals.cannot_ask(call, decision, "the MCP client did not answer the question")
        return await self._consent(call, decision, answer)

    async def _answered(self, call: ToolCall, state: str, answer: ElicitResult | None) -> Decision:
        """A call retried with the answer to a question asked through `InputRequiredResult`."""
        question = self._questions.take(state, call)
        if question is None:
            raise refusals.confirmation_changed(call)
        if answer is None:
            raise refusals.declined(call, question.decision, "cancel")
        return await self._consent(call, question.decision, answer)

    async def _consent(self, call: ToolCall, decision: Decision, answer: ElicitResult) -> Decision:
        if not consented(answer):
            logger.info("MCP tool %s: the user did not confirm decision %s", call.tool, decision.decision_id)
            raise refusals.declined(call, decision, answer.action)
        return await self._allowed(call, decision)

    # -- ESCALATE ----------------------------------------------------------------------------------

    async def _reattach(self, call: ToolCall) -> Decision | None:
        """The escalation this call left pending, read again: pending or approved → re-attach; denied → that
        refusal; expired or unreadable → None (propose anew)."""
        decision_id = self._escalations.find(call)
        if decision_id is None:
            return None
        try:
            current = await self.client.decisions.get(decision_id)
        except AegisError:
            self._escalations.forget(call, decision_id)
            return None
        status = current.review.status if current.review is not None else None
        if status in (None, "pending", "approved"):
            logger.info("MCP tool %s: re-attached to decision %s", call.tool, decision_id)
            return current
        self._escalations.forget(call, decision_id)
        if status == "denied":
            raise refusals.denied(call, current)
        return None

    async def _escalated(
        self, ctx: ServerRequestContext[Any, Any], call: ToolCall, decision: Decision, *, new: bool
    ) -> Decision | InputRequiredResult:
        if decision.review is not None and decision.review.status == "approved":
            self._escalations.forget(call, decision.decision_id)
            return await self._allowed(call, decision)
        # Remembered before the wait: a call the client cancels while it waits re-attaches when made again.
        reattachable = self._escalations.remember(call, decision.decision_id)
        try:
            final = await self._wait_with_progress(ctx, decision)
        except ReviewTimeoutError:
            raise refusals.still_pending(call, decision, self.review_timeout, reattachable=reattachable) from None
        except ConfirmationError as exc:
            if new or exc.code != "proposal_unknown":
                raise refusals.unavailable(call, exc) from None
            # Re-attached, but the client no longer remembers the proposal to resubmit: propose anew.
            self._escalations.forget(call, decision.decision_id)
            return await self._decided(ctx, call, await self._propose(call))
        except AegisError as exc:
            raise refusals.unavailable(call, exc) from None
        self._escalations.forget(call, decision.decision_id)
        if final.outcome != "ALLOW":
            raise refusals.denied(call, final)
        return final

    async def _wait_with_progress(self, ctx: ServerRequestContext[Any, Any], decision: Decision) -> Decision:
        """`wait_for_review`, telling the client every `progress_interval` seconds that the call awaits an
        operator (a no-op for a client that sent no progress token)."""
        started = time.monotonic()
        message = f"Waiting for an operator to review decision {decision.decision_id}: {decision.reason}"

        async def tell() -> None:
            while True:
                elapsed = time.monotonic() - started
                try:
                    await ctx.session.report_progress(round(elapsed, 3), self.review_timeout or None, message)
                except Exception as exc:  # a client that went away must not break the wait
                    logger.debug("progress notification not sent: %s", type(exc).__name__)
                    return
                await anyio.sleep(self.progress_interval)

        outcome: Decision | AegisError
        async with anyio.create_task_group() as group:
            group.start_soon(tell)
            try:
                outcome = await self.client.wait_for_review(decision, timeout=self.review_timeout)
            except AegisError as exc:  # raised outside the group, so that it is not wrapped in an ExceptionGroup
                outcome = exc
            group.cancel_scope.cancel()
        if isinstance(outcome, AegisError):
            raise outcome
        return outcome

    # -- running under the ALLOW -------------------------------------------------------------------

    async def _run(
        self,
        ctx: ServerRequestContext[Any, Any],
        call: ToolCall,
        decision: Decision,
        params: dict[str, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        started = time.perf_counter()
        try:
            result = await call_next(replace(ctx, params=params))
        except anyio.get_cancelled_exc_class():
            # The client cancelled (or timed out) a call that had started: the action may have happened, so
            # the execution record must still say so.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_REPORT_ON_CANCEL_SECONDS):
                await self._report(call, decision, "the client cancelled the call while the tool ran", started)
            raise
        except Exception as exc:
            await self._report(call, decision, f"{type(exc).__name__}: {exc}", started)
            raise
        if _is_input_required(result):
            # The tool asks its own question: no execution yet. Its retry resumes under this decision.
            return self._suspend(call, decision, result)
        await self._report(call, decision, _error_text(result), started)
        return _with_meta(result, governance_meta(call, decision))

    def _suspend(self, call: ToolCall, decision: Decision, result: HandlerResult) -> HandlerResult:
        """The tool's `InputRequiredResult`, its `requestState` swapped for one that names this allowed run (the
        tool's own state is kept here and handed back to it on the retry)."""
        data = (
            result.model_dump(by_alias=True, mode="json", exclude_none=True)
            if isinstance(result, BaseModel)
            else result
        )
        if not isinstance(data, dict):
            return result
        tool_state = data.get("requestState")
        state = self._runs.suspend(call, decision, tool_state if isinstance(tool_state, str) else None)
        if state is None or (tool_state is not None and not isinstance(tool_state, str)):
            return refusals.Refusal(
                call,
                "resume_unavailable",
                f"The tool {call.tool!r} asked a question that cannot be bound to this governed call. The tool "
                "did not finish; call it again.",
                decision,
            ).result
        return {**data, "requestState": state}

    async def _report(self, call: ToolCall, decision: Decision, error: str | None, started: float) -> None:
        if not self.report_execution or decision.degraded:
            return
        duration = max((time.perf_counter() - started) * 1000.0, 0.0)
        fields: dict[str, Any] = {"status": "SUCCESS", "duration_ms": duration}
        if error is not None:
            message = error if len(error) <= _ERROR_TEXT_LIMIT else error[: _ERROR_TEXT_LIMIT - 1] + "…"
            fields = {"status": "FAILED", "duration_ms": duration, "error": {"code": "tool_error", "message": message}}
        try:
            # Queued: the client's reporter sends it in the background (batched, retried, flushed when the client
            # closes); only a full queue sends it here, on the call's path.
            await self.client.decisions.report_execution_later(decision.decision_id, **fields)
        except AegisError as exc:
            logger.warning(
                "could not report the execution of decision %s (MCP tool %s): %s",
                decision.decision_id,
                call.tool,
                type(exc).__name__,
            )


# -- helpers --------------------------------------------------------------------------------------


def _without_our_round(params: dict[str, Any]) -> dict[str, Any]:
    """The params the tool's handler sees: without AEGIS's own question round (its state and answer)."""
    if not is_our_state(params.get("requestState")):
        return params
    cleaned = {key: value for key, value in params.items() if key not in ("requestState", "inputResponses")}
    return cleaned


def _is_input_required(result: HandlerResult) -> bool:
    if isinstance(result, InputRequiredResult):
        return True
    return isinstance(result, dict) and result.get("resultType") == "input_required"


def _error_text(result: HandlerResult) -> str | None:
    """The text of a result with `isError: true` (what the tool said went wrong), else None."""
    data = result.model_dump(by_alias=True, mode="json") if isinstance(result, BaseModel) else result
    if not isinstance(data, dict) or not data.get("isError"):
        return None
    texts = [block.get("text", "") for block in data.get("content") or [] if isinstance(block, dict)]
    return " ".join(text for text in texts if text) or "the tool reported an error"


def _with_meta(result: HandlerResult, meta: dict[str, Any]) -> HandlerResult:
    if isinstance(result, BaseModel):
        data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    elif isinstance(result, dict):
        data = dict(result)
    else:
        return result
    data["_meta"] = {**(data.get("_meta") or {}), META_KEY: meta}
    return data


def _setup_refusal(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {META_KEY: {"refused": "setup"}}}


def _is_unavailable(exc: AegisError) -> bool:
    """The platform could not answer (as opposed to refusing the proxy's own key or request)."""
    if isinstance(exc, (APIConnectionError, MalformedResponseError)):
        return True
    # A rate limit is the platform answering (an agent could exhaust its own limit to get past governance).
    return isinstance(exc, APIStatusError) and not isinstance(
        exc, (AuthenticationError, PermissionDeniedError, NotFoundError, RateLimitError)
    )


def _degraded_allow(call: ToolCall, exc: AegisError) -> Decision:
    decision = degraded_allow(
        f"The AEGIS platform was unreachable ({type(exc).__name__}); allowed without governance because "
        "fail_open is on."
    )
    logger.warning(
        "AEGIS unavailable, MCP tool call allowed WITHOUT governance (fail_open): tool=%s capability=%s "
        "decision_id=%s error=%s",
        call.tool,
        call.capability,
        decision.decision_id,
        type(exc).__name__,
    )
    return decision


__all__ = ["ActorSource", "GovernanceMiddleware"]
