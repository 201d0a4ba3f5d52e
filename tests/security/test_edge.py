"""Issue 13, the network edge (findings 7, 9 and 10): connections, readiness under storage failure, and the
contract. One test per finding item; each failed on 3ddec14.

Where the finding is about the server process (connections, SIGTERM, protocol-level 400s) the test runs a
real `aegis-server serve` on loopback; the rest drives the ASGI app through httpx. Everything is bounded:
the connection test opens at most EDGE_SOCKETS sockets (closed at the end) and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import resource
import selectors
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from aegis_server.app import create_app
from aegis_server.inprocess import InProcessServer
from aegis_server.settings import Settings
from aegis_server.store import probe as probe_module
from aegis_server.store.probe import StorageHealth, describe_database_error
from reliability._support import POLICY, ServerProcess, env_int, postgres_database, sqlite_url

EDGE_SOCKETS = env_int("AEGIS_EDGE_SOCKETS", 2000)
HEADER_TIMEOUT = 10.0  # long enough to open every socket first on a loaded machine
KEEP_ALIVE_TIMEOUT = 2.0
ENVELOPE_KEYS = {"type", "code", "message", "request_id", "details"}


def _assert_envelope(body: Any, type_: str, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert (error["type"], error["code"]) == (type_, code), error
    return error


@pytest.fixture
def edge_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server with short connection timeouts (the defaults are 10 s and 5 s)."""
    env = {
        "AEGIS_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "AEGIS_KEEP_ALIVE_TIMEOUT_SECONDS": str(KEEP_ALIVE_TIMEOUT),
    }
    with ServerProcess(sqlite_url(tmp_path), tmp_path / "server.log", env=env, log_level="info") as server:
        yield server


def _enough_open_files(needed: int) -> None:
    """This process holds the sockets too: raise its soft open-files limit (skip when the hard one is low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open-files hard limit ({hard}) is below the {needed} sockets this test holds")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def _is_open(sock: socket.socket) -> bool:
    """True while the server has not closed the connection (nothing to read, no EOF)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _wait_closed(socks: list[socket.socket], deadline: float) -> list[socket.socket]:
    """Wait until the server closed every socket (EOF or reset); the ones still open at the deadline."""
    selector = selectors.DefaultSelector()
    waiting = set()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
        waiting.add(sock)
    try:
        while waiting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    waiting.discard(sock)
    finally:
        selector.close()
    return list(waiting)


