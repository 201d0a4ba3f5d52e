"""`/api/v1/policy-versions`: history (paged), one version's content, diffs, scopes and unknown versions."""

from __future__ import annotations

import httpx

from aegis_server.inprocess import InProcessServer

from .conftest import email_allowed_then_denied, error_of


async def test_history_pages_newest_first(client: httpx.AsyncClient) -> None:
    await email_allowed_then_denied(client)
    first = (await client.get("/api/v1/policy-versions", params={"limit": 3})).json()
    assert [v["version"] for v in first["items"]] == [4, 3, 2]
    assert first["next_cursor"] == 2
    rest = (await client.get("/api/v1/policy-versions", params={"limit": 3, "before": 2})).json()
    assert [v["version"] for v in rest["items"]] == [1] and rest["next_cursor"] is None
    assert set(first["items"][0]) == {
        "version", "digest", "cause", "summary", "created_at", "created_by", "rollback_of", "active",
    }  # fmt: skip


async def test_show_returns_the_whole_content_and_where_each_item_came_from(
    server: InProcessServer, client: httpx.AsyncClient
) -> None:
    await email_allowed_then_denied(client)
    shown = (await client.get("/api/v1/policy-versions/3")).json()
    assert shown["version"] == 3 and shown["cause"] == "policy_saved" and shown["active"] is False
    assert [p["name"] for p in shown["policies"]] == ["baseline", "email"]
    assert [p["rules"][0]["outcome"] for p in shown["policies"] if p["name"] == "email"] == ["ALLOW"]
    assert [c["name"] for c in shown["capabilities"]] == ["database.drop", "email.send", "payments.transfer"]
    assert shown["sources"]["email"] == "api" and shown["sources"]["capability:email.send"] == "api"
    assert shown["sources"]["baseline"].endswith("policies.yaml")
    latest = (await client.get("/api/v1/policy-versions/4")).json()
    assert latest["active"] is True and latest["digest"] == server.service.policies.active.digest


async def test_diff_lists_rule_changes_and_a_text_diff(client: httpx.AsyncClient) -> None:
    await email_allowed_then_denied(client)
    diff = (await client.get("/api/v1/policy-versions/4/diff")).json()  # default: against the previous one
    assert (diff["from_version"], diff["to_version"], diff["identical"]) == (3, 4, False)
    [change] = diff["policies"]
    assert change["name"] == "email" and change["change"] == "changed" and change["fields"] == ["rules"]
    assert change["rules"] == [{"id": "send", "change": "changed"}]
    assert diff["capabilities"] == []
    assert "-    outcome: ALLOW" in diff["text"] and "+    outcome: DENY" in diff["text"]

    wider = (await client.get("/api/v1/policy-versions/4/diff", params={"against": 1})).json()
    assert [(c["name"], c["change"], c["source_after"]) for c in wider["capabilities"]] == [
        ("email.send", "added", "api")
    ]
    assert [(p["name"], p["change"]) for p in wider["policies"]] == [("email", "added")]
    same = (await client.get("/api/v1/policy-versions/2/diff", params={"against": 2})).json()
    assert same["identical"] is True and same["text"] == ""


async def test_version_1_has_no_previous_version_to_diff(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/policy-versions/1/diff")
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request" and "?against=" in error_of(response)["message"]


async def test_an_unknown_version_is_404_saying_how_to_list_them(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/api/v1/policy-versions/99"),
        ("GET", "/api/v1/policy-versions/1/diff?against=99"),
        ("POST", "/api/v1/policy-versions/99/rollback"),
    ):
        response = await client.request(method, path)
        assert response.status_code == 404, (path, response.text)
        error = error_of(response)
        assert error["code"] == "not_found" and "GET /api/v1/policy-versions" in error["message"]


async def test_bad_version_numbers_are_422(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/policy-versions/0", "/api/v1/policy-versions/abc", "/api/v1/policy-versions?limit=0"):
        response = await client.get(path)
        assert response.status_code == 422, path


async def test_reads_need_governance_read_and_rollback_policies_manage(server: InProcessServer) -> None:
    reader = server.async_http_client(await server.acreate_key("reader", ["governance:read"]))
    proposer = server.async_http_client(await server.acreate_key("agent", ["governance:propose"]))
    assert (await reader.get("/api/v1/policy-versions")).status_code == 200
    assert (await reader.get("/api/v1/policy-versions/1")).status_code == 200
    assert (await reader.get("/api/v1/policy-versions/1/diff?against=1")).status_code == 200
    refused = await reader.post("/api/v1/policy-versions/1/rollback")
    assert refused.status_code == 403 and error_of(refused)["code"] == "missing_scope"
    for path in ("/api/v1/policy-versions", "/api/v1/policy-versions/1"):
        assert (await proposer.get(path)).status_code == 403
    assert (await server.async_http_client("aegis_not-a-key").get("/api/v1/policy-versions")).status_code == 401
