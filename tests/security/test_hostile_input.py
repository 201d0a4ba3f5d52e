"""Hostile input over a real socket, on SQLite and on PostgreSQL: oversized bodies (declared and chunked),
deep nesting, huge strings, invalid UTF-8, wrong content types, duplicate keys (also after Unicode
normalisation), non-finite numbers, NUL characters and unpaired surrogates, forged token fields. Each is
answered with its documented 4xx envelope; nothing is a 5xx, nothing reaches the log as a traceback,
and the audit chain still verifies afterwards."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reliability._support import ServerProcess, StoreSnapshot, create_key, postgres_database, sqlite_url

PROPOSE = "/api/v1/governance/propose"


def _proposal(actor: str = '"agent"', parameters: str = "{}", metadata: str = "{}", extra: str = "") -> bytes:
    text = (
        f'{{"actor":{{"id":{actor}}},"action":{{"capability":"rel.allow","parameters":{parameters}}},'
        f'"context":{{"metadata":{metadata}}}{extra}}}'
    )
    return text.encode("utf-8")


FORGED_EXPIRY = ',"confirmation_token":"ct1.dec_x.999999999999.' + "A" * 43 + '"'

# (case id, body bytes, content type, expected status, expected code)
BODIES: list[tuple[str, bytes, str | None, int, str]] = [
    ("oversized", b'{"x":"' + b"a" * (1024 * 1024) + b'"}', "application/json", 413, "body_too_large"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json", 422, "too_deep"),
    ("deep objects", b'{"a":' * 40 + b"1" + b"}" * 40, "application/json", 422, "too_deep"),
    (
        "huge parameter",
        _proposal(parameters='{"note":"' + "a" * 90_000 + '"}'),
        "application/json",
        422,
        "parameters_too_large",
    ),
    ("huge actor id", _proposal(actor='"' + "a" * 500_000 + '"'), "application/json", 422, "invalid_request"),
    ("invalid utf-8", b'{"actor":{"id":"\xff\xfe"}}', "application/json", 400, "invalid_json"),
    ("truncated json", b'{"actor": ', "application/json", 400, "invalid_json"),
    ("not json", b"hello", "application/json", 400, "invalid_json"),
    ("text/plain", _proposal(), "text/plain", 415, "unsupported_media_type"),
    ("form", b"actor=agent", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("multipart", _proposal(), "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
    ("xml", b"<proposal/>", "application/xml", 415, "unsupported_media_type"),
    ("no content type", _proposal(), None, 415, "unsupported_media_type"),
    ("duplicate key", _proposal(actor='"a","id":"b"'), "application/json", 400, "duplicate_keys"),
    (
        "duplicate after NFC",
        _proposal(metadata='{"caf\\u00e9":1,"cafe\\u0301":2}'),
        "application/json",
        400,
        "duplicate_keys",
    ),
    ("NaN", _proposal(parameters='{"n":NaN}'), "application/json", 400, "invalid_json"),
    ("Infinity", _proposal(metadata='{"x":-Infinity}'), "application/json", 400, "invalid_json"),
    ("1e400", _proposal(metadata='{"x":1e400}'), "application/json", 400, "invalid_json"),
    ("5000-digit integer", _proposal(metadata='{"x":' + "9" * 5000 + "}"), "application/json", 400, "invalid_json"),
    ("NUL in actor", _proposal(actor='"a\\u0000b"'), "application/json", 400, "invalid_json"),
    ("NUL in metadata", _proposal(metadata='{"x":"\\u0000"}'), "application/json", 400, "invalid_json"),
    ("surrogate in metadata", _proposal(metadata='{"x":"\\ud800"}'), "application/json", 400, "invalid_json"),
    ("surrogate key", _proposal(metadata='{"\\udfff":1}'), "application/json", 400, "invalid_json"),
    ("array body", b"[]", "application/json", 422, "invalid_request"),
    ("empty object", b"{}", "application/json", 422, "invalid_request"),
    ("unknown field", _proposal(extra=',"admin":true'), "application/json", 422, "invalid_request"),
    ("token past year 9999", _proposal(extra=FORGED_EXPIRY), "application/json", 409, "confirmation_invalid"),
]

# (case id, method, path and query, expected status, expected code)
URLS: list[tuple[str, str, str, int, str]] = [
    ("NUL in decision id", "GET", "/api/v1/governance/decisions/dec_%00", 422, "invalid_request"),
    ("NUL in trail id", "GET", "/api/v1/audit/log/dec_%00", 422, "invalid_request"),
    ("NUL in review id", "POST", "/api/v1/governance/decisions/%00/review", 422, "invalid_request"),
    ("NUL in a filter", "GET", "/api/v1/governance/decisions?actor_id=a%00", 422, "invalid_request"),
    ("NUL in an audit filter", "GET", "/api/v1/audit/log?session_id=%00", 422, "invalid_request"),
    ("bad time filter", "GET", "/api/v1/governance/decisions?since=yesterday", 422, "invalid_request"),
    ("bad cursor", "GET", "/api/v1/audit/log?cursor=%FF%FE", 422, "invalid_request"),
    ("huge limit", "GET", "/api/v1/governance/decisions?limit=99999999999999999999", 422, "invalid_request"),
    ("invalid utf-8 in path", "GET", "/api/v1/governance/decisions/%ED%A0%80", 404, "not_found"),
    ("wrong method", "DELETE", PROPOSE, 405, "method_not_allowed"),
]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    folder: Path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    with contextlib.ExitStack() as stack:
        url = sqlite_url(folder) if request.param == "sqlite" else stack.enter_context(postgres_database())
        with ServerProcess(url, folder / "server.log", log_level="info") as server:
            yield server, create_key(url, "hostile", ["admin"])
        assert "Traceback" not in server.logs(), server.logs()[-4000:]
        StoreSnapshot(url).assert_consistent()


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "code", "message", "request_id", "details"}
    return dict(body["error"])


@pytest.mark.parametrize(("case", "body", "content_type", "status", "code"), BODIES, ids=[b[0] for b in BODIES])
def test_hostile_bodies_get_their_documented_4xx(
    served: tuple[ServerProcess, str], case: str, body: bytes, content_type: str | None, status: int, code: str
) -> None:
    server, key = served
    headers = {"Authorization": f"Bearer {key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = httpx.post(f"{server.endpoint}{PROPOSE}", content=body, headers=headers, timeout=30)
    assert (response.status_code, _error(response)["code"]) == (status, code), response.text[:300]


@pytest.mark.parametrize(("case", "method", "path", "status", "code"), URLS, ids=[u[0] for u in URLS])
def test_hostile_urls_get_their_documented_4xx(
    served: tuple[ServerProcess, str], case: str, method: str, path: str, status: int, code: str
) -> None:
    server, key = served
    body = b'{"approve": true}' if method == "POST" else None
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    response = httpx.request(method, f"{server.endpoint}{path}", content=body, headers=headers, timeout=30)
    assert (response.status_code, _error(response)["code"]) == (status, code), response.text[:300]


def _raw(server: ServerProcess, request: bytes) -> bytes:
    """Send raw bytes on a fresh connection and read until the server closes it or answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_chunked_body_over_the_limit_is_413_while_reading(served: tuple[ServerProcess, str]) -> None:
    server, key = served
    chunk = b"a" * 65536
    head = (
        f"POST {PROPOSE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    answer = _raw(server, head + chunks)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split(b" ")[1] == b"413", answer[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_too_large"


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(served: tuple[ServerProcess, str]) -> None:
    server, key = served
    head = (
        f"POST {PROPOSE} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
    ).encode()
    answer = _raw(server, head + b"{")
    assert answer.split(b" ")[1] == b"413", answer[:300]


def test_the_server_still_decides_after_the_abuse(served: tuple[ServerProcess, str]) -> None:
    server, key = served
    response = httpx.post(
        f"{server.endpoint}{PROPOSE}",
        content=_proposal(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200 and response.json()["outcome"] == "ALLOW"


def test_a_catastrophic_regex_in_a_policy_cannot_stall_the_server(served: tuple[ServerProcess, str]) -> None:
    """`matches('^(a+)+$')` in a condition, and the same `pattern` in a parameter schema, against 30,000
    characters: a backtracking engine would never finish (it took seconds for 25 characters); RE2 answers
    at once. The client's timeout is a hang detector, not a timing assertion."""
    server, key = served
    with httpx.Client(base_url=server.endpoint, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        capability = {"name": "redos.check", "risk_level": "low"}
        assert http.post("/api/v1/capabilities", json=capability).status_code in (200, 201)
        rule = {"capability": "redos.check", "condition": "action.parameters.q.matches('^(a+)+$')", "outcome": "DENY"}
        allow = {"capability": "redos.check", "outcome": "ALLOW", "priority": -1}
        policy = {"name": "redos", "rules": [rule, allow]}
        assert http.put("/api/v1/policies/redos", json=policy).status_code in (200, 201)
        for text, outcome in (("a" * 30_000 + "!", "ALLOW"), ("a" * 30_000, "DENY")):
            body = {"actor": {"id": "agent"}, "action": {"capability": "redos.check", "parameters": {"q": text}}}
            response = http.post(PROPOSE, json=body)
            assert response.status_code == 200, response.text[:300]
            assert response.json()["outcome"] == outcome
        # The same in a capability's parameter_schema: the parameters are refused, at once.
        schema = {"type": "object", "properties": {"q": {"type": "string", "pattern": "^(a+)+$"}}}
        capability = {"name": "redos.schema", "risk_level": "low", "parameter_schema": schema}
        assert http.post("/api/v1/capabilities", json=capability).status_code in (200, 201)
        body = {
            "actor": {"id": "agent"},
            "action": {"capability": "redos.schema", "parameters": {"q": "a" * 30_000 + "!"}},
        }
        response = http.post(PROPOSE, json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_parameters")
        # And as patternProperties, which matches the keys the caller chose.
        schema = {
            "type": "object",
            "patternProperties": {"^(a+)+$": {"type": "integer"}},
            "additionalProperties": False,
        }
        capability = {"name": "redos.keys", "risk_level": "low", "parameter_schema": schema}
        assert http.post("/api/v1/capabilities", json=capability).status_code in (200, 201)
        body = {"actor": {"id": "agent"}, "action": {"capability": "redos.keys", "parameters": {"a" * 30_000 + "!": 1}}}
        response = http.post(PROPOSE, json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_parameters")
        # A pattern RE2 cannot run (backreferences, lookarounds) is refused when the policy is saved.
        bad = {"name": "redos-bad", "rules": [{**rule, "condition": "action.parameters.q.matches('(?=a)')"}]}
        response = http.put("/api/v1/policies/redos-bad", json=bad)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_policy")
