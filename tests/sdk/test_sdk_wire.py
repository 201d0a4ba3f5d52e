"""The wire pieces the fake platform shares with the server (`aegis_sdk._wire`), and the fake using them."""

from __future__ import annotations

import importlib.util

import pytest

from aegis_sdk import GovernanceError, PermissionDeniedError
from aegis_sdk._wire import canonical
from aegis_sdk._wire.cursors import CursorError, decode_cursor, encode_cursor
from aegis_sdk._wire.envelope import error_body, not_found
from aegis_sdk._wire.listing import read_listing_query
from aegis_sdk.testing import FakePlatform

VALUES = [
    {"b": 1.0, "a": "e\u0301", "z": [1e-5, 1e20, 2**70, -0.0, 0.1, '\x00\x1f\u2028"\\'], "k": None, "t": True},
    {"\U0001f600": (1, 2), "\u00e9": {"x": 12345678901234567890.5}},
    3.14,
    "text",
    [],
]


@pytest.mark.skipif(importlib.util.find_spec("orjson") is None, reason="orjson is not installed")
def test_canonical_json_is_the_same_bytes_with_and_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [canonical.canonical_json(value) for value in VALUES]
    monkeypatch.setattr(canonical, "_orjson", None)
    assert [canonical.canonical_json(value) for value in VALUES] == fast
    assert fast[0] == (
        b'{"a":"\xc3\xa9","b":1,"k":null,"t":true,"z":[1e-05,1e+20,1180591620717411303424,0,0.1,'
        b'"\\u0000\\u001f\xe2\x80\xa8\\"\\\\"]}'
    )


def test_cursors_round_trip_and_refuse_other_listings() -> None:
    cursor = encode_cursor("decisions", "desc", 42)
    assert decode_cursor(cursor, "decisions", "desc") == 42
    for wrong in (("audit", "desc"), ("decisions", "asc")):
        with pytest.raises(CursorError):
            decode_cursor(cursor, *wrong)
    with pytest.raises(CursorError, match="pass the next_cursor of the previous page unchanged"):
        decode_cursor("not-a-cursor", "decisions", "desc")


def test_error_body_and_listing_query() -> None:
    error = not_found("policy", "p1")
    body = error_body(error.type, error.code, error.message, error.details, "req-1")
    assert body["error"]["request_id"] == "req-1" and body["error"]["details"] == {"resource": "policy", "id": "p1"}
    filters, limit = read_listing_query({"outcome": "SUCCESS", "limit": "7"}, audit=True)
    assert (filters.outcome, limit) == ("SUCCESS", 7)  # the audit log takes execution statuses too


def test_fake_pages_with_the_server_cursors_and_words_a_bad_one_as_the_server() -> None:
    fake = FakePlatform()
    with fake.client() as client:
        made = [client.propose({"id": "a", "type": "ai-agent"}, {"capability": "x.y"}).decision_id for _ in range(3)]
        assert [d.decision_id for d in client.decisions.list(limit=2)] == made[::-1]
    with fake.http_client() as http:
        first = http.get("/api/v1/governance/decisions", params={"limit": 1}).json()
        assert decode_cursor(first["next_cursor"], "decisions", "desc") > 0
        bad = http.get("/api/v1/governance/decisions", params={"cursor": encode_cursor("audit", "asc", 1)})
        assert bad.status_code == 422 and bad.json()["error"]["details"] == {"field": "cursor"}
        assert bad.json()["error"]["message"].startswith("invalid cursor (a cursor of the audit listing")


def test_fake_keys_and_final_reasons() -> None:
    fake = FakePlatform(scopes=["governance:propose", "governance:read"])
    reviewer_key = fake.add_key("carol-ops", scopes=["governance:review"])
    fake.script("deploy.*", "ESCALATE")
    with fake.client() as agent, fake.client(api_key=reviewer_key) as reviewer:
        pending = agent.propose({"id": "bot", "type": "ai-agent"}, {"capability": "deploy.prod"})
        with pytest.raises(PermissionDeniedError):
            agent.decisions.review(pending.decision_id, approve=False)
        denied = reviewer.decisions.review(pending.decision_id, approve=False)
        assert denied.reason.endswith("; final DENY: the reviewer carol-ops denied it")
        with pytest.raises(GovernanceError):
            reviewer.decisions.review(pending.decision_id, approve=True)
        waiting = agent.propose({"id": "bot", "type": "ai-agent"}, {"capability": "deploy.prod"})
    assert fake.expire(waiting.decision_id).reason.endswith("no reviewer decided before the review deadline")
    fake.reset()
    with fake.client(api_key=reviewer_key) as reviewer, pytest.raises(PermissionDeniedError):
        reviewer.decisions.review("dec_any", approve=True)  # reset forgot the key: it is the default key now
