"""`POST /api/v1/governance/propose` is served by a hot route in front of FastAPI's stack (the hot path);
the same endpoint is mounted on FastAPI's router (a `PlainRoute`, which also documents it), and the two ways
in must answer every request alike. Each request below goes to both, and the status, headers that matter and
envelope (everything but the request id) must match."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import proposal

from aegis_server.api.governance import PROPOSE_PATH
from aegis_server.inprocess import InProcessServer


@contextlib.contextmanager
def _routed_only(server: InProcessServer) -> Iterator[None]:
    """Take the hot route out, so FastAPI's router serves the endpoint."""
    hot = server.app.hot_routes.pop(("POST", PROPOSE_PATH))  # KeyError: the hot route is not mounted
    try:
        yield
    finally:
        server.app.hot_routes[("POST", PROPOSE_PATH)] = hot


def _comparable(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if "error" in body:
        body["error"].pop("request_id")
    else:
        body = {key: body[key] for key in ("outcome", "reason", "risk_score", "constraints", "policy_ids")}
    return {
        "status": response.status_code,
        "content-type": response.headers.get("content-type"),
        "www-authenticate": response.headers.get("www-authenticate"),
        "idempotent-replayed": response.headers.get("idempotent-replayed"),
        "body": body,
    }


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


_CASES: list[tuple[str, Any, dict[str, str]]] = [
    ("allow", proposal(), {}),
    ("deny by default", proposal("shell.exec", command="rm -rf /"), {}),
    ("unknown capability", proposal("no.such"), {}),
    ("invalid parameters", proposal("database.query", query=7), {}),
    ("missing actor", {"action": {"capability": "database.query", "parameters": {}}}, {}),
    ("extra field", {**proposal(), "surprise": 1}, {}),
    ("not an object", [1, 2], {}),
    ("null body", None, {}),
    ("bad capability name", proposal("bad name"), {}),
    ("long idempotency key", proposal(), {"Idempotency-Key": "k" * 256}),
    ("long key and bad body", {"actor": {}}, {"Idempotency-Key": "k" * 256}),
    ("too deep", {**proposal(), "context": {"metadata": _deep(80)}}, {}),
    ("bad token", {**proposal(), "confirmation_token": "not-a-token"}, {}),
]


@pytest.mark.parametrize(("name", "body", "headers"), _CASES, ids=[c[0] for c in _CASES])
async def test_both_routes_answer_alike(server: InProcessServer, name: str, body: Any, headers: dict[str, str]) -> None:
    client = server.async_http_client()
    fast = await client.post(PROPOSE_PATH, json=body, headers=headers)
    with _routed_only(server):
        routed = await client.post(PROPOSE_PATH, json=body, headers=headers)
    assert _comparable(fast) == _comparable(routed), name


@pytest.mark.parametrize(
    ("name", "headers", "content"),
    [
        ("no key", {"Authorization": ""}, b"{}"),
        ("unknown key", {"Authorization": "Bearer aegis_sk_" + "x" * 43}, b"{}"),
        ("other scheme", {"Authorization": "Basic abc"}, b"{}"),
        ("empty body", {}, b""),
        ("duplicate keys", {}, b'{"actor": {"id": "a"}, "actor": {"id": "b"}}'),
        ("not json", {}, b"{nope"),
    ],
)
async def test_auth_and_body_errors_alike(
    server: InProcessServer, name: str, headers: dict[str, str], content: bytes
) -> None:
    client = server.async_http_client()
    sent = {"Content-Type": "application/json", **headers}
    fast = await client.post(PROPOSE_PATH, content=content, headers=sent)
    with _routed_only(server):
        routed = await client.post(PROPOSE_PATH, content=content, headers=sent)
    assert _comparable(fast) == _comparable(routed), name


async def test_idempotent_replay_alike(server: InProcessServer) -> None:
    client = server.async_http_client()
    first = await client.post(PROPOSE_PATH, json=proposal(), headers={"Idempotency-Key": "same"})
    with _routed_only(server):
        routed = await client.post(PROPOSE_PATH, json=proposal(), headers={"Idempotency-Key": "same"})
        conflict_routed = await client.post(PROPOSE_PATH, json=proposal(actor="b"), headers={"Idempotency-Key": "same"})
    fast = await client.post(PROPOSE_PATH, json=proposal(), headers={"Idempotency-Key": "same"})
    conflict_fast = await client.post(PROPOSE_PATH, json=proposal(actor="b"), headers={"Idempotency-Key": "same"})
    assert fast.json() == routed.json() == first.json()
    assert fast.headers["idempotent-replayed"] == routed.headers["idempotent-replayed"] == "true"
    assert _comparable(conflict_fast) == _comparable(conflict_routed)
    assert conflict_fast.status_code == 409


def test_openapi_documents_what_the_endpoint_checks(server: InProcessServer) -> None:
    """The one endpoint is documented from its declarations: the Proposal body, the Idempotency-Key header
    (at most 255 characters, as a longer one is a 422 above), the bearer key, and the Decision answer."""
    operation = server.app.openapi()["paths"][PROPOSE_PATH]["post"]
    assert operation["operationId"] == "propose_api_v1_governance_propose_post"
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Proposal"
    }
    assert operation["requestBody"]["required"] is True
    [header] = operation["parameters"]
    assert (header["name"], header["in"], header["required"]) == ("Idempotency-Key", "header", False)
    assert {"type": "string", "maxLength": 255} in header["schema"]["anyOf"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Decision"
    }
    assert sorted(operation["responses"]) == ["200", "400", "401", "403", "404", "409", "413", "415", "422", "429"]
