"""Connections to the upstream MCP servers (a stdio command or a streamable HTTP URL) through the mcp SDK's
`Client`; discovery of their tools, resources and prompts; a restart after a crash.

Each connection lives in its own task of the proxy's task group (an MCP client's context must be left by the
task that entered it); requests are sent from the handlers' tasks. A connection that fails is closed and
opened again on the next request."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import mcp_types as types
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError

from aegis_mcp._config import UpstreamConfig

logger = logging.getLogger("aegis_mcp.proxy")

ProgressCallback = ProgressFnT
_PAGE_CAP = 1000


def upstream_environment(extra: Mapping[str, str], hidden: Collection[str] = ()) -> dict[str, str]:
    """The environment of a stdio upstream: the proxy's own (an assistant's configuration gives it for the server
    the proxy wraps: tokens, paths), without AEGIS's variables and `hidden` ones (the proxy's API key is never
    the upstream's), plus the upstream's `env`."""
    inherited = {
        name: value for name, value in os.environ.items() if not name.startswith("AEGIS_") and name not in hidden
    }
    return {**inherited, **extra}


def redacted_url(url: str) -> str:
    """`url` as it may be logged: scheme://host:port/path, without credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "(an invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class UpstreamError(Exception):
    """An upstream MCP server could not be started, reached, or stopped answering."""


class UpstreamTimeout(UpstreamError):
    """An upstream MCP server did not answer a request within the proxy's `upstream_timeout`."""


class Upstream:
    """One upstream MCP server, connected on `start()` and restarted by the first request after a failure."""

    def __init__(
        self, config: UpstreamConfig, group: TaskGroup, *, hidden: Collection[str] = (), timeout: float = 300.0
    ) -> None:
        self.config = config
        self.timeout = timeout
        self._hidden = frozenset(hidden)
        self.name = config.name
        self._group = group
        self._client: Client | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._lock = anyio.Lock()
        self.restarts = 0

    # -- the connection ----------------------------------------------------------------------------

    def _target(self) -> Any:
        config = self.config
        if config.command is not None:
            command = config.command
            if shutil.which(command, path=None) is None:
                raise UpstreamError(
                    f"upstream {self.name!r}: the command {command!r} was not found; check the command and PATH"
                )
            # A transport, not the parameters: mcp 2.0's Client takes only transports for stdio.
            parameters = StdioServerParameters(
                command=command, args=config.args, env=upstream_environment(config.env, self._hidden), cwd=config.cwd
            )
            return stdio_client(parameters)
        assert config.url is not None
        http = create_mcp_http_client(headers=dict(config.headers) or None)
        return streamable_http_client(config.url, http_client=http)

    async def _hold(self, *, task_status: TaskStatus[Client]) -> None:
        """Open the connection, hand it over, and keep it until `close()` or a failure."""
        stop = anyio.Event()
        done = anyio.Event()
        self._stop, self._done = stop, done
        started = False
        try:
            async with Client(self._target()) as client:
                started = True
                task_status.started(client)
                await stop.wait()
        except Exception as exc:
            if not started:
                raise
            logger.warning("upstream %s: the connection ended (%s)", self.name, type(exc).__name__)
        finally:
            done.set()

    async def start(self) -> None:
        """Connect (again); UpstreamError when the server cannot be started or reached."""
        try:
            with anyio.fail_after(60):
                self._client = await self._group.start(self._hold)
        except UpstreamError:
            raise
        except TimeoutError:
            raise UpstreamError(f"upstream {self.name!r} did not answer the MCP handshake within 60 s") from None
        except Exception as exc:
            reason = _explain(exc)
            if self.config.url is not None:
                reason = reason.replace(self.config.url, redacted_url(self.config.url))
            raise UpstreamError(f"upstream {self.name!r} could not be started or reached: {reason}") from None
        logger.info("upstream %s: connected (%s)", self.name, self._where())

    def _where(self) -> str:
        if self.config.command is not None:
            return f"stdio: {self.config.command}"
        assert self.config.url is not None
        return f"http: {redacted_url(self.config.url)}"

    async def close(self) -> None:
        client, self._client = self._client, None
        if self._stop is not None:
            self._stop.set()
        if client is not None and self._done is not None:
            with anyio.move_on_after(10):
                await self._done.wait()

    async def client(self) -> Client:
        """The live connection, restarted when the previous one failed."""
        async with self._lock:
            if self._client is None:
                self.restarts += 1
                logger.warning("upstream %s: restarting after a failure (restart %d)", self.name, self.restarts)
                await self.start()
            assert self._client is not None
            return self._client

    async def _failed(self, client: Client) -> None:
        async with self._lock:
            if self._client is client:
                await self.close()

    # -- requests ----------------------------------------------------------------------------------

    async def request(self, send: Callable[[Client], Awaitable[Any]]) -> Any:
        """Send one request; on a broken connection close it (the next request restarts it) and raise
        UpstreamError; UpstreamTimeout when it does not answer within `timeout` seconds. An MCP error the server
        answered with is raised as it is."""
        client = await self.client()
        try:
            with anyio.fail_after(self.timeout):
                return await send(client)
        except TimeoutError:
            raise UpstreamTimeout(
                f"the upstream MCP server {self.name!r} did not answer within {self.timeout:g} s"
            ) from None
        except MCPError as exc:
            if _connection_lost(exc):
                await self._failed(client)
                raise UpstreamError(f"the upstream MCP server {self.name!r} stopped: {exc}") from None
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
            await self._failed(client)
            raise UpstreamError(f"the upstream MCP server {self.name!r} stopped ({type(exc).__name__})") from None

    async def list_tools(self) -> list[types.Tool]:
        async def send(client: Client) -> list[types.Tool]:
            tools: list[types.Tool] = []
            cursor: str | None = None
            for _ in range(_PAGE_CAP):
                page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
            return tools

        tools: list[types.Tool] = await self.request(send)
        allowed = self.config.tools
        return [tool for tool in tools if allowed is None or tool.name in allowed]

    def instructions(self) -> str | None:
        client = self._client
        return client.instructions if client is not None else None

    def capabilities(self) -> types.ServerCapabilities | None:
        client = self._client
        return client.server_capabilities if client is not None else None

    async def call_tool(
        self, tool: str, params: types.CallToolRequestParams, progress: ProgressCallback | None
    ) -> types.CallToolResult | types.InputRequiredResult:
        async def send(client: Client) -> types.CallToolResult | types.InputRequiredResult:
            return await client.session.call_tool(
                tool,
                params.arguments,
                progress_callback=progress,
                input_responses=params.input_responses,
                request_state=params.request_state,
                allow_input_required=True,
            )

        result: types.CallToolResult | types.InputRequiredResult = await self.request(send)
        return result


def _connection_lost(exc: MCPError) -> bool:
    return exc.code == types.CONNECTION_CLOSED


def _explain(exc: BaseException) -> str:
    """The innermost useful message of a start failure (often wrapped in exception groups)."""
    inner = getattr(exc, "exceptions", None)  # an exception group (a builtin only from 3.11)
    while inner:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = ["ProgressCallback", "Upstream", "UpstreamError", "UpstreamTimeout", "redacted_url"]
