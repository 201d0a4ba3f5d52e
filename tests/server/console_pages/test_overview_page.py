"""`/console/overview`: the seeded numbers on the page (SQLite and PostgreSQL), the windows, the scope,
a bad window, and escaping of user-controlled names."""

from __future__ import annotations

import re

import httpx
import pytest
from _seed import XSS_CAPABILITY, seed
from conftest import Browser, make_server, open_browser, sign_in, text_of

from aegis_server.inprocess import InProcessServer


def _row(html: str, header: str) -> list[str]:
    """The cells of the table row whose header cell is `header`."""
    found = re.search(rf'<th scope="row">{re.escape(header)}</th>(.*?)</tr>', html, re.S)
    assert found is not None, f"no row {header!r}"
    return re.findall(r"<td>(.*?)</td>", found.group(1))


async def _overview_of(server: InProcessServer, path: str) -> httpx.Response:
    async with open_browser(server) as client:
        await sign_in(server, client, ["governance:read"], "reader")
        return await client.get(path)


@pytest.mark.parametrize("path", ["/console/overview", "/console/overview?window=24h", "/console/overview?window="])
async def test_the_last_24_hours_by_default(server: InProcessServer, seeded: list[str], path: str) -> None:
    answer = await _overview_of(server, path)
    assert answer.status_code == 200
    html = answer.text
    text = text_of(html)
    assert '<a href="/console/overview?window=24h" aria-current="page">Last 24 hours</a>' in html
    # outcomes: the chart's name says the totals, the table has a row per hour
    assert "10 decisions: 3 allow, 4 deny, 2 escalate, 1 require confirmation" in text
    assert _row(html, "2030-01-01 12:00 UTC") == ["2", "0", "1", "0", "3"]
    assert _row(html, "2030-01-01 11:00 UTC") == ["1", "1", "0", "0", "2"]
    assert _row(html, "2029-12-31 16:00 UTC") == ["0", "1", "0", "0", "1"]
    assert _row(html, "Total") == ["3", "4", "2", "1", "10"]
    # risk deciles
    assert _row(html, "0.1–0.2") == ["2"]
    assert _row(html, "0.9–1.0") == ["2"]
    assert _row(html, "0.2–0.3") == ["0"]
    # top lists
    assert _row(html, "<code>agent-1</code>") == ["4"]
    assert _row(html, "<code>files.delete</code>") == ["3"]
    # reviews: resolved 60, 120 and 600 s after their decisions
    assert "Reviews resolved in the window 3" in text
    assert "Median time to review 2 min" in text
    assert "90th percentile time to review 8 min 24 s" in text
    assert "Reviews expired in the window 1" in text
    assert "Reviews pending now 1" in text
    # each chart is an image with a name, followed by its table
    assert html.count('role="img"') == 4
    assert html.count("<details>") == 4
    assert '<link rel="stylesheet" href="/console/static/charts.css">' in html


async def test_the_numbers_on_postgresql_too(postgres_url: str) -> None:
    async with make_server(postgres_url) as server:
        await seed(server.store)
        answer = await _overview_of(server, "/console/overview?window=7d")
    assert answer.status_code == 200
    assert "11 decisions: 4 allow, 4 deny, 2 escalate, 1 require confirmation" in text_of(answer.text)
    assert _row(answer.text, "2029-12-31 UTC") == ["1", "1", "0", "0", "2"]
    assert _row(answer.text, "2030-01-01 UTC") == ["3", "3", "2", "1", "9"]


async def test_seven_and_thirty_days_are_daily(server: InProcessServer, seeded: list[str]) -> None:
    week = await _overview_of(server, "/console/overview?window=7d")
    assert 'aria-current="page">Last 7 days</a>' in week.text
    assert len(re.findall(r'<th scope="row">\d{4}-\d\d-\d\d UTC</th>', week.text)) == 8
    assert _row(week.text, "Total")[-1] == "11"
    month = await _overview_of(server, "/console/overview?window=30d")
    assert len(re.findall(r'<th scope="row">\d{4}-\d\d-\d\d UTC</th>', month.text)) == 31
    assert _row(month.text, "Total")[-1] == "12"


async def test_an_unknown_window_says_what_to_choose(server: InProcessServer, seeded: list[str]) -> None:
    answer = await _overview_of(server, "/console/overview?window=<b>1y</b>")
    assert answer.status_code == 400
    assert re.search(r'role="alert">Unknown window .*choose one of 24h, 7d, 30d', answer.text)
    assert "<b>1y</b>" not in answer.text and "&lt;b&gt;1y&lt;/b&gt;" in answer.text
    assert 'role="img"' not in answer.text


async def test_names_are_escaped_everywhere(server: InProcessServer, seeded: list[str]) -> None:
    html = (await _overview_of(server, "/console/overview")).text
    assert XSS_CAPABILITY not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html  # the console ships no inline script at all


@pytest.mark.parametrize("scopes", [["governance:propose"], ["audit:read"], ["governance:review"]])
async def test_a_key_without_governance_read_is_refused(browser: Browser, seeded: list[str], scopes: list[str]) -> None:
    client = await browser(scopes)
    answer = await client.get("/console/overview")
    assert answer.status_code == 403
    assert re.search(r'role="alert">[^<]*governance:read', answer.text)
    assert "decisions:" not in answer.text


async def test_admin_may_see_it(browser: Browser, seeded: list[str]) -> None:
    client = await browser(["admin"])
    assert (await client.get("/console/overview")).status_code == 200


async def test_nobody_signed_in_is_sent_to_sign_in(server: InProcessServer, seeded: list[str]) -> None:
    async with open_browser(server) as client:
        answer = await client.get("/console/overview?window=7d")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in?next=/console/overview")
        # an API key as a bearer token is no session
        bearer = await client.get("/console/overview", headers={"Authorization": f"Bearer {server.api_key}"})
        assert bearer.status_code == 303
