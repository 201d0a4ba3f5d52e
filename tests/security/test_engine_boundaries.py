"""Issue 13, findings 5, 6 and 8, against a real `aegis-server serve` on loopback (SQLite).

- 5: a capability schema whose `$ref` points at a URL or a file is refused when it is saved (422), and
  the server never connects to the URL: before, it was accepted and the first proposal fetched it on
  the event loop (a listener that never answered froze `/health` for 15 s+; `/etc/passwd` was opened).
- 6: the finding's condition over 3,000 recipients is denied with `evaluation_budget_exceeded` without
  being evaluated, and `/health` answers meanwhile: before, one proposal took 7.4 s and stalled the server.
- 8: an `x-sensitive` card number is stored as a keyed HMAC: sha256 of the value does not reproduce it,
  and two servers with different secrets store different values (before: a bare `sha256:`, reversed in
  0.12 s by hashing every card number of the issuer's range).

The timings asserted are generous bounds (the finding's were seconds); exact figures live in bench/.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_sdk._wire.canonical import canonical_json
from reliability._support import ServerProcess, create_key, sqlite_url

PROPOSE = "/api/v1/governance/propose"
CAPABILITIES = "/api/v1/capabilities"
FINDING_6_CONDITION = "to.exists(r, to.exists(s, r == s + 'x'))"

POLICY_FILE = """
capabilities:
  - name: mail.send
    risk_level: low
    parameter_schema:
      type: object
      properties:
        to: {type: array, items: {type: string}}
  - name: pay.card
    risk_level: low
    parameter_schema:
      type: object
      properties:
        amount: {type: number}
        card_number: {type: string, pattern: "^[0-9]{12,19}$", x-sensitive: true}
policies:
  - name: boundaries
    rules:
      - id: no-lookalikes
        capability: mail.send
        outcome: ALLOW
        condition: "action.parameters.to.exists(r, action.parameters.to.exists(s, r == s + 'x')) == false"
      - id: pay
        capability: pay.card
        outcome: ALLOW
