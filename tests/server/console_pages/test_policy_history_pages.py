"""Policies > History and a version's page: the versions newest first (cause, who, rollback of, the active
marker), paged with `before`; a version's metadata, its policies and capabilities with their sources, its
canonical YAML and the diff against another version (a table and the classed text diff). Bad input is a
clear message; markup in policies is text; the decision's policy version links to its page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from console_pages_support import POLICIES, Browser, text_of
from test_shadow_pages import no_inline_code, propose

from aegis_server.console import policy_history_page
from aegis_server.inprocess import InProcessServer

MARKED = {
    "name": "marked",
    "description": "A <em>description</em>",
    "rules": [
        {
            "id": "stop-reads",
            "capability": "database.query",
            "outcome": "DENY",
            "priority": 10,
            "reason": "reads <script>alert(2)</script> stop",
        }
    ],
}


async def save_policy(server: InProcessServer, body: dict[str, Any], api_key: str | None = None) -> None:
    client = server.async_http_client(api_key) if api_key else server.async_http_client()
    response = await client.post("/api/v1/policies", json=body)
    assert response.status_code in (200, 201), response.text


def rows(html: str) -> list[str]:
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.S)
    assert body is not None
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)


async def test_the_history_lists_every_version_newest_first(server: InProcessServer, browser: Browser) -> None:
    key = await server.acreate_key("policy-editor", ["policies:manage"])
    await save_policy(server, MARKED, key)
    page = await (await browser(["governance:read"])).get("/console/policies/history")
    assert page.status_code == 200
    no_inline_code(page)
    listed = rows(page.text)
    assert len(listed) == 2
    newest, first = (text_of(row) for row in listed)
    assert newest.startswith("Version 2 active")
    assert "policy_saved" in newest and "policy-editor" in newest  # who: the key's name beside its id
    assert first.startswith("Version 1 ") and "active" not in first.split()[:3]
    assert "files_loaded" in first and "the server (its policy files)" in first
    assert 'href="/console/policies/versions/2"' in listed[0]
    assert "Older versions" not in page.text


async def test_the_history_pages_with_before(
    server: InProcessServer, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(4):
        await save_policy(server, {**MARKED, "name": f"marked-{number}"})  # versions 2..5
    monkeypatch.setattr(policy_history_page, "PAGE_SIZE", 2)
    client = await browser(["policies:manage"])
    first = await client.get("/console/policies/history")
    assert [re.search(r"Version (\d+)", text_of(row)).group(1) for row in rows(first.text)] == ["5", "4"]  # type: ignore[union-attr]
    assert 'href="/console/policies/history?before=4"' in first.text
    second = await client.get("/console/policies/history?before=4")
    assert [re.search(r"Version (\d+)", text_of(row)).group(1) for row in rows(second.text)] == ["3", "2"]  # type: ignore[union-attr]
    assert "Newest versions" in second.text and "before=2" in second.text
    last = await client.get("/console/policies/history?before=2")
    assert len(rows(last.text)) == 1 and "Older versions" not in last.text


@pytest.mark.parametrize("before", ["abc", "0", "-1", "99999999999", "\u00b2"])
async def test_a_bad_before_is_a_clear_message(server: InProcessServer, browser: Browser, before: str) -> None:
    page = await (await browser(["governance:read"])).get(f"/console/policies/history?before={before}")
    assert page.status_code == 400
    assert "must be a version number" in text_of(page.text)


async def test_the_version_page_shows_content_sources_and_yaml(server: InProcessServer, browser: Browser) -> None:
    await save_policy(server, MARKED)
    page = await (await browser(["governance:read"])).get("/console/policies/versions/2")
    assert page.status_code == 200
    no_inline_code(page)
    text = text_of(page.text)
    assert "Policy version 2 active" in text and "policy_saved" in text
    assert f"Source {POLICIES}" in text  # baseline from its file
    assert re.search(r"<code>marked</code>.*?<dt>Source</dt><dd>API</dd>", page.text, re.S)
    assert "aegis-server policy show 2" in text
    assert "name: marked" in page.text  # the canonical YAML
    # Markup in a description or a reason is text, in the content and in the YAML alike.
    assert "<script>alert(2)" not in page.text and "<em>" not in page.text
    assert "reads &lt;script&gt;alert(2)&lt;/script&gt; stop" in page.text
    assert "A &lt;em&gt;description&lt;/em&gt;" in page.text


async def test_the_version_page_compares_with_the_previous_version(server: InProcessServer, browser: Browser) -> None:
    await save_policy(server, MARKED)
    page = await (await browser(["governance:read"])).get("/console/policies/versions/2")
    changes = re.search(r'<table class="changes">(.*?)</table>', page.text, re.S)
    assert changes is not None
    assert re.search(
        r'<tr class="change-added">\s*<th scope="row">policy <code>marked</code></th>\s*<td>added</td>',
        changes.group(1),
    )
    assert '<li class="change-added"><code>stop-reads</code> added</li>' in changes.group(1)
    assert "From version 1 to version 2" in text_of(page.text)
    added = re.findall(r'<span class="diff-added">(.*?)</span>', page.text)
    assert "+++ version 2" not in added and any("name: marked" in line for line in added)
    assert any("reads &lt;script&gt;alert(2)&lt;/script&gt; stop" in line for line in added)
    assert '<span class="diff-header">--- version 1</span>' in page.text


async def test_comparing_with_an_older_version_and_removals(server: InProcessServer, browser: Browser) -> None:
    await save_policy(server, MARKED)  # 2
    response = await server.async_http_client().delete("/api/v1/policies/marked")
    assert response.status_code in (200, 204), response.text  # 3
    client = await browser(["governance:read"])
    page = await client.get("/console/policies/versions/3?compare=2")
    assert page.status_code == 200
    assert "From version 2 to version 3" in text_of(page.text)
    assert re.search(r'<tr class="change-removed">\s*<th scope="row">policy <code>marked</code></th>', page.text)
    assert any("name: marked" in line for line in re.findall(r'<span class="diff-removed">(.*?)</span>', page.text))
    # The older side is always the "from" side, whichever page compares.
    reverse = await client.get("/console/policies/versions/2?compare=3")
    assert "From version 2 to version 3" in text_of(reverse.text)
    same = await client.get("/console/policies/versions/3?compare=1")
    assert "The two versions hold the same policies, capabilities and sources." in text_of(same.text)


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ("abc", "'Compare with' must be a version number (1, 2, ...), not 'abc'."),
        ("7", "There is no version 7 to compare with (the versions are 1 to 2)."),
    ],
)
async def test_a_bad_compare_is_a_clear_message(
    server: InProcessServer, browser: Browser, compare: str, message: str
) -> None:
    await save_policy(server, MARKED)
    page = await (await browser(["governance:read"])).get(f"/console/policies/versions/2?compare={compare}")
    assert page.status_code == 400
    alert = re.search(r'<div class="message alert" role="alert">(.*?)</div>', page.text, re.S)
    assert alert is not None and text_of(alert.group(1)).replace("&#39;", "'") == message
    assert 'aria-invalid="true"' in page.text


async def test_version_one_has_nothing_before_it(server: InProcessServer, browser: Browser) -> None:
    page = await (await browser(["governance:read"])).get("/console/policies/versions/1")
    assert page.status_code == 200
    assert "Version 1 is the first version" in text_of(page.text)


@pytest.mark.parametrize("number", ["9", "abc", "0", "\u00b2", "1" * 300])
async def test_an_unknown_version_is_404(server: InProcessServer, browser: Browser, number: str) -> None:
    page = await (await browser(["governance:read"])).get(f"/console/policies/versions/{number}")
    assert page.status_code == 404
    assert "There is no policy-set version" in text_of(page.text)


async def test_the_pages_need_a_policy_reading_scope(server: InProcessServer, browser: Browser) -> None:
    auditor = await browser(["audit:read"])
    for path in ("/console/policies/history", "/console/policies/versions/1"):
        page = await auditor.get(path)
        assert page.status_code == 403
        assert "lacks the scope 'governance:read' or 'policies:manage'" in text_of(page.text).replace("&#39;", "'")


async def test_the_policies_page_links_history_and_replay(server: InProcessServer, browser: Browser) -> None:
    reader = await (await browser(["governance:read"])).get("/console/policies")
    assert 'href="/console/policies/history"' in reader.text
    assert 'href="/console/policies/replay"' not in reader.text  # replay needs policies:manage
    assert 'Active version</dt><dd><a href="/console/policies/versions/1">1</a>' in reader.text
    manager = await (await browser(["policies:manage"])).get("/console/policies")
    assert 'href="/console/policies/history"' in manager.text and 'href="/console/policies/replay"' in manager.text


async def test_the_decision_page_links_its_policy_version(server: InProcessServer, browser: Browser) -> None:
    decision = await propose(server, "database.query", query="SELECT 1")
    assert decision["policy_version"] == 1
    page = await (await browser(["governance:read"])).get(f"/console/decisions/{decision['decision_id']}")
    assert '<dt>Policy version</dt><dd><a href="/console/policies/versions/1">1</a>' in page.text
