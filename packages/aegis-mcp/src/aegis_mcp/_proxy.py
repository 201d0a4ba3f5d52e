"""The governing proxy: an mcp lowlevel `Server` whose handlers forward to the upstream MCP servers, with
`GovernanceMiddleware` in front of every `tools/call`. Served over stdio (what desktop and coding assistants
start) or streamable HTTP (`--listen HOST:PORT`, path `/mcp`)."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskStatus
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from aegis_mcp._config import ProxyConfig
from aegis_mcp._listener import listen_token, serve_http
from aegis_mcp._middleware import GovernanceMiddleware
from aegis_mcp._upstream import Upstream, UpstreamError, UpstreamTimeout
from aegis_sdk import Actor, AsyncAegisClient

logger = logging.getLogger("aegis_mcp.proxy")


_GOVERNED_ROUTE: contextvars.ContextVar[Route | None] = contextvars.ContextVar("aegis_mcp_governed_route", default=None)


@dataclass(frozen=True)
class Route:
    """Where an exposed tool goes: the upstream, the tool's name there, and the capability it is governed as."""

    upstream: Upstream
    name: str
    capability: str


async def discover(upstreams: Sequence[Upstream], config: ProxyConfig) -> list[tuple[types.Tool, Route]]:
    """The tools the upstreams expose (allow-lists and `tool_prefix` applied), with their routes; UpstreamError
    when two exposed tools have the same name or would be governed as the same capability."""
    listed = [(upstream, await upstream.list_tools()) for upstream in upstreams]
    exposed, conflicts = routes(listed, config)
    if conflicts:
        raise UpstreamError(conflicts[0])
    return exposed


def routes(
    listed: Sequence[tuple[Upstream, Sequence[types.Tool]]],
    config: ProxyConfig,
    previous: Mapping[str, Route] | None = None,
) -> tuple[list[tuple[types.Tool, Route]], list[str]]:
    """The exposed tools with their routes, and the conflicts: a tool whose exposed name or capability another
    tool already has is left out (one tool is never governed under another's capability or policy). The tools
    routed before (`previous`) are placed first, so a tool that appears later never displaces one in use."""
    candidates: list[tuple[types.Tool, Route, str]] = []
    for upstream, tools in listed:
        for tool in tools:
            name = upstream.config.exposed_name(tool.name)
            route = Route(upstream, tool.name, upstream.config.capability(tool.name, config.capability_prefix))
            candidates.append((tool, route, name))
    order = list(range(len(candidates)))
    if previous:
        known = {(route.upstream.name, route.name, exposed) for exposed, route in previous.items()}
        order.sort(
            key=lambda at: (candidates[at][1].upstream.name, candidates[at][1].name, candidates[at][2]) not in known
        )
    accepted: set[int] = set()
    conflicts: list[str] = []
    by_name: dict[str, Route] = {}
    by_capability: dict[str, tuple[str, Route, bool]] = {}
    for at in order:
        tool, route, name = candidates[at]
        if name in by_name:
            other = by_name[name]
            conflicts.append(
                f"the upstreams {other.upstream.name!r} and {route.upstream.name!r} both expose a tool named "
                f"{name!r}; set `tool_prefix` on one of them (for example `tool_prefix: {route.upstream.name}_`), "
                "or leave the tool out with `tools:`"
            )
            continue
        explicit = route.name in route.upstream.config.capabilities
        shared = by_capability.get(route.capability)
        if shared is not None and not (explicit and shared[2]):
            other_name, other, _ = shared
            conflicts.append(
                f"the tools {other_name!r} (upstream {other.upstream.name!r}) and {name!r} (upstream "
                f"{route.upstream.name!r}) would both be governed as the capability {route.capability!r}; "
                "give one of them its own capability with `capabilities:` in its upstream's configuration "
                f"(for example `capabilities: {{{json.dumps(route.name)}: {route.capability}_2}}`), or leave it out "
                "with `tools:` (tools share a capability only when each is mapped to it in `capabilities:`)"
            )
            continue
        by_name[name] = route
        by_capability[route.capability] = (name, route, explicit)
        accepted.add(at)
    exposed = [
        (tool if name == tool.name else tool.model_copy(update={"name": name}), route)
        for at, (tool, route, name) in enumerate(candidates)
        if at in accepted
    ]
    return exposed, conflicts


