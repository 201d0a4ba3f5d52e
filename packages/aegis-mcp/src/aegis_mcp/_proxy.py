"""The governing proxy: an mcp lowlevel `Server` whose handlers forward to the upstream MCP servers, with
`GovernanceMiddleware` in front of every `tools/call`. Served over stdio (what desktop and coding assistants
start) or streamable HTTP (`--listen HOST:PORT`, path `/mcp`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from anyio.abc import TaskStatus
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from aegis_mcp._config import ProxyConfig
from aegis_mcp._middleware import GovernanceMiddleware
from aegis_mcp._upstream import Upstream, UpstreamError
from aegis_sdk import Actor, AsyncAegisClient

logger = logging.getLogger("aegis_mcp.proxy")


@dataclass(frozen=True)
class Route:
    """Where an exposed tool goes: the upstream, the tool's name there, and the capability it is governed as."""

    upstream: Upstream
    name: str
    capability: str


async def discover(upstreams: Sequence[Upstream], config: ProxyConfig) -> list[tuple[types.Tool, Route]]:
    """The tools the upstreams expose (allow-lists and `tool_prefix` applied), with their routes; UpstreamError
    when two upstreams expose the same name."""
    exposed: list[tuple[types.Tool, Route]] = []
    owner: dict[str, str] = {}
    for upstream in upstreams:
        for tool in await upstream.list_tools():
            name = upstream.config.exposed_name(tool.name)
            if name in owner:
                raise UpstreamError(
                    f"the upstreams {owner[name]!r} and {upstream.name!r} both expose a tool named {name!r}; "
                    f"set `tool_prefix` on one of them (for example `tool_prefix: {upstream.name}_`), "
                    "or leave the tool out with `tools:`"
                )
            owner[name] = upstream.name
            route = Route(upstream, tool.name, upstream.config.capability(tool.name, config.capability_prefix))
            shown = tool if name == tool.name else tool.model_copy(update={"name": name})
            exposed.append((shown, route))
    return exposed


@asynccontextmanager
async def connected(config: ProxyConfig) -> AsyncIterator[list[Upstream]]:
    """The configured upstreams, connected; closed (their processes ended) on exit."""
    async with anyio.create_task_group() as group:
        hidden = {config.aegis.api_key_env}
        upstreams = [Upstream(upstream, group, hidden=hidden) for upstream in config.upstreams]
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
        self.server.middleware.append(self.governance)

    # -- start and stop ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Discover the (connected) upstreams' tools; UpstreamError on two upstreams exposing the same name."""
        await self.discover_tools()
        instructions = [self._instructions_of(upstream) for upstream in self.upstreams]
        self.server.instructions = "\n\n".join(text for text in instructions if text) or None

    def _instructions_of(self, upstream: Upstream) -> str | None:
        return upstream.instructions()

    async def discover_tools(self) -> list[tuple[types.Tool, Route]]:
        """The exposed tools (as the client sees them) with where each goes; refreshes the routing."""
        exposed = await discover(self.upstreams, self.config)
        self.tools = {tool.name: route for tool, route in exposed}
        self.governance.capabilities = {name: route.capability for name, route in self.tools.items()}
        return exposed

    def _tool_metadata(self, tool: str) -> dict[str, Any]:
        route = self.tools.get(tool)
        return {"mcp_upstream": route.upstream.name} if route is not None else {}

    # -- tools -------------------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        try:
            exposed = await self.discover_tools()
        except UpstreamError as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=str(exc)) from None
        return types.ListToolsResult(tools=[tool for tool, _ in exposed])

    async def _call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        route = self.tools.get(params.name)
        if route is None:
            return _error_result(f"Unknown tool {params.name!r}: the upstream MCP servers do not expose it.")

        async def forward_progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        try:
            return await route.upstream.call_tool(route.name, params, forward_progress)
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
    """On SIGTERM / SIGINT: stop the upstreams (their processes end), then leave at once. Cancelling is not
    enough: the stdio transport reads stdin in a thread that no cancellation interrupts."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            logger.info("received %s: stopping the proxy and its upstreams", signal.Signals(received).name)
            with anyio.CancelScope(shield=True), anyio.move_on_after(15):
                for upstream in proxy.upstreams:
                    await upstream.close()
            logging.shutdown()
            sys.stderr.flush()
            os._exit(0)


async def serve(proxy: GoverningProxy, listen: tuple[str, int] | None = None) -> None:
    """Serve the proxy over stdio (until stdin closes) or streamable HTTP on `listen` (until SIGTERM)."""
    server = proxy.server
    async with anyio.create_task_group() as group:
        await group.start(_until_signal, proxy)
        logger.info(
            "governing %d tools of %d upstream(s) as actor %s",
            len(proxy.tools),
            len(proxy.upstreams),
            proxy.config.actor.id,
        )
        if listen is not None:
            await _serve_http(server, *listen)
        else:
            async with stdio_server() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        group.cancel_scope.cancel()


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the proxy's (`_until_signal`) stops the upstreams first."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_http(server: Server[Any], host: str, port: int) -> None:
    app = server.streamable_http_app(streamable_http_path="/mcp", host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    instance = _QuietServer(config)
    logger.info("serving MCP over streamable HTTP at http://%s:%d/mcp", host, port)
    await instance.serve()


__all__ = ["GoverningProxy", "Route", "connected", "discover", "running_proxy", "serve"]
