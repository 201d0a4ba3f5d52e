"""`create_app(settings)`: the FastAPI application of the AEGIS platform.

The lifespan opens the store (migrating it unless told not to), checks the audit chain against its latest
signed checkpoint (refusing to start on a cut or rewritten chain), loads the policy set (files + API-stored
policies, compiled into one), and runs the background tasks that expire overdue reviews every second and
write signed checkpoints of the audit chain's head (`aegis_server.audit`), one more at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from aegis_server import __version__
from aegis_server.api import api_router
from aegis_server.api.governance import hot_routes
from aegis_server.api.hot_path import HotPathDispatch, HotRoute
from aegis_server.api.policy_replay import router as policy_replay_router
from aegis_server.api.policy_versions import router as policy_versions_router
from aegis_server.audit.anchor import AnchorError, AuditAnchor
from aegis_server.audit.checkpoints import CheckpointError
from aegis_server.audit.signing_keys import audit_key_source
from aegis_server.audit_export import AuditExporter, exporters_from_settings
from aegis_server.console import install_console
from aegis_server.edge.limits import BodyGuardMiddleware
from aegis_server.edge.rate_limits import RateLimiter
from aegis_server.edge.request_context import RequestContextMiddleware
from aegis_server.edge.request_id import install_request_id_filter
from aegis_server.engine import PolicySetError
from aegis_server.errors import ApiError, error_response, install_exception_handlers
from aegis_server.governance.runtime import utcnow
from aegis_server.governance.service import GovernanceService
from aegis_server.metrics import Metrics
from aegis_server.notifications import WebhookDispatcher
from aegis_server.observability.server_spans import ServerSpans, fastapi_telemetry_off
from aegis_server.security import KeyAuthenticator
from aegis_server.settings import Settings
from aegis_server.store import AuditChainCut, AuditKeyError, SchemaNotReady, Store
from aegis_server.store.probe import describe_database_error

logger = logging.getLogger("aegis_server")

_DESCRIPTION = """Governance for AI-agent actions: propose an action, get ALLOW / DENY / ESCALATE /
REQUIRE_CONFIRMATION, with a reason, a risk score, constraints and a hash-chained audit record.

