"""The proxy's streamable HTTP listener (`--listen HOST:PORT`): whoever reaches it acts as the proxy's actor, so
every request's Host and Origin are checked (DNS rebinding), and beyond loopback a bearer token is required."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.transport_security import TransportSecuritySettings

from aegis_mcp._config import ConfigError, ProxyConfig

logger = logging.getLogger("aegis_mcp.proxy")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_token(config: ProxyConfig, host: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token the HTTP listener requires (from the variable `listen_token_env` names), or None; a
    ConfigError when the variable is unset or empty, or when `host` is not loopback and there is no token."""
    env = os.environ if environ is None else environ
    name = config.listen_token_env
    if name is None:
        if not is_loopback(host):
            raise ConfigError(
                f"--listen on {host}, which is not a loopback address, needs a token: add --listen-token-env NAME "
                "(`listen_token_env` in the config), NAME being an environment variable holding a secret that "
                "clients send as `Authorization: Bearer <secret>`"
            )
        return None
    token = env.get(name, "")
    if not token:
        raise ConfigError(
            f"--listen-token-env {name}: the environment variable {name} is unset or empty; set it to a secret"
        )
    return token


def _is_any_address(host: str) -> bool:
    """0.0.0.0, ::, and their other spellings (::0, 0:0:0:0:0:0:0:0): every interface."""
    if host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def allowed_hosts(host: str, port: int, extra: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The Host and Origin header values the HTTP listener accepts (DNS-rebinding protection): the listen
    address (with localhost / 127.0.0.1 / [::1] for loopback; the machine's name for 0.0.0.0 or ::) and `extra`."""
    bare = host.strip("[]")
    names: list[str] = []
    if is_loopback(bare):
        names += ["127.0.0.1", "localhost", "[::1]"]
    elif _is_any_address(bare):
        names += ["127.0.0.1", "localhost", "[::1]"]
        for name in {socket.gethostname(), socket.getfqdn()}:
            if name:
                names.append(name)
    if not _is_any_address(bare):
        names.append(f"[{bare}]" if ":" in bare else bare)
    hosts: list[str] = []
    origins: list[str] = []
    for name in [*names, *extra]:
        for value in (name, f"{name}:*") if not _has_port(name) else (name,):
            if value not in hosts:
                hosts.append(value)
        for scheme in ("http", "https"):
            for value in (
                (f"{scheme}://{name}", f"{scheme}://{name}:*") if not _has_port(name) else (f"{scheme}://{name}",)
            ):
                if value not in origins:
                    origins.append(value)
    return hosts, origins


def _has_port(name: str) -> bool:
    return name.rsplit("]", 1)[-1].count(":") == 1


class _BearerToken:
    """ASGI: every HTTP request must carry `Authorization: Bearer <token>` (the scheme in any case, RFC 7235; the
    token compared in constant time)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = b""
            for key, value in scope.get("headers", ()):
                if key.lower() == b"authorization":
                    given = bytes(value)
                    break
            scheme, _, credentials = given.partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.expected)):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": b"a valid Authorization: Bearer token is required\n"})
                return
        await self.app(scope, receive, send)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the proxy's (`_until_signal`) stops the upstreams first."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(
    server: Server[Any], host: str, port: int, *, token: str | None, extra_hosts: Sequence[str] = ()
) -> None:
    hosts, origins = allowed_hosts(host, port, extra_hosts)
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app: Any = server.streamable_http_app(streamable_http_path="/mcp", host=host, transport_security=security)
    if token is not None:
        app = _BearerToken(app, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    instance = _QuietServer(config)
    shown = f"[{host}]" if ":" in host else host
    logger.info(
        "serving MCP over streamable HTTP at http://%s:%d/mcp (%s; accepted Host headers: %s)",
        shown,
        port,
        "a bearer token is required" if token is not None else "no token: loopback only",
        ", ".join(hosts),
    )
    await instance.serve()


__all__ = ["allowed_hosts", "is_loopback", "listen_token", "serve_http"]