@asynccontextmanager
async def connected(config: ProxyConfig) -> AsyncIterator[list[Upstream]]:
    """The configured upstreams, connected; closed (their processes ended) on exit."""
    async with anyio.create_task_group() as group:
        # The proxy's own secrets are never an upstream's: its AEGIS key, and the token of its HTTP listener.
        hidden = {config.aegis.api_key_env, *([config.listen_token_env] if config.listen_token_env else [])}
        timeout = config.upstream_timeout
        upstreams = [Upstream(upstream, group, hidden=hidden, timeout=timeout) for upstream in config.upstreams]
        try:
            for upstream in upstreams:
                await upstream.start()
            yield upstreams
        finally:
            with anyio.CancelScope(shield=True):
                for upstream in upstreams:
                    await upstream.close()
            group.cancel_scope.cancel()


class GoverningProxy:
    """The proxy's state: the upstreams, where each exposed tool / prompt / resource goes, the middleware."""

    def __init__(self, config: ProxyConfig, client: AsyncAegisClient, upstreams: Sequence[Upstream]) -> None:
        self.config = config
        self.aegis = client
        self.upstreams = list(upstreams)
        self.tools: dict[str, Route] = {}
        self._listed: dict[str, list[types.Tool]] = {}  # the last list each upstream answered with
        self._prompts: dict[str, Upstream] = {}
        self._resources: dict[str, Upstream] = {}
        self._templates: dict[str, Upstream] = {}
        self.governance = GovernanceMiddleware(
            client,
            actor=Actor(id=config.actor.id, type=config.actor.type),
            capability_prefix=config.capability_prefix,
            fail_open=config.fail_open,
            review_timeout=config.review_timeout,
            progress_interval=min(5.0, max(config.review_timeout / 4, 0.5)),
            tool_metadata=self._tool_metadata,
        )
        self.server: Server[Any] = Server(
            "aegis-mcp-proxy",
            instructions=None,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
        )
        # Unknown tools are refused before governance: no proposal (nor an operator's review) for a tool that
        # does not exist.
        self.server.middleware.append(self._refuse_unknown_tools)
        self.server.middleware.append(self.governance)

    # -- start and stop ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Discover the (connected) upstreams' tools; UpstreamError when an upstream does not list them, or two
        exposed tools have the same name or capability."""
        await self.discover_tools(strict=True)
        instructions = [self._instructions_of(upstream) for upstream in self.upstreams]
        self.server.instructions = "\n\n".join(text for text in instructions if text) or None

    def _instructions_of(self, upstream: Upstream) -> str | None:
        return upstream.instructions()

    async def discover_tools(self, *, strict: bool = False) -> list[tuple[types.Tool, Route]]:
        """The exposed tools (as the client sees them) with where each goes; refreshes the routing.

        `strict` (at start): an upstream that does not list its tools, or a conflict (two tools with the same
        exposed name or capability) is an UpstreamError. Otherwise (while serving) an upstream that fails or
        does not answer keeps its last good list, and a tool that conflicts with one already routed is left
        out and logged: one upstream's change never breaks the others' tools, nor reroutes a tool."""
        listed: dict[str, list[types.Tool]] = {}

        async def list_one(upstream: Upstream) -> None:
            try:
                listed[upstream.name] = await upstream.list_tools()
            except (UpstreamError, MCPError) as exc:
                if strict or upstream.name not in self._listed:
                    if strict:
                        raise UpstreamError(f"upstream {upstream.name!r} did not list its tools: {exc}") from None
                    logger.warning("upstream %s: its tools could not be listed (%s)", upstream.name, exc)
                    return
                logger.warning(
                    "upstream %s: its tools could not be listed (%s); keeping its last list", upstream.name, exc
                )
                listed[upstream.name] = self._listed[upstream.name]

        if strict:
            for upstream in self.upstreams:
                await list_one(upstream)
        else:
            async with anyio.create_task_group() as group:
                for upstream in self.upstreams:
                    group.start_soon(list_one, upstream)
        exposed, conflicts = routes(
            [(upstream, listed.get(upstream.name, [])) for upstream in self.upstreams],
            self.config,
            previous=None if strict else self.tools,
        )
        if conflicts and strict:
            raise UpstreamError(conflicts[0])
        for conflict in conflicts:
            logger.error("a tool was left out: %s", conflict)
        self._listed.update(listed)
        self.tools = {tool.name: route for tool, route in exposed}
        self.governance.capabilities = {name: route.capability for name, route in self.tools.items()}
        return exposed

    async def _refuse_unknown_tools(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """A middleware before governance: a `tools/call` for a tool the proxy does not route (after one fresh
        discovery) is refused at once, never proposed to AEGIS."""
        if ctx.method == "tools/call" and isinstance(ctx.params, Mapping):
            name = ctx.params.get("name")
            if isinstance(name, str) and name not in self.tools:
                await self.discover_tools()
            if not isinstance(name, str) or name not in self.tools:
                logger.info("refused a call to an unknown tool")
                return _error_result(f"Unknown tool {name!r}: the upstream MCP servers do not expose it.")
            # The route governance is about to decide on (it reads the same routing, with no await in between):
            # the call goes there, even if a rediscovery during a long review gives the name to another tool.
            token = _GOVERNED_ROUTE.set(self.tools[name])
            try:
                return await call_next(ctx)
            finally:
                _GOVERNED_ROUTE.reset(token)
        return await call_next(ctx)

    def _tool_metadata(self, tool: str) -> dict[str, Any]:
        route = self.tools.get(tool)
        return {"mcp_upstream": route.upstream.name} if route is not None else {}

    # -- tools -------------------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        exposed = await self.discover_tools()
        return types.ListToolsResult(tools=[tool for tool, _ in exposed])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        route = _GOVERNED_ROUTE.get()
        if route is None:
            return _error_result(f"Unknown tool {params.name!r}: the upstream MCP servers do not expose it.")

        async def forward_progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        try:
            return await route.upstream.call_tool(route.name, params, forward_progress)
        except UpstreamTimeout as exc:
            logger.warning("tool %s: %s", params.name, exc)
            return _error_result(
                f"{exc} (the proxy's upstream_timeout); the call was abandoned and may or may not have completed."
            )
        except UpstreamError as exc:
            logger.warning("tool %s: %s", params.name, exc)
            return _error_result(
                f"{exc}. The call may not have completed. The proxy restarts the upstream on the next call."
            )
        except MCPError as exc:
            return _error_result(f"The upstream MCP server {route.upstream.name!r} refused the call: {exc}")

    # -- resources, templates, prompts, completion -------------------------------------------------

    def _serving(self, what: str) -> list[Upstream]:
        found = []
        for upstream in self.upstreams:
            capabilities = upstream.capabilities()
            if capabilities is not None and getattr(capabilities, what) is not None:
                found.append(upstream)
        return found

    async def _list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        resources: list[types.Resource] = []
        for upstream in self._serving("resources"):
            page = await _all_pages(upstream, lambda c, cursor: c.list_resources(cursor=cursor), "resources")
            for resource in page:
                self._resources[str(resource.uri)] = upstream
            resources.extend(page)
        return types.ListResourcesResult(resources=resources)

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates: list[types.ResourceTemplate] = []
        for upstream in self._serving("resources"):
            page = await _all_pages(
                upstream, lambda c, cursor: c.list_resource_templates(cursor=cursor), "resource_templates"
            )
            for template in page:
                self._templates[template.uri_template] = upstream
            templates.extend(page)
        return types.ListResourceTemplatesResult(resource_templates=templates)

    async def _read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        known = self._resources.get(uri)
        candidates = [known] if known is not None else self._serving("resources")
        last: MCPError | None = None
        for upstream in candidates:
            try:
                result: types.ReadResourceResult = await _forward(
                    upstream, lambda c: c.session.read_resource(params.uri)
                )
                return result
            except MCPError as exc:
                last = exc
        raise last or MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource {uri}")

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        prompts: list[types.Prompt] = []
        for upstream in self._serving("prompts"):
            page = await _all_pages(upstream, lambda c, cursor: c.list_prompts(cursor=cursor), "prompts")
            for prompt in page:
                self._prompts[prompt.name] = upstream
            prompts.extend(page)
        return types.ListPromptsResult(prompts=prompts)

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        upstream = self._prompts.get(params.name)
        if upstream is None:
            await self._list_prompts(ctx, None)
            upstream = self._prompts.get(params.name)
        if upstream is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt {params.name!r}")
        result: types.GetPromptResult = await _forward(
            upstream, lambda c: c.session.get_prompt(params.name, params.arguments)
        )
        return result

    async def _complete(
        self, ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        upstream = (
            self._prompts.get(ref.name) if isinstance(ref, types.PromptReference) else self._templates.get(ref.uri)
        )
        if upstream is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        context = params.context.arguments if params.context is not None else None
        argument = {params.argument.name: params.argument.value}
        result: types.CompleteResult = await _forward(
            upstream, lambda c: c.complete(ref=ref, argument=argument, context_arguments=context)
        )
        return result


async def _forward(upstream: Upstream, send: Any) -> Any:
    try:
        return await upstream.request(send)
    except UpstreamError as exc:
        raise MCPError(code=types.INTERNAL_ERROR, message=str(exc)) from None


async def _all_pages(upstream: Upstream, fetch: Any, field: str) -> list[Any]:
    async def send(client: Any) -> list[Any]:
        items: list[Any] = []
        cursor: str | None = None
        for _ in range(1000):
            page = await fetch(client, cursor)
            items.extend(getattr(page, field))
            cursor = page.next_cursor
            if cursor is None:
                break
        return items

    result: list[Any] = await _forward(upstream, send)
    return result


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


@asynccontextmanager
async def running_proxy(config: ProxyConfig, client: AsyncAegisClient) -> AsyncIterator[GoverningProxy]:
    """A started proxy (upstreams connected, tools discovered); its upstreams are stopped on exit."""
    async with connected(config) as upstreams:
        proxy = GoverningProxy(config, client, upstreams)
        await proxy.start()
        yield proxy


async def _until_signal(proxy: GoverningProxy, *, task_status: TaskStatus[None]) -> None:
    """On SIGTERM / SIGINT: stop the upstreams (their processes end), flush the queued execution reports, then
    leave at once. Cancelling is not enough: the stdio transport reads stdin in a thread that no cancellation
    interrupts."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            logger.info("received %s: stopping the proxy and its upstreams", signal.Signals(received).name)
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                for upstream in proxy.upstreams:
                    await upstream.close()
            # os._exit skips the client's close and the interpreter's exit hooks: flush the queued execution
            # reports here (given up ones are logged by aegis_sdk).
            with anyio.CancelScope(shield=True):
                if not await proxy.aegis.flush_reports(10.0):
                    logger.warning("stopping with execution reports not yet answered: %s", proxy.aegis.report_stats)
            logging.shutdown()
            sys.stderr.flush()
            os._exit(0)


async def serve(proxy: GoverningProxy, listen: tuple[str, int] | None = None) -> None:
    """Serve the proxy over stdio (until stdin closes) or streamable HTTP on `listen` (until SIGTERM). Over HTTP,
    the Host/Origin check is always on, and a bearer token is required when `listen_token_env` is set (it must
    be for an address that is not loopback: ConfigError)."""
    server = proxy.server
    token = listen_token(proxy.config, listen[0]) if listen is not None else None
    async with anyio.create_task_group() as group:
        await group.start(_until_signal, proxy)
        logger.info(
            "governing %d tools of %d upstream(s) as actor %s",
            len(proxy.tools),
            len(proxy.upstreams),
            proxy.config.actor.id,
        )
        if listen is not None:
            await serve_http(server, *listen, token=token, extra_hosts=proxy.config.allowed_hosts)
        else:
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        group.cancel_scope.cancel()


__all__ = [
    "GoverningProxy",
    "Route",
    "connected",
    "discover",
    "routes",
    "running_proxy",
    "serve",
]
