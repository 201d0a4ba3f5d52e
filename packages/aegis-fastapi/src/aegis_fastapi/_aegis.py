"""`Aegis`: configured once per app; `Depends(aegis.require("capability"))` governs a route. The class holds
the configuration and assembles the rooms: the client's lifecycle (`_lifespan`), OpenAPI (`_openapi`),
the dependency (`_dependency`), the status route (`_status`); `decide` comes from the flow
(`_flow.DecisionFlow`), `schedule_report` and `drain` from the reports (`_reports.ExecutionReports`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from aegis_fastapi._dependency import governed_dependency
from aegis_fastapi._errors import ErrorResponse, default_error_response
from aegis_fastapi._flow import ActorLike, CapabilitySource, DecisionFlow, ParametersSource, to_actor
from aegis_fastapi._lifespan import ClientLifecycle, handle_refusals, wrap_lifespan
from aegis_fastapi._openapi import document
from aegis_fastapi._reports import ExecutionReports
from aegis_fastapi._status import STATUS_ROUTE_NAME, status_router
from aegis_sdk import Actor, AsyncAegisClient, Decision

DEFAULT_CONFIRMATION_HEADER = "AEGIS-Confirmation"


class Aegis(DecisionFlow, ExecutionReports):
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
      exception type) as the decision's execution result: queued on the client's background reporter (no round
      trip on the request's path), flushed by `drain()` and at the lifespan's shutdown. Default True.
    - `confirmation_header`: the request header naming a decision to confirm (`AEGIS-Confirmation`).
    - `retry_after`: seconds in the `Retry-After` header of a 503 (unless the platform said otherwise).
    - `review_retry_after`: seconds in the `Retry-After` header of a `review_pending` answer (and of the
      status route while the review is pending): when to poll or repeat the request again. Default 10.
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
        review_retry_after: int = 10,
        error_response: ErrorResponse | None = None,
        document_responses: bool = True,
    ) -> None:
        super().__init__()
        self._actor_dependency: Callable[..., Any] | None = None
        self.fixed_actor: Actor | None = None
        if actor is None:
            pass  # only AegisMiddleware (which has its own actor=) can be used
        elif isinstance(actor, (Actor, Mapping, str)):
            fixed = to_actor(actor)
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
        for name, seconds in (("retry_after", retry_after), ("review_retry_after", review_retry_after)):
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
                raise ValueError(f"{name} must be a whole number of seconds, at least 1; got {seconds!r}.")
        if not re.match(r"^[A-Za-z0-9\-]+$", confirmation_header):
            raise ValueError(f"confirmation_header must be a header name, got {confirmation_header!r}.")
        self._context_dependency = context
        self.parameters = parameters
        self._clients = ClientLifecycle(
            client, {"endpoint": endpoint, "api_key": api_key, "timeout": timeout, "retries": retries}
        )
        self.fail_open = fail_open
        self.report_execution = report_execution
        self.confirmation_header = confirmation_header
        self.retry_after = retry_after
        self.review_retry_after = review_retry_after
        self.status_route: str | None = None
        self.error_response: ErrorResponse = error_response or default_error_response
        self.document_responses = document_responses

    # -- the client -------------------------------------------------------------------------------

    @property
    def client(self) -> AsyncAegisClient:
        """The client in use: the injected one, or the one the lifespan created."""
        return self._clients.client

    def get_client(self) -> AsyncAegisClient:
        """FastAPI dependency giving the client; override it in tests with `app.dependency_overrides`."""
        return self.client

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """`FastAPI(lifespan=aegis.lifespan)`: create the client at startup; at shutdown, flush the queued
        execution reports (`drain()`) and close it. Also documents governed routes' responses in `app`'s OpenAPI."""
        if isinstance(app, FastAPI):
            self.document(app)
        async with self._clients.running(self.drain):
            yield

    def install(self, app: FastAPI) -> FastAPI:
        """One line for an existing app: wrap its lifespan with `aegis.lifespan`, document governed routes'
        responses in its OpenAPI, and register `error_response` (if given) for `AegisRefusal`."""
        wrap_lifespan(app, self.lifespan)
        self.document(app)
        if self.error_response is not default_error_response:
            handle_refusals(app, self.error_response)
        return app

    def document(self, app: FastAPI) -> None:
        """Make `app.openapi()` list the 403/409/428/503 answers of every route governed by this `Aegis`
        (responses you declared yourself are kept). Idempotent; `lifespan` and `install` call it."""
        if self.document_responses:
            document(app, self, self.confirmation_header)

    # -- the status route -------------------------------------------------------------------------

    def status_router(
        self,
        prefix: str = "/aegis",
        *,
        actor: Callable[..., Any] | None = None,
        max_waiting: int = 20,
        tags: Sequence[str] = ("aegis",),
    ) -> APIRouter:
        """The status route for clients waiting on a review: `app.include_router(aegis.status_router())`
        mounts `GET {prefix}/decisions/{decision_id}` (`?wait=N` long-polls, 0..60 s), and from then on the
        app's `review_pending` answers link to it (`Link: <url>; rel="status"`, `detail.status_url`).

        The caller is resolved by `actor` (default: this `Aegis`'s actor dependency; an app governed by
        `AegisMiddleware` alone passes its resolver, e.g. `aegis_fastapi.user_actor`), and only the actor a
        decision was made for gets its status: anyone else gets the 404 of an unknown id. The app's client
        reads decisions, so its API key needs `governance:read`.

        Long polls go through the app's client, whose connection pool the governed routes need too: at most
        `max_waiting` are held at once, and a poll past that is answered at once (with `Retry-After`)."""
        if not isinstance(prefix, str) or (prefix and (not prefix.startswith("/") or prefix.endswith("/"))):
            raise ValueError(f"prefix must be empty or a path like '/aegis' (no trailing slash), got {prefix!r}.")
        if actor is not None and not callable(actor):
            raise TypeError("actor= must be a FastAPI dependency (your auth) or a callable (Request) -> actor.")
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be a whole number of long polls, 0 or more; got {max_waiting!r}.")
        if actor is None and self.fixed_actor is not None:
            raise ValueError(
                "status_router() answers a decision's status to its own actor only, and this Aegis has a fixed "
                "actor: every caller would be that actor and could read every status. Pass status_router(actor=...) "
                "with the dependency that authenticates the clients who wait on reviews."
            )
        resolver = actor or self._actor_dependency
        if resolver is None:
            raise ValueError(
                "status_router() needs to know who asks, to answer only a decision's own actor: create "
                "Aegis(actor=...) with your auth dependency, or pass status_router(actor=...) (for an app governed "
                "by AegisMiddleware, the resolver you gave it, e.g. aegis_fastapi.user_actor)."
            )
        router = status_router(self, prefix=prefix, actor_dependency=resolver, tags=tags, max_waiting=max_waiting)
        self.status_route = STATUS_ROUTE_NAME
        return router

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
        return governed_dependency(
            self,
            capability,
            actor_dependency=self._actor_dependency,
            context_dependency=self._context_dependency,
            parameters=parameters or self.parameters,
            report=self.report_execution if report_execution is None else report_execution,
        )


__all__ = ["DEFAULT_CONFIRMATION_HEADER", "Aegis"]
