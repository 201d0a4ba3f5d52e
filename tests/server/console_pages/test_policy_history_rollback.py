"""Rolling back from a version's page: a key with policies:manage (or admin) gets the form, must tick
"I understand", and the rollback restores the earlier behaviour (on SQLite and PostgreSQL); the result page
names what was restored and removed and, first, the file-defined items to restore from the files. Without the
scope there is no form and a POST is refused; without the CSRF token, or from another site, nothing runs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from console_pages_support import POLICIES, Browser, Clock, csrf_of, make_server, open_browser, sign_in, text_of
from test_policy_history_pages import MARKED, save_policy
from test_shadow_pages import no_inline_code, propose

from aegis_sdk.models import Policy
from aegis_server.inprocess import InProcessServer
from aegis_server.policies.files import load_policy_paths
from aegis_server.store.policy_versions import NewPolicyVersion

ROLLBACK_FORM = 'action="/console/policies/versions/1/rollback"'


async def current_version(server: InProcessServer) -> int:
    status = await server.async_http_client().get("/api/v1/policy-versions?limit=1")
    return int(status.json()["items"][0]["version"])


async def post_rollback(client: httpx.AsyncClient, version: int, *, confirm: bool = True) -> httpx.Response:
    page = await client.get(f"/console/policies/versions/{version}")
    fields = {"csrf_token": csrf_of(page.text)}
    if confirm:
        fields["understand"] = "yes"
    return await client.post(f"/console/policies/versions/{version}/rollback", data=fields)


@pytest.fixture
async def on_each_store(store_url: str) -> AsyncIterator[InProcessServer]:
    async with make_server(store_url, Clock()) as running:
        yield running


async def test_a_manager_rolls_back_and_the_behaviour_is_restored(on_each_store: InProcessServer) -> None:
    server = on_each_store
    assert (await propose(server, "database.query", query="SELECT 1"))["outcome"] == "ALLOW"
    await save_policy(server, MARKED)  # version 2: reads are denied
    assert (await propose(server, "database.query", query="SELECT 1"))["outcome"] == "DENY"
    client = open_browser(server)
    await sign_in(server, client, ["policies:manage"], "ops-lead")
    version_page = await client.get("/console/policies/versions/1")
    assert ROLLBACK_FORM in version_page.text and 'name="understand" value="yes" required' in version_page.text
    result = await post_rollback(client, 1)
    assert result.status_code == 200
    no_inline_code(result)
    text = text_of(result.text)
    assert re.search(r"<h1>Rolled back to version 1</h1>", result.text)
    assert "Removed policies marked" in text and "Restored policies none" in text
    assert "Active version now 3" in text and "Restore these from the policy files" not in text
    after = await propose(server, "database.query", query="SELECT 1")
    assert after["outcome"] == "ALLOW" and after["policy_version"] == 3
    history = await client.get("/console/policies/history")
    newest = text_of(re.findall(r"<tr[^>]*>(.*?)</tr>", history.text, re.S)[1])
    assert "Version 3 active" in newest and "rollback" in newest and "ops-lead" in newest and "version 1" in newest
    audit = await server.async_http_client().get("/api/v1/audit/log", params={"event_type": "policy_rollback"})
    assert audit.status_code == 200 and len(audit.json()["items"]) == 1
    await client.aclose()


async def test_a_repeated_rollback_changes_nothing(server: InProcessServer, browser: Browser) -> None:
    await save_policy(server, MARKED)
    client = await browser(["admin"])
    assert (await post_rollback(client, 1)).status_code == 200
    again = await post_rollback(client, 3)  # version 3 is version 1's content: the active version
    assert "Nothing to roll back" in text_of(again.text)
    assert await current_version(server) == 3


async def test_the_box_must_be_ticked(server: InProcessServer, browser: Browser) -> None:
    await save_policy(server, MARKED)
    client = await browser(["policies:manage"])
    refused = await post_rollback(client, 1, confirm=False)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/console/policies/versions/1")
    assert await current_version(server) == 2
    shown = await client.get("/console/policies/versions/1")
    assert "Nothing was rolled back: tick \u201cI understand\u201d" in shown.text


async def test_without_the_scope_there_is_no_form_and_a_post_is_refused(
    server: InProcessServer, browser: Browser
) -> None:
    await save_policy(server, MARKED)
    reader = await browser(["governance:read", "governance:review"])
    page = await reader.get("/console/policies/versions/1")
    assert page.status_code == 200 and ROLLBACK_FORM not in page.text and "Roll back" not in page.text
    refused = await reader.post(
        "/console/policies/versions/1/rollback", data={"csrf_token": csrf_of(page.text), "understand": "yes"}
    )
    assert refused.status_code == 403
    assert "lacks the scope 'policies:manage'" in text_of(refused.text).replace("&#39;", "'")
    assert await current_version(server) == 2


async def test_the_active_version_offers_no_rollback(server: InProcessServer, browser: Browser) -> None:
    page = await (await browser(["admin"])).get("/console/policies/versions/1")
    assert ROLLBACK_FORM not in page.text


@pytest.mark.parametrize("attack", ["no token", "wrong token", "other site"])
async def test_a_forged_rollback_is_refused(server: InProcessServer, browser: Browser, attack: str) -> None:
    await save_policy(server, MARKED)
    client = await browser(["admin"])
    page = await client.get("/console/policies/versions/1")
    fields = {"understand": "yes", "csrf_token": csrf_of(page.text)}
    headers = {}
    if attack == "no token":
        del fields["csrf_token"]
    elif attack == "wrong token":
        fields["csrf_token"] = "0" * 64
    else:
        headers["Origin"] = "https://evil.example"
    refused = await client.post("/console/policies/versions/1/rollback", data=fields, headers=headers)
    assert refused.status_code == 403
    assert "This form expired or came from another site" in text_of(refused.text)
    assert await current_version(server) == 2


async def test_unknown_versions_are_404(server: InProcessServer, browser: Browser) -> None:
    client = await browser(["admin"])
    token = csrf_of((await client.get("/console/policies")).text)
    for number in ("9", "abc"):
        refused = await client.post(
            f"/console/policies/versions/{number}/rollback", data={"csrf_token": token, "understand": "yes"}
        )
        assert refused.status_code == 404
        text = text_of(refused.text).replace("&#39;", "'")
        assert "No policy-set version 9 exists" in text or "no policy-set version 'abc' to roll back to" in text


async def test_file_defined_items_are_named_first(server: InProcessServer, browser: Browser) -> None:
    """A version whose file-defined policy differs from today's file: the server cannot restore it, the page
    says what the operator must restore from the files."""
    documents = load_policy_paths([POLICIES])
    baseline = documents.policies[0]
    older = Policy.model_validate({**baseline.model_dump(mode="json"), "description": "the <b>older</b> baseline"})
    sources = {baseline.name: str(POLICIES), **{f"capability:{c.name}": str(POLICIES) for c in documents.capabilities}}
    number = await server.store.policy_versions.record(
        NewPolicyVersion(
            digest="sha256:" + "0" * 64,
            policies=(older,),
            capabilities=tuple(documents.capabilities),
            sources=sources,
            cause="files_loaded",
            summary="an older baseline file",
        )
    )
    await save_policy(server, MARKED)
    client = await browser(["policies:manage"])
    result = await post_rollback(client, number)
    assert result.status_code == 200
    must_do = re.search(r'<section aria-labelledby="files-heading"[^>]*role="alert">(.*?)</section>', result.text, re.S)
    assert must_do is not None, "the file-defined items come first, as an alert"
    assert result.text.index("files-heading") < result.text.index('class="message')
    text = re.sub(r" ([;:,.])", r"\1", text_of(must_do.group(1)))
    assert f"policy baseline: in version {number} from {POLICIES}; today defined by {POLICIES}" in text
    assert f"aegis-server policy show {number}" in text
    assert "Removed policies marked" in text_of(result.text)
