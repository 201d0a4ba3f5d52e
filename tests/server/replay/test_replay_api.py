"""`POST /api/v1/policies/replay`: the report of a recorded session under a candidate given whole or by version,
its scope, its bounds (limit, the server's maximum, one replay at a time) and its answers to bad input."""

from __future__ import annotations

from typing import Any

import httpx
import yaml
from conftest import POLICIES, STRICTER, Clock, Recorded, expected_transitions, record_session, stricter_outcome

from aegis_server.inprocess import InProcessServer
from aegis_server.policies.files import load_policy_paths
from aegis_server.replay import one_replay_at_a_time
from aegis_server.store.policy_versions import NewPolicyVersion


def _documents(path: Any) -> dict[str, Any]:
    loaded = yaml.safe_load((path / "policies.yaml").read_text() if path.is_dir() else path.read_text())
    return {"policies": loaded["policies"], "capabilities": loaded["capabilities"]}


def _by_transition(report: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    return {(t["from"], t["to"]): t["sample_decision_ids"] for t in report["transitions"]}


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


async def _replay(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/policies/replay", json={"since": "1h", "samples": 100, **body})


async def test_replay_of_a_candidate_given_whole(server: InProcessServer, clock: Clock) -> None:
    recorded = await record_session(server, clock, 30)
    response = await _replay(server.async_http_client(), candidate=_documents(STRICTER))
    assert response.status_code == 200, response.text
    report = response.json()
    assert _by_transition(report) == expected_transitions(recorded, stricter_outcome)
    assert report["candidate"]["kind"] == "policies"
    assert report["totals"]["stored"] == len(recorded)
    assert report["totals"]["confirmations_skipped"] == sum(item.confirmation for item in recorded)
    assert report["truncated"] is False


async def test_replay_of_a_recorded_version(server: InProcessServer, clock: Clock) -> None:
    recorded = await record_session(server, clock, 24)
    documents = load_policy_paths([STRICTER])
    version = await server.service.store.policy_versions.record(
        NewPolicyVersion(
            digest="sha256:stricter",
            policies=tuple(documents.policies),
            capabilities=tuple(documents.capabilities),
            sources=documents.sources,
            cause="files_loaded",
            summary="stricter",
        )
    )
    response = await _replay(server.async_http_client(), candidate={"version": version})
    assert response.status_code == 200, response.text
    assert _by_transition(response.json()) == expected_transitions(recorded, stricter_outcome)
    assert response.json()["candidate"]["version"] == version

    missing = await _replay(server.async_http_client(), candidate={"version": version + 5})
    assert missing.status_code == 404
    assert _error(missing)["code"] == "not_found"


async def test_refusals_are_transitions_of_their_own(server: InProcessServer, clock: Clock) -> None:
    recorded = await record_session(server, clock, 18)
    documents = _documents(POLICIES)
    documents["capabilities"] = [c for c in documents["capabilities"] if c["name"] != "files.read"]
    documents["policies"] = [p for p in documents["policies"] if p["name"] != "files"]
    query = next(c for c in documents["capabilities"] if c["name"] == "db.query")
    query["parameter_schema"]["required"].append("limit")
    report = (await _replay(server.async_http_client(), candidate=documents)).json()
    reads = [r for r in recorded if r.capability == "files.read"]
    queries = [r for r in recorded if r.capability == "db.query"]
    expected: dict[tuple[str, str], list[str]] = {}
    for item in reads + queries:
        refusal = "unknown_capability" if item.capability == "files.read" else "invalid_parameters"
        expected.setdefault((item.outcome, refusal), []).append(item.decision_id)
    assert {key: sorted(ids) for key, ids in _by_transition(report).items()} == {
        key: sorted(ids) for key, ids in expected.items()
    }
    for transition in report["transitions"]:
        assert transition["rules"] == [{"policy_id": f"({transition['to']})", "count": transition["count"]}]


async def test_limit_and_the_servers_maximum(make_server: Any, clock: Clock) -> None:
    async with make_server(replay_max_proposals=4) as server:
        recorded: list[Recorded] = await record_session(server, clock, 9)
        client = server.async_http_client()
        capped = (await _replay(client, candidate=_documents(STRICTER), limit=1000)).json()
        assert capped["totals"]["stored"] == 4 and capped["truncated"] is True
        assert capped["truncated_reason"] == "limit"
        fewer = (await _replay(client, candidate=_documents(STRICTER), limit=2)).json()
        assert fewer["totals"]["stored"] == 2 and fewer["truncated"] is True
        assert len(recorded) > 4


async def test_one_replay_at_a_time(server: InProcessServer) -> None:
    with one_replay_at_a_time():  # as the console's replay page would hold it
        busy = await _replay(server.async_http_client(), candidate=_documents(STRICTER))
    assert busy.status_code == 409
    assert _error(busy)["code"] == "replay_busy"
    assert "one runs at a time" in _error(busy)["message"]
    assert (await _replay(server.async_http_client(), candidate=_documents(STRICTER))).status_code == 200


async def test_scope_policies_manage_is_required(server: InProcessServer) -> None:
    reader = server.async_http_client(await server.acreate_key("reader", ["governance:read", "governance:propose"]))
    refused = await _replay(reader, candidate=_documents(STRICTER))
    assert refused.status_code == 403
    assert _error(refused)["code"] == "missing_scope"
    anonymous = httpx.AsyncClient(transport=server.async_transport(), base_url=server.endpoint)
    assert (await _replay(anonymous, candidate=_documents(STRICTER))).status_code == 401
    manager = server.async_http_client(await server.acreate_key("manager", ["policies:manage"]))
    assert (await _replay(manager, candidate=_documents(STRICTER))).status_code == 200


async def test_bad_input_is_a_4xx_saying_what_to_fix(server: InProcessServer) -> None:
    client = server.async_http_client()
    window = await client.post("/api/v1/policies/replay", json={"since": "last week", "candidate": {"version": 1}})
    assert window.status_code == 422
    assert _error(window)["code"] == "invalid_window"
    assert "neither a duration" in _error(window)["message"]
    empty = await client.post(
        "/api/v1/policies/replay", json={"since": "1h", "until": "2h", "candidate": {"version": 1}}
    )
    assert _error(empty)["code"] == "invalid_window" and "the window is empty" in _error(empty)["message"]
    for bounds in (
        {"since": "9999999w"},
        {"since": "0001-01-01T00:00:00+01:00"},
        {"since": "1d", "until": "9999-12-31T23:59:59-01:00"},
    ):
        beyond = await client.post("/api/v1/policies/replay", json={**bounds, "candidate": {"version": 1}})
        assert beyond.status_code == 422, beyond.text
        assert _error(beyond)["code"] == "invalid_window" and "year" in _error(beyond)["message"]

    broken = _documents(STRICTER)
    broken["policies"][0]["rules"][0]["condition"] = "nope("
    invalid = await _replay(client, candidate=broken)
    assert invalid.status_code == 422
    assert _error(invalid)["code"] == "invalid_policy"
    assert _error(invalid)["details"]["errors"][0]["policy"] == "queries"

    for body in (
        {"since": "1h", "candidate": {"version": 0}},
        {"since": "1h", "candidate": {"version": 1}, "samples": 5000},
        {"since": "1h", "candidate": {"version": 1}, "limit": 0},
        {"since": "1h", "candidate": {"version": 1}, "extra": True},
        {"candidate": {"version": 1}},
    ):
        response = await client.post("/api/v1/policies/replay", json=body)
        assert response.status_code == 422, body
