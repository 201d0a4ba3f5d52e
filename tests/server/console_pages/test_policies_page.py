"""`/console/policies`: the active set read-only — sources (file or API), digests, rules, capabilities
with their schemas and sensitive fields — for governance:read or policies:manage, escaped."""

from __future__ import annotations

import re

import httpx
import pytest
from console_pages_support import POLICIES, Browser, text_of

from aegis_server.console.policies_page import item_digest, sensitive_fields
from aegis_server.inprocess import InProcessServer


async def _policies(browser: Browser, scopes: list[str]) -> httpx.Response:
    client = await browser(scopes)
    return await client.get("/console/policies")


async def test_the_file_policies_rules_and_capabilities(server: InProcessServer, browser: Browser) -> None:
    answer = await _policies(browser, ["governance:read"])
    assert answer.status_code == 200
    html, text = answer.text, text_of(answer.text)
    active = server.service.policies.active
    assert f"Set digest {active.digest}" in text
    assert "API revision none (nothing changed through the API yet)" in text
    # the policy, its source file and digest, its rules
    assert f"<code>{POLICIES}</code>" in html
    baseline = next(policy for policy in active.policies if policy.name == "baseline")
    assert item_digest(baseline) in html
    assert "The rules every agent meets." in text
    rule = re.search(r'<th scope="row"><code>big-refund</code></th>(.*?)</tr>', html, re.S)
    assert rule is not None
    assert text_of(rule.group(1)) == (
        "payments.refund ESCALATE (review within 600 s) action.parameters.amount &gt; 100 5 +0.2"
    )
    # the capabilities, with their schemas and sensitive fields
    for name in ("database.query", "files.delete", "payments.refund"):
        assert f"<code>{name}</code></h3>" in html
    assert '<code class="sensitive">password</code>' in html
    assert '<code class="sensitive">connection.token</code>' in html
    assert "&#34;x-sensitive&#34;: true" in html  # the pretty schema, escaped
    assert html.count('<th scope="col">') >= 7


async def test_descriptions_and_reasons_are_text_not_markup(browser: Browser) -> None:
    html = (await _policies(browser, ["governance:read"])).text
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>not bold</b>" not in html and "&lt;b&gt;not bold&lt;/b&gt;" in html


async def test_an_api_policy_and_capability_say_so(server: InProcessServer, browser: Browser) -> None:
    admin = server.async_http_client()
    capability = {"name": "mail.send", "parameter_schema": {"type": "object"}}
    assert (await admin.post("/api/v1/capabilities", json=capability)).status_code == 201
    policy = {"name": "mail", "rules": [{"id": "send", "capability": "mail.send", "outcome": "ALLOW"}]}
    assert (await admin.post("/api/v1/policies", json=policy)).status_code == 201
    answer = await _policies(browser, ["policies:manage"])
    assert answer.status_code == 200
    section = re.search(r"<code>mail</code></h3>(.*?)</section>", answer.text, re.S)
    assert section is not None and "Source API" in text_of(section.group(1))
    capability_section = re.search(r"<code>mail.send</code></h3>(.*?)</section>", answer.text, re.S)
    assert capability_section is not None and "Source API" in text_of(capability_section.group(1))
    revision = await server.store.policy_revision()
    assert f"API revision {revision}" in text_of(answer.text)
    assert f"Set digest {server.service.policies.active.digest}" in text_of(answer.text)


@pytest.mark.parametrize("scopes", [["governance:propose"], ["audit:read"], ["governance:review"]])
async def test_a_key_without_read_or_manage_is_refused(browser: Browser, scopes: list[str]) -> None:
    answer = await _policies(browser, scopes)
    assert answer.status_code == 403
    assert re.search(r"role=\"alert\">[^<]*governance:read[^<]*policies:manage", answer.text.replace("&#39;", "'"))
    assert "Set digest" not in answer.text


@pytest.mark.parametrize(
    ("schema", "fields"),
    [
        ({"type": "object"}, []),
        ({"x-sensitive": True}, ["(the parameters as a whole)"]),
        ({"properties": {"a": {"x-sensitive": True}, "b": {"x-sensitive": False}}}, ["a"]),
        ({"properties": {"card": {"properties": {"number": {"x-sensitive": True}}}}}, ["card.number"]),
        ({"properties": {"lines": {"items": {"x-sensitive": True}}}}, ["lines[]"]),
        ({"properties": {"pair": {"prefixItems": [{}, {"x-sensitive": True}]}}}, ["pair[1]"]),
        ({"additionalProperties": {"x-sensitive": True}}, ["*"]),
        ({"patternProperties": {"^s_": {"x-sensitive": True}}}, ["<^s_>"]),
        ({"anyOf": [{"properties": {"pin": {"x-sensitive": True}}}, {"properties": {"pin": {}}}]}, ["pin"]),
        ({"$defs": {"secret": {"x-sensitive": True}}, "properties": {"s": {"$ref": "#/$defs/secret"}}}, ["s"]),
        # a recursive reference ends (the engine refuses a mark under one anyway)
        (
            {
                "$defs": {"node": {"properties": {"next": {"$ref": "#/$defs/node"}}, "x-sensitive": True}},
                "$ref": "#/$defs/node",
            },
            ["(the parameters as a whole)"],
        ),
        ({"properties": {"x": {"x-sensitive": "yes"}}}, []),  # not a boolean: not a mark (the engine refuses it)
    ],
)
def test_sensitive_fields(schema: dict[str, object], fields: list[str]) -> None:
    assert sensitive_fields(schema) == fields
