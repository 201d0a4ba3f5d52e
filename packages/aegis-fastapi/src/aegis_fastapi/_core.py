"""`Aegis`: configured once per app; `Depends(aegis.require("capability"))` governs a route."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from starlette.types import Lifespan

from aegis_fastapi._errors import (
    DECISION_HEADER,
    AegisErrorDetail,
    AegisRefusal,
    default_error_response,
    openapi_responses,
)
from aegis_fastapi._inputs import ParameterConflict, RouteInputs, endpoint_inputs
from aegis_sdk import (
    Action,
    Actor,
    AegisError,
    APIConnectionError,
    APIStatusError,
    AsyncAegisClient,
    AuthenticationError,
    ConfirmationError,
    ConfirmationExpiredError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    Context,
    Decision,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    ParameterValidationError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from aegis_sdk.models import DEGRADED_PREFIX

logger = logging.getLogger("aegis_fastapi")

ActorLike = Actor | Mapping[str, Any] | str
"""An actor: the SDK's `Actor`, a mapping such as `{"id": "u-1", "type": "human"}`, or just an id."""
ContextLike = Context | Mapping[str, Any] | None
CapabilitySource = str | Callable[[RouteInputs], str | Awaitable[str]]
ParametersSource = Callable[[RouteInputs], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
ErrorResponse = Callable[[AegisRefusal], Response]

DEFAULT_CONFIRMATION_HEADER = "AEGIS-Confirmation"
_DECISION_ID = re.compile(r"^dec_[A-Za-z0-9]{1,64}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_GOVERNED = "__aegis_governed__"


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _to_actor(value: object) -> Actor | None:
    if value is None:
        return None
    if isinstance(value, Actor):
        return value
    if isinstance(value, str):
        return Actor(id=value) if value else None
    if isinstance(value, Mapping):
        return Actor.model_validate(dict(value))
    raise TypeError(
        f"The actor source returned a {type(value).__name__}; return an aegis_sdk.Actor, a mapping with 'id' "
        "(and optionally 'type'), an id string, or None when nobody is authenticated."
    )


def _to_context(value: object) -> Context:
    if value is None:
        return Context()
    if isinstance(value, Context):
        return value
    if isinstance(value, Mapping):
        return Context.model_validate(dict(value))
    raise TypeError(
        f"The context source returned a {type(value).__name__}; return an aegis_sdk.Context, a mapping "
        "with 'session_id' and/or 'metadata', or None."
    )


def request_id_of(headers: Mapping[str, str]) -> str:
    """The caller's `X-Request-ID` when it is a sane token, else a new `req_<hex>`."""
    given = headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return "req_" + uuid.uuid4().hex


class Aegis:
    """AEGIS governance for a FastAPI app. Configure once, then govern routes with
    `Annotated[Decision, Depends(aegis.require("payments.refund"))]`.

    - `actor`: who acts. A FastAPI dependency of your app (your auth: it may depend on other
      dependencies and raise 401 itself) returning an `Actor`, a mapping, an id string or None; or a fixed
      actor for the whole app. Needed by `require()`; there is no default, and no header is ever trusted
      by default. (An `Aegis` used only by `AegisMiddleware` may leave it out: the middleware has its own.)
    - `context`: optional dependency returning a `Context` or mapping (session id, metadata). The metadata
      always carries `route` (the path template), `method` and `request_id` unless yours sets them.
    - `parameters`: optional callable `(RouteInputs) -> mapping` (sync or async) building the proposal's
      parameters; default: path params, query params and the validated body merged into one object.
    - `client`: an `AsyncAegisClient` you manage (e.g. `FakePlatform().async_client()`); otherwise
      `lifespan` / `install(app)` create one from `endpoint`, `api_key`, `timeout`, `retries` (or the
      `AEGIS_*` environment variables) at startup and close it at shutdown.
    - `fail_open`: when the platform is unreachable or failing, let the request through with a local,
      degraded ALLOW (`decision.degraded`) and log a warning. Default False: answer 503 (fail closed).
    - `report_execution`: after a governed endpoint returns or raises, report SUCCESS or FAILED (with the
      exception type) as the decision's execution result, in the background. Default True.
    - `confirmation_header`: the request header naming a decision to confirm (`AEGIS-Confirmation`).
    - `retry_after`: seconds in the `Retry-After` header of a 503 (unless the platform said otherwise).
    - `error_response`: `(AegisRefusal) -> Response` to render refusals your own way (see `install`).
    - `document_responses`: add the 403/409/428/503 answers to governed routes' OpenAPI (default True).
    """

    def __init__(
        self,
        actor: Callable[..., Any] | ActorLike | None = None,
        *,
        context: Callable[..., Any] | None = None,
        parameters: ParametersSource | None = None,
        client: AsyncAegisClient | None = None,
        endpoint: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        fail_open: bool = False,
        report_execution: bool = True,
        confirmation_header: str = DEFAULT_CONFIRMATION_HEADER,
        retry_after: int = 5,
        error_response: ErrorResponse | None = None,
        document_responses: bool = True,
    ) -> None:
        self._actor_dependency: Callable[..., Any] | None = None
        self.fixed_actor: Actor | None = None
        if actor is None:
            pass  # only AegisMiddleware (which has its own actor=) can be used
        elif isinstance(actor, (Actor, Mapping, str)):
            fixed = _to_actor(actor)
            if fixed is None:
                raise ValueError("actor= is an empty id; pass your auth dependency or a fixed actor.")

            def fixed_actor() -> Actor:
                return fixed

            self._actor_dependency = fixed_actor
            self.fixed_actor = fixed
        elif callable(actor):
            self._actor_dependency = actor
        else:
            raise TypeError(
                "actor= must be a FastAPI dependency (your auth) or a fixed actor (Actor, mapping, id string)."
            )
        if context is not None and not callable(context):
            raise TypeError("context= must be a FastAPI dependency returning a Context, a mapping or None.")
        if not re.match(r"^[A-Za-z0-9\-]+$", confirmation_header):
            raise ValueError(f"confirmation_header must be a header name, got {confirmation_header!r}.")
        self._context_dependency = context
        self.parameters = parameters
        self._injected = client
        self._client: AsyncAegisClient | None = client
        self._client_options: dict[str, Any] = {
            "endpoint": endpoint,
            "api_key": api_key,
            "timeout": timeout,
            "retries": retries,
        }
        self._lifespans = 0
        self.fail_open = fail_open
        self.report_execution = report_execution
        self.confirmation_header = confirmation_header
        self.retry_after = retry_after
        self.error_response: ErrorResponse = error_response or default_error_response
        self.document_responses = document_responses
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the client -------------------------------------------------------------------------------

    @property
    def client(self) -> AsyncAegisClient:
        """The client in use: the injected one, or the one the lifespan created."""
        if self._client is None:
            raise RuntimeError(
                "The AEGIS client is not started. Run the app's lifespan (FastAPI(lifespan=aegis.lifespan) or "
                "aegis.install(app); note that httpx.ASGITransport does not run lifespans), or pass "
                "Aegis(client=...), or override the dependency: app.dependency_overrides[aegis.get_client]."
            )
        return self._client

    def get_client(self) -> AsyncAegisClient:
        """FastAPI dependency giving the client; override it in tests with `app.dependency_overrides`."""
        return self.client

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """`FastAPI(lifespan=aegis.lifespan)`: create the client at startup, drain pending execution
        reports and close it at shutdown. Also documents governed routes' responses in `app`'s OpenAPI."""
        if isinstance(app, FastAPI):
            self.document(app)
        if self._client is None:
            self._client = AsyncAegisClient(**self._client_options)
        self._lifespans += 1
        try:
            yield
        finally:
            self._lifespans -= 1
            if self._lifespans == 0:
                await self.drain()
                client = self._client
                if client is not None and client is not self._injected:
                    self._client = self._injected
                    await client.aclose()

    def install(self, app: FastAPI) -> FastAPI:
        """One line for an existing app: wrap its lifespan with `aegis.lifespan`, document governed routes'
        responses in its OpenAPI, and register `error_response` (if given) for `AegisRefusal`."""
        inner: Lifespan[Any] = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app_: Any) -> AsyncIterator[Any]:
            async with self.lifespan(app_), inner(app_) as state:
                yield state

        app.router.lifespan_context = lifespan
        self.document(app)
        if self.error_response is not default_error_response:
            render = self.error_response

            async def handler(request: Request, exc: Exception) -> Response:
                assert isinstance(exc, AegisRefusal)
                return render(exc)

            app.add_exception_handler(AegisRefusal, handler)
        return app

    def document(self, app: FastAPI) -> None:
        """Make `app.openapi()` list the 403/409/428/503 answers of every route governed by this `Aegis`
        (responses you declared yourself are kept). Idempotent; `lifespan` and `install` call it."""
        if not self.document_responses or getattr(app.openapi, _GOVERNED, None) is self:
            return
        original = app.openapi
        responses = openapi_responses(self.confirmation_header)

        def openapi() -> dict[str, Any]:
            changed = False
            for route in app.routes:
                dependant = getattr(route, "dependant", None)
                route_responses = getattr(route, "responses", None)
                if dependant is None or route_responses is None or not _is_governed(dependant, self):
                    continue
                for status, response in responses.items():
                    if status not in route_responses and str(status) not in route_responses:
                        route_responses[status] = response
                        changed = True
            if changed:
                app.openapi_schema = None
            return original()

        setattr(openapi, _GOVERNED, self)
        app.openapi = openapi  # type: ignore[method-assign]

    # -- governing a route ------------------------------------------------------------------------

    def require(
        self,
        capability: CapabilitySource,
        *,
        parameters: ParametersSource | None = None,
        report_execution: bool | None = None,
    ) -> Callable[..., AsyncIterator[Decision]]:
        """A FastAPI dependency that proposes this route's action and hands the ALLOW `Decision` to the
        endpoint; any other outcome raises `AegisRefusal`. `capability` is a name or a callable
        `(RouteInputs) -> name`; `parameters` overrides the app-wide builder for this route."""
        if not isinstance(capability, str) and not callable(capability):
            raise TypeError("capability must be a capability name or a callable (RouteInputs) -> name.")
        if isinstance(capability, str) and not capability:
            raise ValueError("capability must not be empty.")
        if self._actor_dependency is None:
            raise ValueError(
                "require() needs to know who acts: create Aegis(actor=...) with your auth dependency (or a "
                "fixed actor for a service without users)."
            )
        aegis = self
        build = parameters or self.parameters
        report = self.report_execution if report_execution is None else report_execution
        context_dependency = self._context_dependency or _no_context
        skip = (self._actor_dependency, context_dependency)
        header_doc = (
            "The decision id of a REQUIRE_CONFIRMATION (after the user consented) or of an approved ESCALATE: "
            "repeat the same request with it to proceed."
        )

        async def governed(
            request: Request,
            response: Response,
            actor: Any = Depends(self._actor_dependency),  # noqa: B008 - FastAPI dependency declarations
            context: Any = Depends(context_dependency),  # noqa: B008 - FastAPI dependency declarations
            client: AsyncAegisClient = Depends(self.get_client),  # noqa: B008 - FastAPI dependency declarations
            confirmation: str | None = Header(default=None, alias=self.confirmation_header, description=header_doc),
        ) -> AsyncIterator[Decision]:
            request_id = request_id_of(request.headers)
            inputs = await endpoint_inputs(request, skip)
            decision = await aegis.decide(
                client,
                inputs=inputs,
                capability=capability,
                parameters=build,
                actor=actor,
                context=context,
                confirmation=confirmation,
                request_id=request_id,
            )
            response.headers[DECISION_HEADER] = decision.decision_id
            started = time.perf_counter()
            try:
                yield decision
            except BaseException as exc:
                if report:
                    aegis.schedule_report(client, decision, started, exc)
                raise
            else:
                if report:
                    aegis.schedule_report(client, decision, started, None)

        setattr(governed, _GOVERNED, self)
        governed.__name__ = f"aegis_require_{capability if isinstance(capability, str) else 'dynamic'}"
        return governed

    async def decide(
        self,
        client: AsyncAegisClient,
        *,
        inputs: RouteInputs,
        capability: CapabilitySource,
        parameters: ParametersSource | None,
        actor: object,
        context: object,
        confirmation: str | None,
        request_id: str,
    ) -> Decision:
        """The whole flow for one request; returns an ALLOW decision or raises `AegisRefusal`."""
        who = _to_actor(actor)
        if who is None:
            raise self._refusal(
                401,
                "actor_required",
                "This route is governed and needs an authenticated caller; the app's actor dependency found "
                "none. Authenticate and try again.",
                request_id,
            )
        name = capability if isinstance(capability, str) else await _maybe_await(capability(inputs))
        try:
            values = dict(await _maybe_await(parameters(inputs))) if parameters else inputs.default_parameters()
        except ParameterConflict as exc:
            raise self._refusal(422, "invalid_parameters", str(exc), request_id) from None
        ctx = _to_context(context)
        metadata = {"route": inputs.route, "method": inputs.request.method, "request_id": request_id}
        metadata.update(ctx.metadata)
        ctx = Context(session_id=ctx.session_id, metadata=metadata)
        action = Action(capability=name, parameters=values)
        if confirmation is None:
            try:
                decision = await client.propose(who, action, ctx)
            except AegisError as exc:
                return self._on_error(exc, name, request_id)
            return self._verdict(decision, request_id)
        return await self._confirm(client, who, action, ctx, confirmation.strip(), request_id)

    async def _confirm(
        self, client: AsyncAegisClient, actor: Actor, action: Action, context: Context, named: str, request_id: str
    ) -> Decision:
        header = self.confirmation_header
        if not _DECISION_ID.match(named):
            raise self._refusal(
                409,
                "confirmation_invalid",
                f"{header} must be the decision_id of the answer that asked for confirmation (dec_...).",
                request_id,
            )
        try:
            original = await client.decisions.get(named)
        except NotFoundError:
            raise self._refusal(
                409,
                "confirmation_invalid",
                f"No decision {named} exists. Repeat the request without {header} to propose it again.",
                request_id,
            ) from None
        except AegisError as exc:
            return self._on_error(exc, action.capability, request_id)
        status = original.review.status if original.review is not None else None
        awaiting = original.outcome == "REQUIRE_CONFIRMATION" or (
            original.outcome == "ESCALATE" and status == "approved"
        )
        if awaiting:
            if not original.confirmation_token:
                raise self._refusal(
                    409,
                    "confirmation_invalid",
                    f"Decision {named} carries no confirmation token. Repeat the request without {header}.",
                    request_id,
                    original,
                )
            try:
                decision = await client.propose(actor, action, context, confirmation_token=original.confirmation_token)
            except ConfirmationError as exc:
                raise self._confirmation_rejected(exc, original, request_id) from None
            except AegisError as exc:
                return self._on_error(exc, action.capability, request_id)
            return self._verdict(decision, request_id)
        if original.outcome == "ESCALATE" and status == "pending":
            raise self._refusal(
                403,
                "review_pending",
                f"Decision {named} is still waiting for a reviewer. Repeat the request with {header} once it "
                "is approved.",
                request_id,
                original,
                show_reason=False,
            )
        if status in ("denied", "expired"):
            raise self._refusal(
                403,
                "review_denied" if status == "denied" else "review_expired",
                f"The review of decision {named} was {status}; the action will not run. Propose again by "
                f"repeating the request without {header}.",
                request_id,
                original,
                show_reason=False,
            )
        if original.outcome == "DENY":
            raise self._refusal(
                403,
                "governance_denied",
                f"Decision {named} denied this action.",
                request_id,
                original,
                show_reason=False,
            )
        raise self._refusal(
            409,
            "confirmation_invalid",
            f"Decision {named} is not awaiting confirmation (outcome {original.outcome}). Repeat the request "
            f"without {header} to propose it again.",
            request_id,
            original,
            show_reason=False,
        )

    # -- outcomes and errors ----------------------------------------------------------------------

    def _verdict(self, decision: Decision, request_id: str) -> Decision:
        if decision.outcome == "ALLOW":
            return decision
        header = self.confirmation_header
        if decision.outcome == "REQUIRE_CONFIRMATION":
            raise self._refusal(
                428,
                "confirmation_required",
                f"This action needs the user's confirmation: {decision.reason}. Once the user consented, repeat "
                f"the same request with the header {header}: {decision.decision_id}"
                + (f" before {decision.expires_at}." if decision.expires_at else "."),
                request_id,
                decision,
                confirm=True,
            )
        if decision.outcome == "ESCALATE":
            raise self._refusal(
                403,
                "review_pending",
                f"This action needs a reviewer's approval: {decision.reason}. Once approved, repeat the same "
                f"request with the header {header}: {decision.decision_id}"
                + (f" before {decision.expires_at}." if decision.expires_at else "."),
                request_id,
                decision,
                confirm=True,
            )
        raise self._refusal(
            403, "governance_denied", f"AEGIS denied this action: {decision.reason}", request_id, decision
        )

    def _refusal(
        self,
        status_code: int,
        code: Any,
        message: str,
        request_id: str,
        decision: Decision | None = None,
        *,
        confirm: bool = False,
        show_reason: bool = True,
        retry_after: int | None = None,
    ) -> AegisRefusal:
        detail = AegisErrorDetail(
            code=code,
            message=message,
            decision_id=decision.decision_id if decision else None,
            outcome=decision.outcome if decision else None,
            reason=decision.reason if decision and show_reason else None,
            review_status=decision.review.status if decision and decision.review else None,
            expires_at=decision.expires_at if decision else None,
            confirmation_header=self.confirmation_header if confirm else None,
            request_id=request_id,
        )
        return AegisRefusal(status_code, detail, decision=decision, retry_after=retry_after)

    def _confirmation_rejected(self, exc: ConfirmationError, original: Decision, request_id: str) -> AegisRefusal:
        header = self.confirmation_header
        again = f"Repeat the request without {header} to propose it again."
        if isinstance(exc, ConfirmationMismatchError):
            what = ", ".join(exc.details.get("mismatched", [])) or "actor or parameters"
            return self._refusal(
                409,
                "confirmation_mismatch",
                f"Decision {original.decision_id} was made for a different {what}; it cannot confirm this "
                f"request. Send exactly the request that was confirmed, or {again[0].lower()}{again[1:]}",
                request_id,
                original,
                show_reason=False,
            )
        if isinstance(exc, ConfirmationUsedError):
            code, why = "confirmation_used", "was already used; a confirmation lets one request through"
        elif isinstance(exc, ConfirmationExpiredError):
            code, why = "confirmation_expired", "has expired"
        else:
            code, why = "confirmation_invalid", "was not accepted by the platform"
        return self._refusal(
            409,
            code,
            f"The confirmation of decision {original.decision_id} {why}. {again}",
            request_id,
            original,
            show_reason=False,
        )

    def _on_error(self, exc: AegisError, capability: str, request_id: str) -> Decision:
        """Map an SDK error to a refusal, or to a degraded ALLOW when fail-open applies."""
        if isinstance(exc, ParameterValidationError):
            raise self._refusal(
                422,
                "invalid_parameters",
                f"The request's parameters do not fit capability {capability!r}: {exc.message}",
                request_id,
            ) from None
        if isinstance(exc, InvalidRequestError):
            raise self._refusal(
                422, "invalid_parameters", f"The proposal built from this request is invalid: {exc.message}", request_id
            ) from None
        unavailable = isinstance(exc, (APIConnectionError, RateLimitError, ServerError, MalformedResponseError)) or (
            isinstance(exc, APIStatusError)
            and not isinstance(exc, (AuthenticationError, PermissionDeniedError, NotFoundError))
        )
        retry_after = self.retry_after
        hinted = getattr(exc, "retry_after", None)
        if isinstance(hinted, (int, float)) and hinted > 0:
            retry_after = max(1, int(hinted))
        if unavailable:
            if self.fail_open:
                return self._degraded(exc, capability, request_id)
            logger.error(
                "AEGIS unavailable, request refused (fail closed): capability=%s request_id=%s error=%s code=%s",
                capability,
                request_id,
                type(exc).__name__,
                exc.code,
            )
            raise self._refusal(
                503,
                "governance_unavailable",
                "The governance platform could not be reached, so nothing was run. Try again later.",
                request_id,
                retry_after=retry_after,
            ) from None
        logger.error(
            "AEGIS refused the adapter's request; check the endpoint, the API key and its scopes "
            "(governance:propose and governance:read) and that capability %r is registered: request_id=%s "
            "error=%s code=%s platform_request_id=%s",
            capability,
            request_id,
            type(exc).__name__,
            exc.code,
            exc.request_id,
        )
        raise self._refusal(
            503,
            "governance_misconfigured",
            "Governance is not set up correctly for this route, so nothing was run. The operator was told.",
            request_id,
            retry_after=retry_after,
        ) from None

    def _degraded(self, exc: AegisError, capability: str, request_id: str) -> Decision:
        decision = Decision(
            decision_id=DEGRADED_PREFIX + uuid.uuid4().hex,
            outcome="ALLOW",
            reason=f"The AEGIS platform was unreachable ({type(exc).__name__}); allowed without governance "
            "because fail_open is on.",
            risk_score=1.0,
            constraints={},
            timestamp=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            audit_ref="",
        )
        logger.warning(
            "AEGIS unavailable, request allowed WITHOUT governance (fail_open=True): capability=%s "
            "request_id=%s decision_id=%s error=%s code=%s",
            capability,
            request_id,
            decision.decision_id,
            type(exc).__name__,
            exc.code,
        )
        return decision

    # -- execution reports ------------------------------------------------------------------------

    def schedule_report(
        self,
        client: AsyncAegisClient,
        decision: Decision,
        started: float,
        error: BaseException | None = None,
        *,
        status_code: int | None = None,
    ) -> None:
        """Report how the governed request went as the decision's execution result, in a background task:
        SUCCESS, or FAILED with the exception's type (`error`) or the answer's status (`status_code`).
        Errors while reporting are logged, never raised. Degraded decisions are not reported."""
        if decision.degraded:
            logger.info(
                "no execution report for degraded decision %s (the platform never saw it)", decision.decision_id
            )
            return
        failure: dict[str, str] | None = None
        if error is not None:
            http_status = error.status_code if isinstance(error, HTTPException) else None
            failure = {"code": type(error).__qualname__[:200], "message": f"HTTP {http_status}" if http_status else ""}
        elif status_code is not None:
            failure = {"code": f"http_{status_code}", "message": f"HTTP {status_code}"}
        duration_ms = max(0.0, (time.perf_counter() - started) * 1000.0)
        task = asyncio.get_running_loop().create_task(self._report(client, decision.decision_id, duration_ms, failure))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(
        self, client: AsyncAegisClient, decision_id: str, duration_ms: float, failure: dict[str, str] | None
    ) -> None:
        try:
            if failure is None:
                await client.decisions.report_execution(decision_id, status="SUCCESS", duration_ms=duration_ms)
            else:
                await client.decisions.report_execution(
                    decision_id, status="FAILED", error=failure, duration_ms=duration_ms
                )
        except Exception as exc:
            logger.warning(
                "could not report the execution of decision %s: %s (code=%s)",
                decision_id,
                type(exc).__name__,
                getattr(exc, "code", None),
            )

    async def drain(self, timeout: float | None = 10.0) -> None:
        """Wait (up to `timeout` seconds) for execution reports still being sent. The lifespan calls it at
        shutdown; tests call it before reading the audit trail."""
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


async def _no_context() -> None:
    return None


def _is_governed(dependant: Any, aegis: Aegis) -> bool:
    if getattr(getattr(dependant, "call", None), _GOVERNED, None) is aegis:
        return True
    return any(_is_governed(sub, aegis) for sub in getattr(dependant, "dependencies", ()))
