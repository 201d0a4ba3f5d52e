"""/metrics protected: open by default, behind the scope `metrics` (or `admin`) with AEGIS_METRICS_ACCESS=key,
and on an address of its own with AEGIS_METRICS_LISTEN (the main address then answers 404)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_server.edge.http_server import edge_config
from aegis_server.inprocess import InProcessServer
from aegis_server.observability.metrics_listener import MetricsListener, bind
from aegis_server.settings import Settings

POLICIES = Path(__file__).parents[1] / "api" / "policies.yaml"


def running(tmp_path: Path, **settings: Any) -> InProcessServer:
    return InProcessServer(
        [POLICIES], db_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", run_background_tasks=False, **settings
    )


async def make_key(server: InProcessServer, *scopes: str) -> str:
    response = await server.async_http_client().post(
        "/api/v1/keys", json={"name": "-".join(scopes).replace(":", "-"), "scopes": list(scopes), "actors": ["*"]}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["api_key"])


async def get_metrics(server: InProcessServer, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(transport=server.async_transport(), base_url=server.endpoint) as client:
        return await client.get("/metrics", headers=headers)


async def test_open_by_default(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        response = await get_metrics(server, None)
        assert response.status_code == 200 and "aegis_" in response.text


async def test_key_mode_needs_the_metrics_scope_or_admin(tmp_path: Path) -> None:
    async with running(tmp_path, metrics_access="key") as server:
        missing = await get_metrics(server, None)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        wrong = await get_metrics(server, "aegis_sk_not-a-key")
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        reader = await make_key(server, "governance:read")
        refused = await get_metrics(server, reader)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "missing_scope"
        assert refused.json()["error"]["details"] == {"required_scope": "metrics"}
        scraper = await make_key(server, "metrics")
        allowed = await get_metrics(server, scraper)
        assert allowed.status_code == 200 and "aegis_" in allowed.text
        assert (await get_metrics(server, server.api_key)).status_code == 200  # admin
        # the metrics scope opens nothing else
        other = await server.async_http_client(api_key=scraper).get("/api/v1/governance/decisions")
        assert other.status_code == 403


@pytest.fixture
async def listening(tmp_path: Path) -> AsyncIterator[tuple[InProcessServer, str]]:
    async with running(tmp_path, metrics_listen="127.0.0.1:0", metrics_access="key") as server:
        sock = bind("127.0.0.1", 0)
        config = edge_config(
            server.app,
            host="127.0.0.1",
            port=sock.getsockname()[1],
            proxy_headers=False,
            keep_alive_timeout=5.0,
            header_timeout=0.5,
            shutdown_timeout=1,
            max_header_bytes=8 * 1024,
        )
        listener = MetricsListener(server.app, config, sock)
        await listener.start()
        host, port = listener.address
        try:
            yield server, f"http://{host}:{port}"
        finally:
            await listener.stop()


async def test_a_separate_listener_serves_metrics_alone(listening: tuple[InProcessServer, str]) -> None:
    server, url = listening
    on_main = await get_metrics(server, server.api_key)
    unknown = await server.async_http_client().get("/no-such-path")
    assert on_main.status_code == unknown.status_code == 404
    assert on_main.json()["error"]["code"] == unknown.json()["error"]["code"]
    scraper = await make_key(server, "metrics")
    async with httpx.AsyncClient(base_url=url) as client:
        served = await client.get("/metrics", headers={"Authorization": f"Bearer {scraper}"})
        assert served.status_code == 200 and "aegis_" in served.text
        assert (await client.get("/metrics")).status_code == 401  # the key mode holds there too
        api = await client.get("/api/v1/health")
        assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


async def test_the_listener_has_the_main_addresss_edge_limits(listening: tuple[InProcessServer, str]) -> None:
    """A head over the size limit is refused with 431, and a head that never ends is cut at the header
    timeout, as on the main address: the /metrics address is no softer a target."""
    _, url = listening
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024)  # one endless header
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.split()[1] == b"431", status
    writer.close()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # the server closes the connection
    assert answer == b"" or b" 408 " in answer.split(b"\r\n")[0], answer[:80]
    writer.close()


def test_the_settings_say_what_is_wrong() -> None:
    assert Settings.from_env({}).metrics_address() is None
    assert Settings.from_env({"AEGIS_METRICS_LISTEN": "0.0.0.0:9464"}).metrics_address() == ("0.0.0.0", 9464)
    assert Settings.from_env({"AEGIS_METRICS_LISTEN": "[::1]:9464"}).metrics_address() == ("::1", 9464)
    assert Settings.from_env({"AEGIS_METRICS_LISTEN": ""}).metrics_listen is None
    for bad in ("9464", "host:", ":9464", "host:99999", "host:port"):
        with pytest.raises(ValueError, match=r"AEGIS_METRICS_LISTEN: .*HOST:PORT"):
            Settings.from_env({"AEGIS_METRICS_LISTEN": bad})
    with pytest.raises(ValueError, match="AEGIS_METRICS_ACCESS"):
        Settings.from_env({"AEGIS_METRICS_ACCESS": "token"})


def test_keys_create_takes_the_metrics_scope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aegis_server.cli import main

    db = f"sqlite+aiosqlite:///{tmp_path / 'k.db'}"
    assert main(["db", "upgrade", "--db", db]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--name", "scraper", "--scopes", "metrics", "--db", db]) == 0
    assert capsys.readouterr().out.strip().startswith("aegis_sk_")
    assert main(["keys", "create", "--name", "x", "--scopes", "metricz", "--db", db]) == 2
    assert "metrics" in capsys.readouterr().err