"""


def _server(folder: Path, secret: str) -> ServerProcess:
    policy = folder / "boundaries.yaml"
    policy.write_text(POLICY_FILE)
    return ServerProcess(
        sqlite_url(folder), folder / "server.log", policy_paths=(policy,), env={"AEGIS_SECRET": secret}
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("engine-boundaries")
    with _server(folder, "secret-A-" + "a" * 32) as server:
        key = create_key(server.db_url, "boundaries", ["admin"])
        yield server, {"Authorization": f"Bearer {key}"}
        assert "Traceback" not in server.logs(), server.logs()[-4000:]


def _propose(server: ServerProcess, headers: dict[str, str], capability: str, parameters: dict[str, Any]) -> Any:
    body = {"actor": {"id": "agent-1"}, "action": {"capability": capability, "parameters": parameters}}
    return httpx.post(f"{server.endpoint}{PROPOSE}", json=body, headers=headers, timeout=60)


# -- finding 5 ---------------------------------------------------------------------------------------


def test_finding_5_remote_and_file_refs_are_refused_at_save_and_nothing_is_fetched(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, headers = served
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        for ref in (f"http://127.0.0.1:{port}/schema.json", "file:///etc/passwd", "other.json#/x"):
            capability = {
                "name": "ssrf.probe",
                "risk_level": "low",
                "parameter_schema": {"type": "object", "properties": {"x": {"$ref": ref}}},
            }
            response = httpx.post(f"{server.endpoint}{CAPABILITIES}", json=capability, headers=headers, timeout=30)
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_policy"
            assert "/properties/x/$ref" in error["message"] and "only local references" in error["message"]
        # Nothing was registered, so nothing can be validated against it later either.
        probe = _propose(server, headers, "ssrf.probe", {"x": 1})
        assert probe.status_code == 404
        with pytest.raises(TimeoutError):
            listener.accept()  # the server never connected to the URL
        # /health is answered at once: nothing is stuck on the listener.
        assert httpx.get(f"{server.endpoint}/api/v1/health", timeout=5).status_code == 200
    finally:
        listener.close()

    local = {
        "name": "local.refs",
        "risk_level": "low",
        "parameter_schema": {
            "$defs": {"money": {"type": "number", "minimum": 0}},
            "type": "object",
            "properties": {"amount": {"$ref": "#/$defs/money"}},
        },
    }
    response = httpx.post(f"{server.endpoint}{CAPABILITIES}", json=local, headers=headers, timeout=30)
    assert response.status_code in (200, 201), response.text
    refused = _propose(server, headers, "local.refs", {"amount": -1})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_parameters"


# -- finding 6 ---------------------------------------------------------------------------------------


def test_finding_6_a_costly_condition_is_denied_within_budget_and_health_keeps_answering(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, headers = served
    recipients = [f"r{i}@x.io" for i in range(3000)]  # ~39 KB: under max_parameters_bytes
    health_latencies: list[float] = []
    results: list[httpx.Response] = []
    finished = threading.Event()

    def costly() -> None:
        try:
            for _ in range(3):
                results.append(_propose(server, headers, "mail.send", {"to": recipients}))
        finally:
            finished.set()

    started = time.monotonic()
    worker = threading.Thread(target=costly)
    worker.start()
    with httpx.Client(timeout=10) as client:
        while not finished.is_set() or len(health_latencies) < 5:
            sent = time.monotonic()
            assert client.get(f"{server.endpoint}/api/v1/health").status_code == 200
            health_latencies.append(time.monotonic() - sent)
            if time.monotonic() - started > 60:
                break
    worker.join(timeout=60)
    elapsed = time.monotonic() - started

    assert len(results) == 3
    for response in results:
        assert response.status_code == 200, response.text
        decision = response.json()
        assert decision["outcome"] == "DENY"
        assert "evaluation_budget_exceeded" in decision["reason"]
        assert "boundaries/no-lookalikes" in decision["reason"]
    # Three proposals that each took 7.4 s before: generous bounds, the measured figures are in bench/.
    assert elapsed < 10, elapsed
    assert max(health_latencies) < 2.0, health_latencies

    small = _propose(server, headers, "mail.send", {"to": ["a@x.io", "b@x.io", "a@x.iox"]})
    assert small.json()["outcome"] == "DENY" and "evaluation_budget_exceeded" not in small.json()["reason"]
    fine = _propose(server, headers, "mail.send", {"to": ["a@x.io", "b@x.io"]})
    assert fine.json()["outcome"] == "ALLOW", fine.json()["reason"]


# -- finding 8 ---------------------------------------------------------------------------------------


def _stored_card(server: ServerProcess, headers: dict[str, str], card: str) -> tuple[str, str]:
    decision = _propose(server, headers, "pay.card", {"amount": 12.5, "card_number": card}).json()
    assert decision["outcome"] == "ALLOW", decision
    trail = httpx.get(f"{server.endpoint}/api/v1/audit/log/{decision['decision_id']}", headers=headers, timeout=30)
    assert trail.status_code == 200, trail.text
    proposal = next(r for r in trail.json()["records"] if r["event_type"] == "proposal")
    action = proposal["payload"]["action"]
    return str(action["parameters"]["card_number"]), str(action["params_hash"])


def test_finding_8_sensitive_values_are_keyed_hashes_that_differ_per_secret(
    served: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    server, headers = served
    card = "4111111111111111"
    stored, params_hash = _stored_card(server, headers, card)
    assert card not in stored
    assert stored.startswith("hmac-sha256:")
    bare = hashlib.sha256(canonical_json(card)).hexdigest()
    assert bare not in stored  # the brute force of the finding no longer matches anything
    parameters = {"amount": 12.5, "card_number": card}
    assert params_hash != hashlib.sha256(canonical_json(parameters)).hexdigest()
    # The documented construction: HMAC-SHA256 with a key derived from the server secret.
    value_key = hmac.new(("secret-A-" + "a" * 32).encode(), b"aegis sensitive-values v1", hashlib.sha256).digest()
    assert stored == "hmac-sha256:" + hmac.new(value_key, canonical_json(card), hashlib.sha256).hexdigest()
    assert params_hash == hmac.new(value_key, canonical_json(parameters), hashlib.sha256).hexdigest()

    with _server(tmp_path, "secret-B-" + "b" * 32) as other:
        other_key = create_key(other.db_url, "other", ["admin"])
        other_stored, other_params_hash = _stored_card(other, {"Authorization": f"Bearer {other_key}"}, card)
    assert other_stored.startswith("hmac-sha256:")
    assert other_stored != stored and other_params_hash != params_hash


# -- red team 2: A and B (the cost of a condition), H and I (schema references) ----------------------

POLICIES = "/api/v1/policies"


def _save(server: ServerProcess, headers: dict[str, str], path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.endpoint}{path}", json=body, headers=headers, timeout=30)


def _timed_with_health(
    server: ServerProcess, send: list[tuple[str, dict[str, Any], dict[str, Any]]], headers: dict[str, str]
) -> tuple[list[httpx.Response], list[float], float]:
    """Send each (capability, parameters, metadata) proposal in turn while /health is probed."""
    results: list[httpx.Response] = []
    health: list[float] = []
    finished = threading.Event()

    def costly() -> None:
        try:
            for capability, parameters, metadata in send:
                body = {
                    "actor": {"id": "agent-1"},
                    "action": {"capability": capability, "parameters": parameters},
                    "context": {"metadata": metadata},
                }
                results.append(httpx.post(f"{server.endpoint}{PROPOSE}", json=body, headers=headers, timeout=120))
        finally:
            finished.set()

    started = time.monotonic()
    worker = threading.Thread(target=costly)
    worker.start()
    with httpx.Client(timeout=60) as client:
        while not finished.is_set() or len(health) < 3:
            sent = time.monotonic()
            assert client.get(f"{server.endpoint}/api/v1/health").status_code == 200
            health.append(time.monotonic() - sent)
            if time.monotonic() - started > 120:
                break
    worker.join(timeout=120)
    return results, health, time.monotonic() - started


def test_red_team_a_indexing_a_collection_in_a_loop_over_it_is_denied_within_budget(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    # Each took seconds (42.2 s, 3.4 s, 6.3 s) and stalled /health: the library copies the whole map or list
    # on every `m[k]`, `l[0]` and selection, which the estimate charged 1 unit. The metadata is not under the
    # 64 KiB parameters limit (12,000 flags are ~180 KB).
    server, headers = served
    capability = {
        "name": "red.map",
        "risk_level": "low",
        "parameter_schema": {"type": "object", "properties": {"m": {"type": "object"}, "l": {"type": "array"}}},
    }
    assert _save(server, headers, CAPABILITIES, capability).status_code == 201
    rules = [
        ("flagged", "context.metadata.flags.exists(k, context.metadata.flags[k] == 'block')", "flags"),
        ("bigvalue", "action.parameters.m.exists(k, action.parameters.m[k] > 100000)", "m"),
        ("firstdup", "action.parameters.l.exists(x, action.parameters.l[0] == x + 1)", "l"),
    ]
    policy = {
        "name": "red-map",
        "rules": [
            *(
                {
                    "id": rule_id,
                    "capability": "red.map",
                    "condition": f"has({'context.metadata' if field == 'flags' else 'action.parameters'}.{field}) && "
                    + condition,
                    "outcome": "DENY",
                    "priority": 10,
                }
                for rule_id, condition, field in rules
            ),
            {"id": "ok", "capability": "red.map", "condition": "true", "outcome": "ALLOW", "priority": 1},
        ],
    }
    saved = _save(server, headers, POLICIES, policy)
    assert saved.status_code == 201, saved.text
    send = [
        ("red.map", {}, {"flags": {f"k{i}": "ok" for i in range(12_000)}}),
        ("red.map", {"m": {f"k{i}": i for i in range(4_400)}}, {}),
        ("red.map", {"l": list(range(10_000))}, {}),
    ]
    results, health, elapsed = _timed_with_health(server, send, headers)
    assert len(results) == 3
    for response, (rule_id, _, _) in zip(results, rules, strict=True):
        assert response.status_code == 200, response.text
        decision = response.json()
        assert decision["outcome"] == "DENY", decision["reason"]
        assert "evaluation_budget_exceeded" in decision["reason"] and f"red-map/{rule_id}" in decision["reason"]
    assert elapsed < 20, elapsed  # the three took 52 s before; generous bounds, the figures are in bench/
    assert max(health) < 2.0, health
    # Small data is evaluated as usual.
    few = _propose(server, headers, "red.map", {"m": {"a": 1, "b": 200000}})
    assert few.json()["outcome"] == "DENY" and "red-map/bigvalue" in few.json()["reason"]
    assert "evaluation_budget_exceeded" not in few.json()["reason"]
    assert _propose(server, headers, "red.map", {"m": {"a": 1}}).json()["outcome"] == "ALLOW"


def test_red_team_b_the_budget_holds_for_a_whole_proposal(served: tuple[ServerProcess, dict[str, str]]) -> None:
    # 60 rules, each within the budget on its own: one proposal took 471 ms and /health waited as long.
    server, headers = served
    assert _save(server, headers, CAPABILITIES, {"name": "red.many", "risk_level": "low"}).status_code == 201
    rules = [
        {
            "id": f"r{i}",
            "capability": "red.many",
            "condition": "has(action.parameters.l) && "
            f"action.parameters.l.exists(a, action.parameters.l.exists(b, a == b + {100000 + i}))",
            "outcome": "DENY",
            "priority": 10,
        }
        for i in range(60)
    ]
    rules.append({"id": "ok", "capability": "red.many", "condition": "true", "outcome": "ALLOW", "priority": 1})
    saved = _save(server, headers, POLICIES, {"name": "red-many", "rules": rules})
    assert saved.status_code == 201, saved.text
    results, health, elapsed = _timed_with_health(
        server, [("red.many", {"l": list(range(100))}, {}), ("red.many", {"l": list(range(160))}, {})], headers
    )
    for response in results:
        decision = response.json()
        assert decision["outcome"] == "DENY", decision["reason"]
        assert "evaluation_budget_exceeded" in decision["reason"]
    assert "together exceeded the proposal's evaluation budget" in results[0].json()["reason"]
    assert elapsed < 10, elapsed
    assert max(health) < 2.0, health
    assert _propose(server, headers, "red.many", {"l": [1, 2, 3]}).json()["outcome"] == "ALLOW"


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        # H: a pointer into data (an enum member holding a remote $ref): saved, then every proposal was a 422.
        ({"enum": [{"$ref": "http://127.0.0.1:9/x"}], "properties": {"a": {"$ref": "#/enum/0"}}}, "subschema"),
        ({"default": {"$ref": "http://127.0.0.1:9/x"}, "properties": {"a": {"$ref": "#/default"}}}, "subschema"),
        # I: reference loops that consume no input: saved, then every proposal was a 500 (RecursionError).
        ({"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}}, "loop"),
        (
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "properties": {"x": {"$ref": "#/$defs/a"}},
            },
            "loop",
        ),
    ],
)
def test_red_team_h_i_references_into_data_and_reference_loops_are_refused_at_save(
    served: tuple[ServerProcess, dict[str, str]], schema: dict[str, Any], fragment: str
) -> None:
    server, headers = served
    response = _save(
        server, headers, CAPABILITIES, {"name": "refs.bad", "risk_level": "low", "parameter_schema": schema}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_policy" and fragment in error["message"]
    assert _propose(server, headers, "refs.bad", {"a": 1, "x": 1}).status_code == 404


def test_red_team_i_a_recursive_tree_schema_is_fine_and_no_proposal_is_a_500(
    served: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, headers = served
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
            }
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
    }
    capability = {"name": "refs.tree", "risk_level": "low", "parameter_schema": tree}
    assert _save(server, headers, CAPABILITIES, capability).status_code == 201
    assert (
        _save(
            server, headers, POLICIES, {"name": "tree", "rules": [{"capability": "refs.tree", "outcome": "ALLOW"}]}
        ).status_code
        == 201
    )
    good = _propose(server, headers, "refs.tree", {"root": {"name": "a", "children": [{"name": "b"}]}})
    assert good.status_code == 200 and good.json()["outcome"] == "ALLOW", good.text
    bad = _propose(server, headers, "refs.tree", {"root": {"name": "a", "children": [{"name": 3}]}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_parameters"
    node: dict[str, Any] = {"name": "leaf"}
    for _ in range(14):  # as deep as the body's nesting limit allows (32 levels of JSON)
        node = {"name": "n", "children": [node]}
    deep = _propose(server, headers, "refs.tree", {"root": node})
    assert deep.status_code in (200, 400, 422), deep.text


# -- red team D and E: x-sensitive wherever it marks a value; no sensitive value in a reason ----------

_MARKED = {"type": "string", "x-sensitive": True}
_PLACEMENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ref": ({"$defs": {"card": _MARKED}, "properties": {"card": {"$ref": "#/$defs/card"}}}, {"card": "{card}"}),
    "additional": ({"additionalProperties": _MARKED}, {"card": "{card}"}),
    "pattern": ({"patternProperties": {"^card": _MARKED}}, {"card": "{card}"}),
    "anyof": ({"properties": {"card": {"anyOf": [_MARKED, {"type": "integer"}]}}}, {"card": "{card}"}),
    "allof": ({"properties": {"card": {"allOf": [{"x-sensitive": True}]}}}, {"card": "{card}"}),
    "oneof": ({"properties": {"card": {"oneOf": [_MARKED, {"type": "integer"}]}}}, {"card": "{card}"}),
    "prefixitems": ({"properties": {"cards": {"type": "array", "prefixItems": [_MARKED]}}}, {"cards": ["{card}"]}),
    "ifthen": ({"if": {"required": ["card"]}, "then": {"properties": {"card": _MARKED}}}, {"card": "{card}"}),
    "dependent": ({"dependentSchemas": {"card": {"properties": {"card": _MARKED}}}}, {"card": "{card}"}),
}
_REFUSED: dict[str, dict[str, Any]] = {
    "string-mark": {"properties": {"card": {"type": "string", "x-sensitive": "true"}}},
    "not": {"properties": {"card": {"not": {"x-sensitive": True}}}},
    "unreferenced-defs": {"$defs": {"card": _MARKED}},
}


def _with_card(parameters: Any, card: str) -> Any:
    if isinstance(parameters, dict):
        return {key: _with_card(value, card) for key, value in parameters.items()}
    if isinstance(parameters, list):
        return [_with_card(item, card) for item in parameters]
    return card if parameters == "{card}" else parameters


def _allow_all(server: ServerProcess, headers: dict[str, str], name: str, capability: str, condition: str) -> None:
    body = {
        "name": name,
        "enabled": True,
        "rules": [{"id": "r", "capability": capability, "condition": condition, "outcome": "ALLOW"}],
    }
    response = httpx.put(f"{server.endpoint}/api/v1/policies/{name}", json=body, headers=headers, timeout=30)
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("placement", sorted(_PLACEMENTS))
def test_red_team_d_x_sensitive_is_redacted_wherever_it_marks_a_value(
    served: tuple[ServerProcess, dict[str, str]], placement: str
) -> None:
    server, headers = served
    schema, template = _PLACEMENTS[placement]
    card = "4111111111111111"
    name = f"sens.{placement}"
    capability = {"name": name, "risk_level": "low", "parameter_schema": {"type": "object", **schema}}
    saved = httpx.post(f"{server.endpoint}{CAPABILITIES}", json=capability, headers=headers, timeout=30)
    assert saved.status_code in (200, 201), saved.text
    _allow_all(server, headers, f"sens-{placement}", name, "true")
    decision = _propose(server, headers, name, _with_card(template, card))
    assert decision.status_code == 200, decision.text
    trail = httpx.get(
        f"{server.endpoint}/api/v1/audit/log/{decision.json()['decision_id']}", headers=headers, timeout=30
    )
    assert trail.status_code == 200 and "hmac-sha256:" in trail.text, trail.text
    assert card not in trail.text


@pytest.mark.parametrize("placement", sorted(_REFUSED))
def test_red_team_d_x_sensitive_that_cannot_be_honoured_is_refused_at_save(
    served: tuple[ServerProcess, dict[str, str]], placement: str
) -> None:
    server, headers = served
    capability = {
        "name": f"refused.{placement}",
        "risk_level": "low",
        "parameter_schema": {"type": "object", **_REFUSED[placement]},
    }
    response = httpx.post(f"{server.endpoint}{CAPABILITIES}", json=capability, headers=headers, timeout=30)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_policy" and "x-sensitive at /" in error["message"]


@pytest.mark.parametrize(
    "condition",
    [
        "{'a': 1}[action.parameters.pin] == 1",
        "action.parameters[action.parameters.pin] == 1",
        "duration(action.parameters.pin) > duration('1s')",
        "'x'.matches(action.parameters.pin)",
    ],
)
def test_red_team_e_a_failed_condition_never_returns_or_audits_a_sensitive_value(
    served: tuple[ServerProcess, dict[str, str]], condition: str
) -> None:
    server, headers = served
    pin = "SECRET-PIN-("
    capability = {
        "name": "sens.pin",
        "risk_level": "low",
        "parameter_schema": {"type": "object", "properties": {"pin": {"type": "string", "x-sensitive": True}}},
    }
    saved = httpx.post(f"{server.endpoint}{CAPABILITIES}", json=capability, headers=headers, timeout=30)
    assert saved.status_code in (200, 201, 409), saved.text
    _allow_all(server, headers, "sens-pin", "sens.pin", condition)
    decision = _propose(server, headers, "sens.pin", {"pin": pin})
    assert decision.status_code == 200, decision.text
    assert decision.json()["outcome"] == "DENY" and "fail-closed" in decision.json()["reason"]
    trail = httpx.get(
        f"{server.endpoint}/api/v1/audit/log/{decision.json()['decision_id']}", headers=headers, timeout=30
    )
    assert trail.status_code == 200
    for text in (decision.text, trail.text):
        assert "SECRET" not in text, text
    assert "SECRET" not in server.logs()