# ---------------------------------------------------------------------------------------------
# Finding 7: connection exhaustion
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_idle_and_partial_header_connections_are_closed_and_a_new_client_is_served(
    edge_server: ServerProcess,
) -> None:
    _enough_open_files(EDGE_SOCKETS + 256)
    port = edge_server.port
    partial: list[socket.socket] = []
    idle: list[socket.socket] = []
    kept_alive: list[socket.socket] = []
    try:
        # Half send a request head without its final blank line (slowloris), half send nothing at all.
        for i in range(EDGE_SOCKETS):
            sock = _connect(port)
            if i % 2 == 0:
                sock.send(b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\nX-Slow: 1\r\n")
                partial.append(sock)
            else:
                idle.append(sock)
        # A few complete one request and then stay idle on keep-alive.
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\n\r\n")
            answer = b""
            while b'"ok"' not in answer:
                chunk = sock.recv(4096)
                assert chunk, "the server closed a keep-alive connection before answering"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
            sock.setblocking(False)
            kept_alive.append(sock)

        # With all of them open, a new client gets a proper answer.
        response = httpx.get(f"{edge_server.endpoint}/api/v1/health", timeout=10)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        still_open = sum(_is_open(sock) for sock in partial + idle)
        assert still_open >= 0.9 * EDGE_SOCKETS, f"only {still_open} of {EDGE_SOCKETS} sockets were open"

        # The server closes them: keep-alive ones after KEEP_ALIVE_TIMEOUT, the rest after HEADER_TIMEOUT
        # (bounded generously: a loaded machine may be slow to run the timers, never to skip them).
        left = _wait_closed(kept_alive, time.monotonic() + KEEP_ALIVE_TIMEOUT + 15)
        assert not left, f"{len(left)} idle keep-alive connections were not closed"
        left = _wait_closed(partial + idle, time.monotonic() + HEADER_TIMEOUT + 20)
        assert not left, f"{len(left)} idle or partial-header connections were not closed"

        # And the server still serves.
        assert httpx.get(f"{edge_server.endpoint}/api/v1/health", timeout=10).status_code == 200
    finally:
        for sock in partial + idle + kept_alive:
            sock.close()
    assert "Traceback" not in edge_server.logs()


BODY_TIMEOUT = 2.0
SLOW_BODY_HEAD = (
    b"POST /api/v1/governance/propose HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)


def _read_all(sock: socket.socket, deadline: float) -> bytes:
    """What the server sends until it closes the connection (or the deadline passes)."""
    answer = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except OSError:  # a timeout or a reset
            break
        if not chunk:
            break
        answer += chunk
    return answer


def _parse_answer(answer: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, json.loads(body)


@pytest.mark.slow
def test_a_stalled_or_dripping_body_is_answered_408_and_the_connection_closed(tmp_path: Path) -> None:
    env = {"AEGIS_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "AEGIS_HEADER_TIMEOUT_SECONDS": "30"}
    with ServerProcess(sqlite_url(tmp_path), tmp_path / "server.log", env=env, log_level="info") as server:
        stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(10)]
        dripping = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(10)]
        try:
            for sock in stalled + dripping:
                sock.sendall(SLOW_BODY_HEAD)
            # The dripping ones send a byte every 0.25 s: more bytes do not buy more time.
            deadline = time.monotonic() + BODY_TIMEOUT + 15
            closed_at: dict[socket.socket, float] = {}
            started = time.monotonic()
            while time.monotonic() < deadline and len(closed_at) < len(dripping):
                for sock in dripping:
                    if sock in closed_at:
                        continue
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        closed_at[sock] = time.monotonic() - started
                time.sleep(0.25)
            # Meanwhile a new client is served, and so is a request whose body arrives in time.
            assert httpx.get(f"{server.endpoint}/api/v1/health", timeout=10).status_code == 200
            for sock in stalled + dripping:
                answer = _read_all(sock, time.monotonic() + BODY_TIMEOUT + 10)
                assert answer, "the server sent nothing (and did not close the connection)"
                status, headers, body = _parse_answer(answer)
                assert status == "HTTP/1.1 408 Request Timeout", answer[:200]
                assert headers["connection"] == "close"
                error = _assert_envelope(body, "validation_error", "body_timeout")
                assert error["details"] == {"timeout_seconds": BODY_TIMEOUT}
                assert error["request_id"] == headers["x-request-id"]
            assert all(at < BODY_TIMEOUT + 8 for at in closed_at.values()), closed_at
        finally:
            for sock in stalled + dripping:
                sock.close()
        assert httpx.get(f"{server.endpoint}/api/v1/health", timeout=10).status_code == 200
        logs = server.logs()
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs, logs[-3000:]


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Big: " + b"a" * 200_000 + b"\r\n",  # one long line, sent in one piece
        b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(100)),  # many lines adding up
    ],
    ids=["one-long-header", "many-headers"],
)
def test_a_request_head_over_the_limit_is_431_and_the_connection_closed(
    edge_server: ServerProcess, headers: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", edge_server.port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server may close before it has read everything
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\n" + headers)
            sock.sendall(b"X-More: " + b"c" * 300_000)  # and it does not wait for the end of the head
        answer = _read_all(sock, time.monotonic() + 10)
    status, response_headers, body = _parse_answer(answer)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large", answer[:200]
    assert response_headers["connection"] == "close"
    error = _assert_envelope(body, "validation_error", "headers_too_large")
    assert error["details"] == {"max_bytes": 64 * 1024}
    # Below the limit, a large head is still served.
    response = httpx.get(f"{edge_server.endpoint}/api/v1/health", headers={"X-Big": "a" * 50_000}, timeout=10)
    assert response.status_code == 200


def test_sigterm_ends_requests_still_waiting_for_their_body_without_a_traceback(tmp_path: Path) -> None:
    env = {"AEGIS_SHUTDOWN_TIMEOUT_SECONDS": "2"}
    server = ServerProcess(sqlite_url(tmp_path), tmp_path / "server.log", env=env, log_level="info").start()
    socks: list[socket.socket] = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(SLOW_BODY_HEAD)
            socks.append(sock)
        assert httpx.get(f"{server.endpoint}/api/v1/health", timeout=10).status_code == 200
        time.sleep(0.3)  # every request has started (and is waiting for its body)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=30)
        left = _wait_closed(socks, time.monotonic() + 5)
    finally:
        for sock in socks:
            sock.close()
        server.kill()
    logs = server.logs()
    assert code == 0, logs[-3000:]
    assert not left, f"{len(left)} connections were not closed"
    assert "Exception in ASGI application" not in logs and "Traceback" not in logs, logs[-3000:]
    assert "aegis-server stopped (SIGTERM): graceful shutdown complete" in logs


# ---------------------------------------------------------------------------------------------
# Finding 10: protocol-level 400s and SIGTERM (the server process)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello to a plain-HTTP port\r\n\r\n",
        b"POST /api/v1/governance/propose HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: edge\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
    ids=["header-without-colon", "tls-on-http", "bad-chunk-size", "two-content-lengths"],
)
def test_protocol_level_400_is_the_json_error_envelope(edge_server: ServerProcess, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", edge_server.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request", answer[:300]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = _assert_envelope(json.loads(body), "validation_error", "bad_request")
    assert "HTTP" in error["message"]
    assert error["request_id"] == headers["x-request-id"] and error["request_id"].startswith("req_")


def test_sigterm_exits_0_after_a_graceful_shutdown_with_its_log_flushed(tmp_path: Path) -> None:
    server = ServerProcess(sqlite_url(tmp_path), tmp_path / "server.log", log_level="info").start()
    try:
        assert httpx.get(f"{server.endpoint}/api/v1/health", timeout=10).status_code == 200
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=30)
    finally:
        server.kill()
    logs = server.logs()
    assert code == 0, logs[-3000:]
    for line in ("Shutting down", "Application shutdown complete", "Finished server process"):
        assert line in logs, logs[-3000:]
    assert "aegis-server stopped (SIGTERM): graceful shutdown complete" in logs
    assert "Traceback" not in logs


