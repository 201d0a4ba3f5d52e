"""Policies > Replay: keys with policies:manage replay a window under a recorded version (default: the latest)
and read the report the API answers for the same window and candidate (the same numbers, transitions, rules
and samples, on SQLite and PostgreSQL); the samples link to their decision pages; bad input, an unknown
version and a busy server are clear messages; the truncated notice gives the limit and the CLI command."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from html import unescape
from typing import Any

import httpx
import pytest
from console_pages_support import POLICIES, Browser, Clock, csrf_of, make_server, open_browser, sign_in, text_of
from test_policy_history_pages import save_policy
from test_shadow_pages import no_inline_code, propose

from aegis_server.inprocess import InProcessServer
from aegis_server.replay import one_replay_at_a_time

_REAL_NOW = datetime.now(timezone.utc).replace(microsecond=0)
# The audit records (the replay window selects by them) keep the real time, not the servers' decision clock.
SINCE = (_REAL_NOW - timedelta(hours=6)).isoformat().replace("+00:00", "Z")
UNTIL = (_REAL_NOW + timedelta(hours=6)).isoformat().replace("+00:00", "Z")
STRICT = {
    "name": "strict",
    "rules": [
        {"id": "no-reads", "capability": "database.query", "outcome": "DENY", "priority": 10, "reason": "reads off"},
        {
            "id": "no-<b>secrets",
            "capability": "database.query",
            "condition": "action.parameters.password == 'hunter2'",
            "outcome": "ESCALATE",
            "priority": 20,
        },
    ],
}
"""Reads become DENY; a read with a password cannot be re-decided (the password is stored hashed)."""


async def record_traffic(server: InProcessServer) -> None:
    """Four plain reads, one read with a password and a delete, decided under version 1; then version 2
    (STRICT) is saved."""
    for number in range(4):
        assert (await propose(server, "database.query", query=f"SELECT {number}"))["outcome"] == "ALLOW"
    await propose(server, "database.query", query="SELECT 9", password="hunter2")
    assert (await propose(server, "files.delete", path="/tmp/x"))["outcome"] == "DENY"


async def replay_page(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    form = await client.get("/console/policies/replay")
    assert form.status_code == 200
    return await client.post("/console/policies/replay", data={"csrf_token": csrf_of(form.text), **fields})


def fact(html: str, term: str) -> str:
    found = re.search(rf"<dt>{re.escape(term)}</dt><dd>(.*?)</dd>", html, re.S)
    assert found is not None, f"no {term!r} on the page"
    return text_of(found.group(1))


def transition_rows(html: str) -> list[tuple[str, str, str, list[str], list[str]]]:
    table = re.search(r'aria-labelledby="transitions-heading">(.*?)</table>', html, re.S)
    assert table is not None
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1).split("<tbody>")[1], re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        rules = [unescape(text_of(rule)) for rule in re.findall(r"<li>(.*?)</li>", cells[3], re.S)]
        samples = re.findall(r'<a href="/console/decisions/([^"]+)">', cells[4])
        rows.append((text_of(cells[0]), text_of(cells[1]), text_of(cells[2]), rules, samples))
    return rows


@pytest.fixture
async def on_each_store(store_url: str) -> AsyncIterator[InProcessServer]:
    async with make_server(store_url, Clock()) as running:
        yield running


async def test_the_report_equals_the_apis(on_each_store: InProcessServer) -> None:
    server = on_each_store
    await record_traffic(server)
    await save_policy(server, STRICT)  # version 2
    api = await server.async_http_client().post(
        "/api/v1/policies/replay", json={"since": SINCE, "until": UNTIL, "candidate": {"version": 2}, "samples": 3}
    )
    assert api.status_code == 200, api.text
    expected: dict[str, Any] = api.json()
    client = open_browser(server)
    await sign_in(server, client, ["policies:manage"], "replayer")
    page = await replay_page(client, since=SINCE, until=UNTIL, version="2", samples="3")
    await client.aclose()
    assert page.status_code == 200, text_of(page.text)
    no_inline_code(page)
    totals = expected["totals"]
    assert totals["changed"] == 4 and totals["not_replayable"] == {"sensitive_parameters": 1}
    for term, key in (("Stored proposals", "stored"), ("Replayed", "replayed"), ("Unchanged", "unchanged")):
        assert fact(page.text, term) == str(totals[key])
    assert fact(page.text, "Changed") == str(totals["changed"])
    assert fact(page.text, "Confirmations skipped").startswith(str(totals["confirmations_skipped"]))
    assert fact(page.text, "Candidate").startswith("version 2")
    assert transition_rows(page.text) == [
        (
            t["from"],
            t["to"],
            str(t["count"]),
            [f"{rule['policy_id']} ({rule['count']})" for rule in t["rules"]],
            t["sample_decision_ids"],
        )
        for t in expected["transitions"]
    ]
    assert len(transition_rows(page.text)[0][4]) == 3  # samples as asked, each a link to its decision page
    assert "<li><code>sensitive_parameters</code>: 1</li>" in page.text
    assert "stored only as keyed hashes" in text_of(page.text)
    versions_table = page.text.split('id="versions-heading"')[1]
    for row in expected["by_original_version"]:
        assert re.search(
            rf"version {row['version']}</a></th>\s*<td>{row['proposals']}</td>\s*<td>{row['changed']}</td>",
            versions_table,
        )
    assert "Truncated" not in page.text


async def test_the_latest_version_is_the_default_candidate(server: InProcessServer, browser: Browser) -> None:
    await record_traffic(server)
    await save_policy(server, STRICT)
    page = await replay_page(await browser(["admin"]), since=SINCE, until=UNTIL)
    assert page.status_code == 200
    assert fact(page.text, "Candidate").startswith("version 2 (the latest)")
    assert fact(page.text, "Changed") == "4"


async def test_nothing_changes_under_the_version_decided_with(server: InProcessServer, browser: Browser) -> None:
    await record_traffic(server)
    page = await replay_page(await browser(["policies:manage"]), since=SINCE, until=UNTIL, version="1")
    assert fact(page.text, "Changed") == "0"
    assert "None: every replayed proposal would be decided as it was." in text_of(page.text)


async def test_markup_in_a_rule_id_is_text(server: InProcessServer, browser: Browser) -> None:
    await record_traffic(server)
    await save_policy(server, {**STRICT, "rules": [{**STRICT["rules"][1], "condition": "true"}]})
    page = await replay_page(await browser(["policies:manage"]), since=SINCE, until=UNTIL)
    assert "<b>secrets" not in page.text
    assert "strict/no-&lt;b&gt;secrets" in page.text


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        (
            {"since": "abc"},
            400,
            "Since 'abc' is neither a duration (e.g. 30m, 12h, 7d, 2w) nor an RFC 3339 time "
            "(e.g. 2026-12-01T00:00:00Z).",
        ),
        ({"since": ""}, 400, "Give 'since': a duration back from now (e.g. 7d) or an RFC 3339 time."),
        ({"since": "1d", "until": "2d"}, 400, "The window is empty: since"),
        ({"since": "7d", "samples": "many"}, 400, "Samples must be a whole number from 0 to 100, not 'many'."),
        ({"since": "7d", "samples": "101"}, 400, "Samples must be a whole number from 0 to 100, not '101'."),
        ({"since": "7d", "samples": "\u00b2"}, 400, "Samples must be a whole number from 0 to 100, not '\u00b2'."),
        ({"since": "7d", "version": "\u00b2"}, 400, "Candidate version must be a version number (1, 2, ...), not"),
        ({"since": "7d", "version": "two"}, 400, "Candidate version must be a version number (1, 2, ...), not 'two'."),
        (
            {"since": "7d", "version": "9"},
            404,
            "Cannot replay: there is no policy-set version 9 (the versions are 1..1)",
        ),
    ],
)
async def test_bad_input_is_a_clear_message(
    server: InProcessServer, browser: Browser, fields: dict[str, str], status: int, message: str
) -> None:
    page = await replay_page(await browser(["policies:manage"]), **fields)
    assert page.status_code == status
    alert = re.search(r'<div class="message alert" role="alert">(.*?)</div>', page.text, re.S)
    assert alert is not None and message in text_of(alert.group(1)).replace("&#39;", "'")
    assert 'id="report-heading"' not in page.text
    assert f'value="{fields["since"]}"' in page.text  # the form keeps what was typed


async def test_a_busy_server_says_so(server: InProcessServer, browser: Browser) -> None:
    client = await browser(["policies:manage"])
    with one_replay_at_a_time():
        busy = await replay_page(client, since=SINCE, until=UNTIL)
    assert busy.status_code == 409
    assert "Another replay is running on this server; one runs at a time." in text_of(busy.text)
    assert (await replay_page(client, since=SINCE, until=UNTIL)).status_code == 200


async def test_the_truncated_notice_names_the_limit_and_the_cli(sqlite_url: str, clock: Clock) -> None:
    async with InProcessServer(
        policy_paths=[POLICIES],
        db_url=sqlite_url,
        clock=clock,
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
        replay_max_proposals=2,
    ) as server:
        await record_traffic(server)
        client = open_browser(server)
        await sign_in(server, client, ["policies:manage"], "replayer")
        page = await replay_page(client, since=SINCE, until=UNTIL, version="1")
        await client.aclose()
    assert fact(page.text, "Stored proposals") == "2"
    text = text_of(page.text)
    assert "Truncated: the window holds more than 2 stored proposals, and only the oldest 2 were replayed" in text
    assert f"aegis-server policy replay --since {SINCE} --until {UNTIL} --version 1" in text


async def test_a_replay_stopped_by_the_time_limit_says_so(sqlite_url: str, clock: Clock) -> None:
    async with InProcessServer(
        policy_paths=[POLICIES],
        db_url=sqlite_url,
        clock=clock,
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
        replay_timeout_seconds=1e-9,
    ) as server:
        await record_traffic(server)
        client = open_browser(server)
        await sign_in(server, client, ["policies:manage"], "replayer")
        page = await replay_page(client, since=SINCE, until=UNTIL, version="1")
        await client.aclose()
    text = text_of(page.text)
    assert "Stopped early: the replay reached the server's time limit of 1e-09 seconds" in text
    assert "Truncated: the window holds more than" not in text
    assert f"aegis-server policy replay --since {SINCE} --until {UNTIL} --version 1" in text


async def test_replay_needs_policies_manage(server: InProcessServer, browser: Browser) -> None:
    reader = await browser(["governance:read"])
    page = await reader.get("/console/policies/replay")
    assert page.status_code == 403
    assert "lacks the scope 'policies:manage'" in text_of(page.text).replace("&#39;", "'")
    token = csrf_of(page.text)
    refused = await reader.post("/console/policies/replay", data={"csrf_token": token, "since": SINCE})
    assert refused.status_code == 403


async def test_a_replay_without_the_csrf_token_is_refused(server: InProcessServer, browser: Browser) -> None:
    client = await browser(["policies:manage"])
    refused = await client.post("/console/policies/replay", data={"since": SINCE, "until": UNTIL})
    assert refused.status_code == 403
    assert "This form expired or came from another site" in text_of(refused.text)
