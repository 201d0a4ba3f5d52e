"""`AegisMiddleware`: govern many routes from one mapping, without touching the endpoints (pure ASGI)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis_fastapi._aegis import Aegis
from aegis_fastapi._errors import DECISION_HEADER, AegisRefusal
from aegis_fastapi._flow import ActorLike, CapabilitySource, ParametersSource, maybe_await, request_id_of
from aegis_fastapi._inputs import RouteInputs, flat_query, to_jsonable
from aegis_fastapi._refusals import refusal as build_refusal
from aegis_fastapi._routes import ServedRoute, mapping_problem, resolve, routes_of
from aegis_fastapi._status import STATUS_ROUTE_NAME
from aegis_sdk import Decision

ActorResolver = Callable[[Request], ActorLike | Awaitable[ActorLike | None] | None]
ContextResolver = Callable[[Request], Any]

STATE_KEY = "aegis_decision"
logger = logging.getLogger("aegis_fastapi")


def decision_of(request: Request) -> Decision | None:
    """The ALLOW decision `AegisMiddleware` made for this request (None on an ungoverned route)."""
    decision = request.scope.get("state", {}).get(STATE_KEY)
    return decision if isinstance(decision, Decision) else None


def user_actor(request: Request) -> ActorLike | None:
    """Default actor of the middleware: `request.user` set by Starlette's `AuthenticationMiddleware`
    (added *after* AegisMiddleware, so it runs first); its `identity` is the actor id, type `human`."""
    user = request.scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        identity = str(getattr(user, "identity", "") or "")
    except NotImplementedError:  # Starlette before 0.39: BaseUser.identity (e.g. SimpleUser's) is abstract
        identity = ""
    identity = identity or str(getattr(user, "display_name", "") or "")
    return {"id": identity, "type": "human"} if identity else None


class AegisMiddleware:
    """Pure-ASGI middleware governing the routes named in `routes`:

    ```python
    app.add_middleware(AegisMiddleware, aegis=aegis, routes={
        "POST /orders/{order_id}/refunds": "payments.refund",   # method + path template
        "/queries": "database.query",                           # path template, any method
        "delete_user": "users.delete",                          # route name
        "/health": None,                                        # explicitly ungoverned
    })
    ```

    A key is `"METHOD /template"`, `"/template"` or a route name; a value is a capability name, a callable
    `(RouteInputs) -> name`, or None (not governed). The template is the full one from the app's root,
    `include_router` and mount prefixes included (`/v1/orders/{order_id}` for `/orders/{order_id}` on
    `APIRouter(prefix="/v1")`); the route a request reaches is found as the router finds it (`_routes`).
    A governed key naming no route stops the app at startup (or answers 503 `governance_misconfigured`
    when no lifespan ran). Routes not in the mapping pass untouched, unless `deny_unmapped=True` (then
    they answer 403 `route_not_governed`; the status route of `aegis.status_router()` always passes). A
    route-name key exempting routes (None) must name one route: FastAPI names a route after its function,
    so a name can be shared, and an ambiguous exemption stops the app at startup. The endpoint finds the
    ALLOW decision with
    `aegis_fastapi.decision_of(request)`.

    Parameters default to the path parameters, the query parameters (a repeated name becomes a list) and
    the JSON body (an object is merged; any other JSON value goes under `body`); other bodies are not
    read (pass `parameters=` to govern form posts). `actor` is a callable `(Request) -> actor or None`
    (default: the authenticated `request.user`), or `aegis`'s fixed actor; `context` a callable
    `(Request) -> Context | mapping | None`. Outcomes, confirmation, fail-open, execution reports (SUCCESS
    for a status below 400, else FAILED `HTTP <status>`, or the exception type) follow `aegis`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        aegis: Aegis,
        routes: Mapping[str, CapabilitySource | None],
        actor: ActorResolver | None = None,
        context: ContextResolver | None = None,
        parameters: ParametersSource | None = None,
        deny_unmapped: bool = False,
        max_body_bytes: int = 1_048_576,
    ) -> None:
        self.app = app
        self.aegis = aegis
        for key, value in routes.items():
            if not key or (value is not None and not isinstance(value, str) and not callable(value)):
                raise TypeError(
                    f"routes[{key!r}] must be a capability name, a callable (RouteInputs) -> name, or None."
                )
        self.routes = dict(routes)
        if actor is None and aegis.fixed_actor is not None:
            fixed = aegis.fixed_actor

            def fixed_actor(request: Request) -> ActorLike:
                return fixed

            actor = fixed_actor
        self.actor: ActorResolver = actor or user_actor
        self.context = context
        self.parameters = parameters or aegis.parameters
        self.deny_unmapped = deny_unmapped
        self.max_body_bytes = max_body_bytes
        self._checked = False
        self._unresolved: str | None = None

    def _routes(self, scope: Scope) -> Sequence[Any] | None:
        """The routes of the app this middleware governs: the app in the scope (Starlette and FastAPI put
        themselves there), else the app it wraps."""
        return routes_of(scope.get("app")) or routes_of(self.app)

    def _problem(self, scope: Scope) -> str | None:
        """Why this mapping cannot govern the app, checked once (at startup, or at the first request when
        nothing ran the lifespan): a governed key naming no route would leave the route it meant ungoverned."""
        if not self._checked:
            routes = self._routes(scope)
            if routes is None:
                governs = any(value is not None for value in self.routes.values())
                self._unresolved = (
                    "AegisMiddleware found no routes to govern: add it to a FastAPI app." if governs else None
                )
            else:
                try:
                    self._unresolved = mapping_problem(routes, self.routes)
                except RuntimeError as error:  # a FastAPI whose included routers cannot be walked
                    self._unresolved = str(error)
            if self._unresolved is not None:
                logger.error("%s", self._unresolved)
            self._checked = True
        return self._unresolved

    def _lookup(self, scope: Scope) -> tuple[bool, CapabilitySource | None, ServedRoute | None, dict[str, Any]]:
        """(mapped?, capability, route, path params) for the route that will serve this request."""
        routes = self._routes(scope)
        found = resolve(routes, scope) if routes is not None else None
        if found is None:
            return False, None, None, {}
        route, path_params = found
        for key in route.keys(scope["method"]):
            if key in self.routes:
                return True, self.routes[key], route, path_params
        if route.name == STATUS_ROUTE_NAME:
            # The status route of `aegis.status_router()` governs nothing itself (it only reads a caller's own
            # decisions): the link of a review_pending answer must work under `deny_unmapped` too.
            return True, None, route, {}
        return False, None, route, {}

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the mapping at startup: an app whose mapping names unknown routes does not start."""
        message = await receive()
        if message["type"] == "lifespan.startup":
            problem = self._problem(scope)
            if problem is not None:
                await send({"type": "lifespan.startup.failed", "message": problem})
                raise RuntimeError(problem)
        first: list[Message] = [message]

        async def replay_first() -> Message:
            return first.pop() if first else await receive()

        await self.app(scope, replay_first, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(Headers(scope=scope))
        problem = self._problem(scope)
        if problem is not None:
            refusal = build_refusal(
                503,
                "governance_misconfigured",
                "The app's governance mapping cannot govern its routes; the app's log says what to fix.",
                request_id,
            )
            await self.aegis.error_response(refusal)(scope, receive, send)
            return
        mapped, capability, route, path_params = self._lookup(scope)
        if not mapped or capability is None:
            if route is not None and not mapped and self.deny_unmapped:
                refusal = build_refusal(
                    403,
                    "route_not_governed",
                    "This route has no governance mapping and the app denies unmapped routes.",
                    request_id,
                )
                await self.aegis.error_response(refusal)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_body_bytes:
                refusal = build_refusal(
                    413,
                    "body_too_large",
                    f"The body exceeds {self.max_body_bytes} bytes, the most a governed route reads.",
                    request_id,
                )
                await self.aegis.error_response(refusal)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        request = Request(scope, replay)
        inputs = RouteInputs(
            request=request,
            route=route.template if route is not None else request.url.path,
            path_params=to_jsonable(path_params),
            query_params=flat_query(request.query_params),
            body=_json_body(request.headers.get("content-type"), body),
        )
        client = self.aegis.client
        try:
            decision = await self.aegis.decide(
                client,
                inputs=inputs,
                capability=capability,
                parameters=self.parameters,
                actor=await maybe_await(self.actor(request)),
                context=await maybe_await(self.context(request)) if self.context else None,
                confirmation=request.headers.get(self.aegis.confirmation_header),
                request_id=request_id,
            )
        except AegisRefusal as refusal:
            await self.aegis.error_response(refusal)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = decision
        status: list[int] = []

        async def send_with_decision(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                headers = list(message.get("headers", []))
                headers.append((DECISION_HEADER.lower().encode("latin-1"), decision.decision_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        started = time.perf_counter()
        replayed = False
        try:
            await self.app(scope, replay, send_with_decision)
        except BaseException as exc:
            if self.aegis.report_execution:
                await self.aegis.schedule_report(client, decision, started, exc)
            raise
        if self.aegis.report_execution:
            code = status[0] if status else 500
            await self.aegis.schedule_report(client, decision, started, status_code=code if code >= 400 else None)


def _json_body(content_type: str | None, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    return {"body": value}


__all__ = ["STATE_KEY", "ActorResolver", "AegisMiddleware", "ContextResolver", "decision_of", "user_actor"]