# ---------------------------------------------------------------------------------------------
# Finding 9: readiness under storage failure (the ASGI app; SQLite and PostgreSQL)
# ---------------------------------------------------------------------------------------------

SECRET = "edge-test-secret-of-at-least-16-bytes"


def _settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db_url": db_url,
        "policy_paths": (POLICY,),
        "secret": SECRET,
        "rate_limit_per_minute": 0,
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def _served(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(settings, run_background_tasks=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aegis", timeout=30) as client:
            yield app, client


def _proposal(note: str = "edge") -> dict[str, Any]:
    return {"actor": {"id": "agent-1"}, "action": {"capability": "rel.allow", "parameters": {"note": note}}}


async def _prepare(db_url: str) -> str:
    """A migrated database with an admin key and one decision; the key."""
    async with _served(_settings(db_url)) as (app, client):
        key, _ = await app.state.store.create_api_key("edge-admin", ["admin"])
        response = await client.post("/api/v1/governance/propose", json=_proposal(), headers=_auth(key))
        assert response.status_code == 200, response.text
        assert (await client.get("/api/v1/ready")).status_code == 200
    return str(key)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _assert_not_ready(client: httpx.AsyncClient, cause: str) -> None:
    response = await client.get("/api/v1/ready")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = _assert_envelope(response.json(), "server_error", "unavailable")
    store = error["details"]["checks"]["store"]
    assert (store["ok"], store["cause"]) == (False, cause), store
    assert store["message"] in error["message"]


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def test_ready_is_503_and_the_log_names_the_cause_when_sqlite_is_read_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "aegis.db"
    key = await _prepare(f"sqlite+aiosqlite:///{path}")
    # The same file opened read-only: what SQLite does with a file it cannot open for writing (a
    # read-only mount, a file the server's user may not write).
    read_only = _settings(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true", db_migrate=False)
    with caplog.at_level(logging.INFO, logger="aegis_server"):
        async with _served(read_only) as (_, client):
            assert (await client.get("/api/v1/health")).status_code == 200  # alive, but not ready:
            await _assert_not_ready(client, "read_only")
            response = await client.post("/api/v1/governance/propose", json=_proposal(), headers=_auth(key))
            assert response.status_code == 503, response.text
            error = _assert_envelope(response.json(), "server_error", "unavailable")
            assert error["details"] == {"cause": "read_only"}
            assert "read-only" in error["message"]
    assert _logged(caplog, "database error on POST /api/v1/governance/propose: the database is read-only")
    assert _logged(caplog, "not ready: store (the database is read-only)")


async def test_ready_is_503_and_the_log_names_the_cause_when_sqlite_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "aegis.db"
    key = await _prepare(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")  # no free pages left inside the file

    # Every connection may not grow the file past its size when it connects: a disk with no space left.
    def no_room(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA page_count")
        pages = int(cursor.fetchone()[0])
        cursor.execute(f"PRAGMA max_page_count={pages}")
        cursor.close()

    event.listen(Engine, "connect", no_room)
    try:
        with caplog.at_level(logging.INFO, logger="aegis_server"):
            async with _served(_settings(f"sqlite+aiosqlite:///{path}", db_migrate=False)) as (_, client):
                assert (await client.get("/api/v1/health")).status_code == 200
                await _assert_not_ready(client, "disk_full")
                response = await client.post(
                    "/api/v1/governance/propose", json=_proposal("x" * 20_000), headers=_auth(key)
                )
                assert response.status_code == 503, response.text
                assert _assert_envelope(response.json(), "server_error", "unavailable")["details"] == {
                    "cause": "disk_full"
                }
    finally:
        event.remove(Engine, "connect", no_room)
    assert _logged(caplog, "database error on POST /api/v1/governance/propose: disk full")
    # The large probe row was rolled back: the file did not grow.
    with sqlite3.connect(path) as conn:
        assert (
            conn.execute("SELECT count(*) FROM server_settings WHERE name = 'aegis.readiness_probe'").fetchone()[0] == 0
        )


async def test_ready_commits_a_heartbeat_of_constant_size(tmp_path: Path) -> None:
    path = tmp_path / "aegis.db"
    await _prepare(f"sqlite+aiosqlite:///{path}")

    def heartbeat() -> tuple[list[tuple[str, str]], int]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name, value FROM server_settings WHERE name LIKE 'aegis.readiness%'").fetchall()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return rows, int(conn.execute("PRAGMA page_count").fetchone()[0])

    async with _served(_settings(f"sqlite+aiosqlite:///{path}", db_migrate=False)) as (_, client):
        assert (await client.get("/api/v1/ready")).status_code == 200
        first, pages = heartbeat()
        seen = {first[0][1]} if first else set()
        for _ in range(3):
            await asyncio.sleep(probe_module.PROBE_CACHE_SECONDS + 0.05)
            assert (await client.get("/api/v1/ready")).status_code == 200
            rows, now_pages = heartbeat()
            # One committed row, rewritten in place: the probe really writes, and the file does not grow.
            assert [name for name, _ in rows] == ["aegis.readiness_heartbeat"], rows
            assert len(rows[0][1]) == len(first[0][1]) and now_pages == pages
            seen.add(rows[0][1])
        assert len(seen) == 4  # one write per probe, at most one probe a second


@contextlib.contextmanager
def _small_filesystem(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted at `folder` (root in a container); skips when it cannot be mounted."""
    folder.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill ({exc})")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10, check=False)


def _fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem has no space left."""
    block = b"\0" * 65536
    with path.open("wb") as out:
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        with contextlib.suppress(OSError):
            os.fsync(out.fileno())


async def test_ready_notices_a_full_disk_before_any_request_fails_and_while_it_stays_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _small_filesystem(tmp_path / "disk", 8) as disk:
        path = disk / "aegis.db"
        key = await _prepare(f"sqlite+aiosqlite:///{path}")
        with caplog.at_level(logging.INFO, logger="aegis_server"):
            async with _served(_settings(f"sqlite+aiosqlite:///{path}", db_migrate=False)) as (app, client):
                assert (await client.get("/api/v1/ready")).status_code == 200
                with contextlib.suppress(OSError):
                    _fill(disk / "filler")  # something else on the machine fills the disk
                try:
                    await asyncio.sleep(probe_module.PROBE_CACHE_SECONDS + 0.05)
                    # No request has failed yet: the probe alone says so.
                    await _assert_not_ready(client, "disk_full")
                    # The probe found it itself (no failed request is remembered): it holds while the disk is full.
                    health = app.state.service.storage
                    assert health._failure is None
                    await asyncio.sleep(probe_module.PROBE_CACHE_SECONDS + 0.05)
                    await _assert_not_ready(client, "disk_full")
                finally:
                    (disk / "filler").unlink()
                await asyncio.sleep(probe_module.PROBE_CACHE_SECONDS + 0.05)
                assert (await client.get("/api/v1/ready")).status_code == 200
                response = await client.post("/api/v1/governance/propose", json=_proposal(), headers=_auth(key))
                assert response.status_code == 200, response.text
    assert _logged(caplog, "not ready: store (disk full")


@pytest.mark.postgres
async def test_ready_is_503_and_the_log_names_the_cause_when_postgresql_is_read_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with postgres_database() as db_url:
        key = await _prepare(db_url)
        name = make_url(db_url).database
        async with _served(_settings(db_url, db_migrate=False)) as (_, client):
            assert (await client.get("/api/v1/ready")).status_code == 200
            # The operator (or a failover to a standby) makes the database read-only; sessions reconnect.
            admin = await asyncpg.connect(make_url(db_url).set(drivername="postgresql").render_as_string(False))
            try:
                await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                    "AND pid <> pg_backend_pid()",
                    name,
                )
            finally:
                await admin.close()
            await asyncio.sleep(1.1)  # past the probe's 1 s cache
            with caplog.at_level(logging.INFO, logger="aegis_server"):
                response = await client.post("/api/v1/governance/propose", json=_proposal(), headers=_auth(key))
                assert response.status_code == 503, response.text
                error = _assert_envelope(response.json(), "server_error", "unavailable")
                assert error["details"] == {"cause": "read_only"}
                await _assert_not_ready(client, "read_only")
        assert _logged(caplog, "database error on POST /api/v1/governance/propose: the database is read-only")


# ---------------------------------------------------------------------------------------------
# Finding 10: the contract (the ASGI app)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with InProcessServer(
        [POLICY], db_url=sqlite_url(tmp_path), secret=SECRET, run_background_tasks=False, rate_limit_per_minute=0
    ) as server:
        yield server.async_http_client()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/api/v1/capabilities", ["GET", "POST"]),
        ("DELETE", "/api/v1/capabilities", ["GET", "POST"]),
        ("PATCH", "/api/v1/policies", ["GET", "POST"]),
        ("POST", "/api/v1/policies/some-policy", ["DELETE", "GET", "PUT"]),
        ("GET", "/api/v1/governance/propose", ["POST"]),
        # A literal path is its own resource, although /policies/{name} matches it too (as documented).
        ("OPTIONS", "/api/v1/policies/validate", ["POST"]),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    app_client: httpx.AsyncClient, method: str, path: str, allowed: list[str]
) -> None:
    response = await app_client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == ", ".join(allowed)
    error = _assert_envelope(response.json(), "validation_error", "method_not_allowed")
    assert error["details"] == {"allowed": allowed}
    assert error["request_id"] == response.headers["x-request-id"]
    for other in allowed:  # and each method listed is served (no 405) on that path
        assert (await app_client.request(other, path)).status_code != 405, other
    document = (await app_client.get("/openapi.json")).json()
    if path in document["paths"]:  # and is what the OpenAPI document lists for it
        assert sorted(m.upper() for m in document["paths"][path]) == allowed


async def test_openapi_documents_200_and_201_of_the_create_or_replace_routes(app_client: httpx.AsyncClient) -> None:
    document = (await app_client.get("/openapi.json")).json()
    for path, method, model in (
        ("/api/v1/capabilities", "post", "Capability"),
        ("/api/v1/policies/{name}", "put", "Policy"),
    ):
        responses = document["paths"][path][method]["responses"]
        for status in ("200", "201"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{model}"}, (path, status, schema)

    # And the server answers as documented.
    capability = {"name": "edge.cap", "risk_level": "low"}
    assert (await app_client.post("/api/v1/capabilities", json=capability)).status_code == 201
    assert (await app_client.post("/api/v1/capabilities", json=capability)).status_code == 200
    policy = {"name": "edge-policy", "rules": [{"capability": "edge.cap", "outcome": "ALLOW"}]}
    assert (await app_client.put("/api/v1/policies/edge-policy", json=policy)).status_code == 201
    assert (await app_client.put("/api/v1/policies/edge-policy", json=policy)).status_code == 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("risk", False),
        ("risk", True),
        ("risk", "0.5"),
        ("priority", True),
        ("priority", 2.5),
        ("review_timeout_seconds", True),
    ],
)
async def test_a_boolean_or_a_string_is_not_a_number_in_a_rule(
    app_client: httpx.AsyncClient, field: str, value: Any
) -> None:
    rule: dict[str, Any] = {"capability": "rel.escalate", "outcome": "ESCALATE", field: value}
    response = await app_client.post("/api/v1/policies/validate", json={"name": "edge-bool", "rules": [rule]})
    assert response.status_code == 422, response.text
    error = _assert_envelope(response.json(), "validation_error", "invalid_request")
    assert [e["loc"] for e in error["details"]["errors"]] == [["body", "rules", 0, field]]


@pytest.mark.parametrize("value", [0, 1, "true"])
async def test_a_number_or_a_string_is_not_a_boolean(app_client: httpx.AsyncClient, value: Any) -> None:
    response = await app_client.post("/api/v1/policies/validate", json={"name": "edge-flag", "enabled": value})
    assert response.status_code == 422, response.text
    error = _assert_envelope(response.json(), "validation_error", "invalid_request")
    assert [e["loc"] for e in error["details"]["errors"]] == [["body", "enabled"]]
    decision = (await app_client.post("/api/v1/governance/propose", json=_escalation())).json()
    assert decision["outcome"] == "ESCALATE"
    url = f"/api/v1/governance/decisions/{decision['decision_id']}/review"
    response = await app_client.post(url, json={"approve": value})
    assert response.status_code == 422, response.text


def _escalation() -> dict[str, Any]:
    return {"actor": {"id": "agent-1"}, "action": {"capability": "rel.escalate", "parameters": {}}}


async def test_numbers_still_accept_ints_and_floats(app_client: httpx.AsyncClient) -> None:
    rule = {"capability": "rel.escalate", "outcome": "ESCALATE", "risk": 1, "priority": 3, "review_timeout_seconds": 60}
    response = await app_client.post("/api/v1/policies/validate", json={"name": "edge-int", "rules": [rule]})
    assert response.status_code == 200, response.text
    rule["risk"] = 0.25
    rule["review_timeout_seconds"] = 60.0  # an integer, as JSON Schema counts it
    response = await app_client.post("/api/v1/policies/validate", json={"name": "edge-int", "rules": [rule]})
    assert response.status_code == 200, response.text


async def test_an_execution_report_duration_is_not_a_boolean(app_client: httpx.AsyncClient) -> None:
    decision = (await app_client.post("/api/v1/governance/propose", json=_proposal())).json()
    assert decision["outcome"] == "ALLOW"
    url = f"/api/v1/governance/decisions/{decision['decision_id']}/execution"
    response = await app_client.post(url, json={"status": "SUCCESS", "duration_ms": True})
    assert response.status_code == 422, response.text
    response = await app_client.post(url, json={"status": "SUCCESS", "duration_ms": 12})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("digits", [310, 4000, 5000, 100_000])
async def test_an_integer_beyond_a_64_bit_float_is_a_400_in_our_own_words(
    app_client: httpx.AsyncClient, digits: int
) -> None:
    body = b'{"actor": {"id": "agent-1"}, "action": {"capability": "rel.allow", "parameters": {"n": '
    body += b"9" * digits + b"}}}"
    response = await app_client.post(
        "/api/v1/governance/propose", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = _assert_envelope(response.json(), "validation_error", "invalid_json")
    assert f"an integer of {digits} digits" in error["message"]
    assert "int_max_str_digits" not in response.text and "Exceeds the limit" not in response.text


async def test_an_integer_within_a_64_bit_float_is_accepted(app_client: httpx.AsyncClient) -> None:
    body = b'{"actor": {"id": "agent-1"}, "action": {"capability": "rel.allow", "parameters": {"n": '
    body += b"1" + b"0" * 300 + b"}}}"
    response = await app_client.post(
        "/api/v1/governance/propose", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------------------------
# Finding 9, the probe's own behaviour: cheap (cached, shared), remembers what requests met, names causes
# ---------------------------------------------------------------------------------------------


class _FakeStore:
    """A store whose write probe is counted and can be made to fail."""

    def __init__(self) -> None:
        self.probes = 0
        self.fail_with: Exception | None = None

    async def ping(self) -> bool:
        return True


async def test_the_write_probe_is_cached_shared_and_remembers_storage_failures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = _FakeStore()

    async def probe(_store: Any) -> None:
        store.probes += 1
        await asyncio.sleep(0)
        if store.fail_with is not None:
            raise store.fail_with

    monkeypatch.setattr(probe_module, "probe_write", probe)
    now = [100.0]
    health = StorageHealth(store, monotonic=lambda: now[0])  # type: ignore[arg-type]

    # Ten /ready at once and ten more within the second: one probe.
    assert await asyncio.gather(*(health.check() for _ in range(10))) == [None] * 10
    now[0] += 0.5
    assert await health.check() is None
    assert store.probes == 1
    now[0] += 0.6
    assert await health.check() is None
    assert store.probes == 2

    # A request met a full disk: not ready for FAILURE_MEMORY_SECONDS, although the probe passes.
    health.note_failure(describe_database_error(OSError(28, "No space left on device")))
    problem = await health.check()
    assert problem is not None and problem.cause == "disk_full"
    now[0] += probe_module.FAILURE_MEMORY_SECONDS + 0.1
    assert await health.check() is None

    # A lost connection is the probe's to judge, not remembered.
    health.note_failure(describe_database_error(ConnectionRefusedError("connection refused")))
    now[0] += 1.1
    assert await health.check() is None


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("driver text that may quote a parameter: 4111 1111 1111 1111")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (_PgError("25006"), "read_only"),
        (_PgError("53100"), "disk_full"),
        (_PgError("57P01"), "unreachable"),
        (ConnectionRefusedError(111, "Connection refused"), "unreachable"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read_only"),
        (sqlite3.OperationalError("database or disk is full"), "disk_full"),
        (sqlite3.OperationalError("database is locked"), "locked"),
        (ValueError("something else"), "database_error"),
    ],
)
def test_database_errors_are_named_without_their_text(error: Exception, cause: str) -> None:
    from sqlalchemy.exc import OperationalError

    wrapped = OperationalError("INSERT INTO audit_records VALUES (?)", {"secret": "4111"}, error)
    problem = describe_database_error(wrapped)
    assert problem.cause == cause, problem
    assert "4111" not in problem.for_log() and "INSERT" not in problem.for_log()


async def test_a_probe_that_does_not_finish_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hangs(_store: Any) -> None:
        await asyncio.sleep(3600)  # a database that never answers

    monkeypatch.setattr(probe_module, "probe_write", hangs)
    monkeypatch.setattr(probe_module, "PROBE_TIMEOUT_SECONDS", 0.05)
    problem = await StorageHealth(_FakeStore()).check()  # type: ignore[arg-type]
    assert problem is not None and problem.cause == "timeout", problem


async def test_key_rate_limits_and_long_poll_waits_are_plain_numbers(tmp_path: Path) -> None:
    """Found by a red-team pass: `"rate_limit_per_minute": false` meant no limit at all, `"5"` was 5, and
    `?wait=inf` was accepted."""
    from aegis_server.inprocess import InProcessServer

    async with InProcessServer(db_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", policy_paths=[]) as server:
        client = server.async_http_client()
        base = {"name": "limited", "scopes": ["audit:read"]}
        for bad in (False, True, "5", 5.5):
            created = await client.post("/api/v1/keys", json={**base, "rate_limit_per_minute": bad})
            assert created.status_code == 422, (bad, created.text)
        created = await client.post("/api/v1/keys", json={**base, "rate_limit_per_minute": 5})
        assert created.status_code == 201, created.text
        key_id = created.json()["key_id"]
        patched = await client.patch(f"/api/v1/keys/{key_id}", json={"rate_limit_per_minute": False})
        assert patched.status_code == 422, patched.text
        for wait in ("inf", "1e400", "nan"):
            answer = await client.get("/api/v1/governance/decisions/dec_missing", params={"wait": wait})
            assert answer.status_code == 422, (wait, answer.text)