Authenticate with `Authorization: Bearer aegis_sk_…`. Every error answer is the envelope
`{"error": {type, code, message, request_id, details}}`; see docs/api.md for every status and code."""


class StartupError(RuntimeError):
    """The server cannot start (bad policy files, unreachable or outdated database). The message says why."""


async def _expiry_loop(service: GovernanceService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await service.expire_due()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("expiring overdue reviews failed; retrying in %.1f s", interval)


_OUTBOX_PRUNE_INTERVAL_SECONDS = 3600.0


async def _outbox_retention_loop(store: Store, retention_days: float, clock: Callable[[], datetime]) -> None:
    """Delete finished webhook deliveries and events past their retention, once at start and then hourly
    (on every server, whether or not it delivers webhooks, so the outbox cannot grow without end)."""
    while True:
        try:
            before = clock() - timedelta(days=retention_days)
            batch = 5000  # events per transaction: requests go on between them
            while await store.webhooks.prune(before, limit=batch) == batch:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("pruning the webhook outbox failed; retrying in an hour")
        await asyncio.sleep(_OUTBOX_PRUNE_INTERVAL_SECONDS)


async def _warn_unbound_keys(store: Store) -> None:
    """Log how many keys may propose but are bound to no actor (made in 0.1): their proposals are refused."""
    unbound = await store.count_unbound_api_keys()
    if unbound:
        logger.warning(
            "%d API key(s) with governance:propose or admin are bound to no actor (made before 0.2): their "
            "proposals are refused with actor_not_allowed. Bind each with `aegis-server keys update KEY_ID "
            "--actors 'ai-agent:support-bot-*'` (or '*' for any actor); `aegis-server keys list` shows them as "
            "unbound.",
            unbound,
        )


class AegisAPI(FastAPI):
    """The FastAPI application with the AEGIS request stack around it, outermost first:

    server spans (when tracing is on) -> request context (request id, access log, metrics, last-resort 500
    envelope) -> body guard (size,
    content type, strict JSON) -> hot path (`hot_routes`, served without FastAPI's middlewares and
    router) -> FastAPI's own stack for every other route.
    """

    def __init__(self, *, settings: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.settings = settings
        self.state.metrics = metrics
        self.hot_routes: dict[tuple[str, str], HotRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A hot route skips FastAPI's own entry too: it checks its OpenTelemetry settings (os.environ)
        # on every request, which the hot path does not use.
        if scope["type"] == "http" and (scope.get("method"), scope.get("path")) in self.hot_routes:
            if self.middleware_stack is None:
                self.middleware_stack = self.build_middleware_stack()
            scope["app"] = self
            await self.middleware_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        settings: Settings = self.state.settings
        dispatch = HotPathDispatch(super().build_middleware_stack(), self.hot_routes, self.exception_handlers)
        guarded = BodyGuardMiddleware(
            dispatch, max_body_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
        )
        return ServerSpans(RequestContextMiddleware(guarded, metrics=self.state.metrics))


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    monotonic: Callable[[], float] | None = None,
    run_background_tasks: bool = True,
    freeze_gc_after_startup: bool = False,
) -> AegisAPI:
    """The AEGIS API as an ASGI app. `clock`/`monotonic` replace the wall and monotonic clocks (tests);
    `run_background_tasks=False` leaves review expiry to the lazy check on read (tests).
    `freeze_gc_after_startup` (what `aegis-server serve` sets; it changes the whole process): once started,
    move every object made so far (modules, the compiled policy set, the framework) out of the garbage
    collector's reach, so a full collection scans only what requests made since, not ~150,000 objects (a
    50-80 ms pause of every request in flight, on these machines)."""
    settings = settings if settings is not None else Settings.from_env()
    install_request_id_filter()
    metrics = Metrics()
    wall = clock or utcnow
    mono = monotonic or time.monotonic

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            store = await Store.open(settings.db_url, migrate=settings.db_migrate, audit_key=audit_key_source(settings))
        except AuditKeyError as exc:
            raise StartupError(f"the audit key is not usable: {exc}") from None
        except SchemaNotReady as exc:
            raise StartupError(f"the database at AEGIS_DB_URL is not ready: {exc}") from None
        except (OSError, DBAPIError) as exc:
            raise StartupError(
                f"cannot open the database ({type(exc).__name__}); check AEGIS_DB_URL and that the server is up"
            ) from None
        task: asyncio.Task[None] | None = None
        anchor: AuditAnchor | None = None
        anchor_task: asyncio.Task[None] | None = None
        prune_task: asyncio.Task[None] | None = None
        dispatcher: WebhookDispatcher | None = None
        exporters: list[AuditExporter] = []
        try:
            try:
                anchor = AuditAnchor.from_settings(settings, store, clock=wall)
                latest = await anchor.check_startup() if anchor is not None else None  # before anything is written
                await store.prepare_chain()
                if anchor is not None and latest is None:
                    await anchor.checkpoint(force=True)  # anchored from the start, even before the first append
            except AnchorError as exc:
                logger.critical("refusing to start: %s", exc)
                raise StartupError(f"the audit chain does not match its latest signed checkpoint: {exc}") from None
            except (AuditKeyError, CheckpointError) as exc:
                raise StartupError(f"the audit keys are not usable: {exc}") from None
            if anchor is None:
                logger.warning(
                    "audit checkpoints are off: the database is in memory and AEGIS_AUDIT_CHECKPOINT_DIR is unset"
                )
            service = GovernanceService(settings, store, metrics, clock=wall, monotonic=mono)
            try:
                await service.start()
            except PolicySetError as exc:
                raise StartupError(f"the policy files do not load: {exc}") from None
            app.state.store = store
            app.state.service = service
            app.state.audit_anchor = service.audit_anchor = anchor
            app.state.authenticator = KeyAuthenticator(store.authenticate, settings.auth_cache_seconds, mono)
            await _warn_unbound_keys(store)
            await app.state.rate_limiter.start()
            if run_background_tasks:
                task = asyncio.create_task(_expiry_loop(service, settings.review_expiry_interval_seconds))
                if anchor is not None:
                    anchor_task = asyncio.create_task(anchor.run())
                prune_task = asyncio.create_task(_outbox_retention_loop(store, settings.webhook_retention_days, wall))
                if settings.webhooks_enabled:
                    dispatcher = WebhookDispatcher(store, settings, metrics=metrics)
                    dispatcher.start()
                exporters = exporters_from_settings(store, settings, metrics)
                for exporter in exporters:
                    exporter.start()
            logger.info(
                "AEGIS %s ready: %d policies, %d capabilities, %d rules",
                __version__,
                len(service.policies.active.policies),
                len(service.policies.active.capabilities),
                service.policies.active.rule_count,
            )
            if freeze_gc_after_startup:
                gc.collect()
                gc.freeze()
            yield
        finally:
            for background in (task, anchor_task, prune_task):
                if background is not None:
                    background.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await background
            if dispatcher is not None:
                await dispatcher.stop()  # attempts in flight are retried after their lease
            if anchor is not None:
                await anchor.close()  # the head at shutdown, after the last request's records
            for exporter in exporters:
                await exporter.stop()  # exports what is committed (bounded), releases the sink's lease
            await store.close()

    app = AegisAPI(
        settings=settings,
        metrics=metrics,
        title="AEGIS governance API",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        **fastapi_telemetry_off(),
        openapi_url="/openapi.json",
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
    )
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url is not None else None
    app.state.rate_limiter = RateLimiter(
        settings.rate_limit_per_minute, settings.rate_limit_burst, mono, redis_url=redis_url
    )
    install_exception_handlers(app)

    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        # The cause by name (read-only, disk full, unreachable, ...), never the statement or its parameters.
        problem = describe_database_error(exc)
        logger.error("database error on %s %s: %s", request.method, request.url.path, problem.for_log())
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.storage.note_failure(problem)  # /ready answers 503 while writes fail this way
        return error_response(
            ApiError(
                503,
                "server_error",
                "unavailable",
                f"The database is unavailable ({problem.message}), so nothing was decided (fail closed). "
                "Retry shortly.",
                {"cause": problem.cause},
                headers={"Retry-After": "1"},
            )
        )

    for exc_type in (OperationalError, PoolTimeoutError, DBAPIError, SchemaNotReady):
        app.add_exception_handler(exc_type, _database_unavailable)

    async def _audit_chain_cut(request: Request, exc: Exception) -> Response:
        logger.critical("refusing to write: %s", exc)
        return error_response(
            ApiError(
                503,
                "server_error",
                "audit_chain_cut",
                "Audit records were deleted under the running server, so nothing is decided or written "
                "(fail closed). An operator must investigate (`aegis-server audit verify`) and restart it.",
            )
        )

    app.add_exception_handler(AuditChainCut, _audit_chain_cut)

    app.include_router(api_router())
    app.include_router(policy_versions_router)
    app.include_router(policy_replay_router)
    if settings.console_enabled:
        install_console(app, settings)
    app.hot_routes.update({(route.method, route.path): route for route in hot_routes()})
    return app


__all__ = ["AegisAPI", "StartupError", "create_app"]
