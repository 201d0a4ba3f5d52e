"""Token attacks, key handling and rate limits against a real `aegis-server serve` process (debug logs on):

- a confirmation token replayed, expired, presented by another actor, for other parameters, for another
  capability, forged, or signed with another server's secret: refused with its code, audited as
  `confirmation_rejected`, and the genuine token still works afterwards — once;
- approving or denying a decision that is not a pending escalation is refused;
- keys are compared in constant time and stored only hashed; nothing the server or the SDK logs contains
  a key, a token or a parameter value (the captured logs are grepped);
- the rate limit holds per key, and one key at its limit does not starve another.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from aegis_sdk import (
    AegisClient,
    ConfirmationError,
    ConfirmationExpiredError,
    ConfirmationMismatchError,
    ConfirmationUsedError,
    RateLimitError,
    ReviewError,
)
from aegis_sdk._wire.canonical import canonical_json
from aegis_server.engine import keyed_digest, value_key_from_secret
from aegis_server.store import Store
from aegis_server.tokens import TokenSigner
from reliability._support import ServerProcess, StoreSnapshot, create_key, run_async, sqlite_url

SECRETS: list[str] = []  # every key, token and parameter value used here: none may reach a log
PROPOSE = "/api/v1/governance/propose"


class Served:
    def __init__(self, server: ServerProcess, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.agent = create_key(server.db_url, "agent", ["governance:propose", "governance:read"])
        self.reviewer = create_key(server.db_url, "reviewer", ["governance:review", "governance:read"])
        self.auditor = create_key(server.db_url, "auditor", ["audit:read"])
        SECRETS.extend([self.agent, self.reviewer, self.auditor])

    def client(self, key: str | None = None) -> AegisClient:
        return AegisClient(endpoint=self.server.endpoint, api_key=key or self.agent, retries=0)

    def secret(self) -> bytes:
        async def read() -> bytes:
            store = await Store.open(self.server.db_url, migrate=False)
            try:
                return await store.get_or_create_secret()
            finally:
                await store.close()

        return run_async(read)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("tokens")
    with ServerProcess(sqlite_url(folder), folder / "server.log", log_level="debug") as server:
        yield Served(server, folder)


def _body(capability: str, value: str, actor: str = "agent-1") -> dict[str, Any]:
    SECRETS.append(value)
    return {
        "actor": {"id": actor, "type": "ai-agent"},
        "action": {"capability": capability, "parameters": {} if capability != "rel.allow" else {"note": value}},
        "context": {"metadata": {"marker": value}},
    }


def _rejections(served: Served, parent: str) -> list[str]:
    snapshot = StoreSnapshot(served.server.db_url)
    return [
        row["payload"]["code"]
        for row in snapshot.records("confirmation_rejected")
        if row["payload"].get("parent_decision_id") == parent
    ]


def test_every_token_attack_is_refused_audited_and_leaves_the_token_usable_once(served: Served) -> None:
    value = "param-" + secrets.token_hex(8)
    body = _body("rel.confirm", value)
    with served.client() as client:
        decision = client.propose(**body)
        token = decision.confirmation_token
        assert token is not None and decision.outcome == "REQUIRE_CONFIRMATION"
        SECRETS.append(token)
        parent = decision.decision_id

        # Another actor, another capability, other parameters: mismatch, naming what differs.
        other_actor = {**body, "actor": {"id": "agent-2", "type": "ai-agent"}}
        other_capability = {**body, "action": {"capability": "rel.escalate", "parameters": {}}}
        other_parameters = {**body, "action": {"capability": "rel.confirm", "parameters": {"x": 1}}}
        for attempt, what in (
            (other_actor, "actor"),
            (other_capability, "capability"),
            (other_parameters, "parameters"),
        ):
            with pytest.raises(ConfirmationMismatchError) as caught:
                client.propose(**attempt, confirmation_token=token)
            assert caught.value.details["mismatched"] == [what]

        # Expired: a token genuinely signed with this server's secret, for this decision, but past its expiry.
        # The binding's params_hash is the server's keyed HMAC of the canonical parameters (issue 13).
        signer = TokenSigner(served.secret())
        params_hash = keyed_digest(value_key_from_secret(served.secret()), canonical_json({}))
        expired = signer.issue(
            decision_id=parent,
            actor_id="agent-1",
            capability="rel.confirm",
            params_hash=params_hash,
            expires_at=datetime.now(timezone.utc) - timedelta(seconds=5),
        )
        SECRETS.append(expired)
        with pytest.raises(ConfirmationExpiredError):
            client.propose(**body, confirmation_token=expired)

        # Forged: another server's secret, a changed MAC, a changed expiry, another decision id, garbage.
        foreign = TokenSigner(secrets.token_bytes(32)).issue(
            decision_id=parent,
            actor_id="agent-1",
            capability="rel.confirm",
            params_hash=params_hash,
            expires_at=datetime.now(timezone.utc) + timedelta(minutes=5),
        )
        prefix, decision_id, expiry, mac = token.split(".")
        invalid_before = sum(
            1
            for r in StoreSnapshot(served.server.db_url).records("confirmation_rejected")
            if r["payload"]["code"] == "confirmation_invalid"
        )
        forged = [
            foreign,
            f"{prefix}.{decision_id}.{expiry}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
            f"{prefix}.{decision_id}.{int(expiry) + 3600}.{mac}",
            f"{prefix}.dec_{'0' * 32}.{expiry}.{mac}",
            "ct1.not-a-token",
        ]
        SECRETS.extend(forged)
        for bad in forged:
            with pytest.raises(ConfirmationError) as refused:
                client.propose(**body, confirmation_token=bad)
            assert refused.value.code == "confirmation_invalid", bad

        # None of that consumed the token: it works once, then it is used.
        allowed = client.propose(**body, confirmation_token=token)
        assert allowed.outcome == "ALLOW" and allowed.parent_decision_id == parent
        with pytest.raises(ConfirmationUsedError):
            client.propose(**body, confirmation_token=token)

    codes = _rejections(served, parent)
    expected = ["confirmation_mismatch"] * 3 + ["confirmation_expired", "confirmation_used"]
    assert sorted(codes) == sorted(expected), codes
    # A token this server did not issue is audited too, without linking it to the decision it names.
    snapshot = StoreSnapshot(served.server.db_url)
    invalid = [r for r in snapshot.records("confirmation_rejected") if r["payload"]["code"] == "confirmation_invalid"]
    assert len(invalid) - invalid_before == len(forged)
    assert all("parent_decision_id" not in r["payload"] for r in invalid)
    assert snapshot.by_id[parent]["token_used_by"] == allowed.decision_id


def test_reviewing_a_decision_that_is_not_pending_is_refused(served: Served) -> None:
    with served.client() as agent, served.client(served.reviewer) as reviewer:
        allow = agent.propose(**_body("rel.allow", "review-" + secrets.token_hex(4)))
        approved = agent.propose(**_body("rel.escalate", "a-" + secrets.token_hex(4)))
        denied = agent.propose(**_body("rel.escalate", "d-" + secrets.token_hex(4)))
        reviewer.decisions.review(approved.decision_id, approve=True)
        reviewer.decisions.review(denied.decision_id, approve=False)
        for decision, status in ((allow, "not_escalated"), (approved, "approved"), (denied, "denied")):
            for approve in (True, False):
                with pytest.raises(ReviewError) as refused:
                    reviewer.decisions.review(decision.decision_id, approve=approve)
                assert (refused.value.code, refused.value.details["status"]) == ("not_pending", status)
        # A key without the review scope cannot approve at all.
        pending = agent.propose(**_body("rel.escalate", "p-" + secrets.token_hex(4)))
        response = httpx.post(
            f"{served.server.endpoint}/api/v1/governance/decisions/{pending.decision_id}/review",
            json={"approve": True},
            headers={"Authorization": f"Bearer {served.agent}"},
        )
        assert (response.status_code, response.json()["error"]["code"]) == (403, "missing_scope")
        assert agent.decisions.get(pending.decision_id).review.status == "pending"  # type: ignore[union-attr]


def test_keys_are_compared_in_constant_time_and_stored_hashed(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Constant time: authentication goes through hmac.compare_digest, for a right and for a wrong key.
    import aegis_server.store.keys as api_keys_module

    calls: list[tuple[Any, Any]] = []
    compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(api_keys_module.hmac, "compare_digest", spy)

    async def check() -> tuple[bool, bool]:
        store = await Store.open(sqlite_url(tmp_path), migrate=True)
        try:
            key, _ = await store.create_api_key("probe", ["admin"])
            good = await store.authenticate(key) is not None
            wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
            bad = await store.authenticate(wrong) is not None
            return good, bad
        finally:
            await store.close()

    assert asyncio.run(check()) == (True, False)
    assert calls, "authenticate() did not compare in constant time"

    # Stored hashed: no key appears anywhere in the database files of the served server.
    database = [p for p in served.folder.iterdir() if p.name.startswith("aegis.db")]
    assert database
    for path in database:
        content = path.read_bytes()
        for key in (served.agent, served.reviewer, served.auditor):
            assert key.encode() not in content, f"an API key is stored in clear in {path.name}"


def test_the_rate_limit_holds_per_key_and_does_not_starve_another(tmp_path: Path) -> None:
    env = {"AEGIS_RATE_LIMIT_PER_MINUTE": "60", "AEGIS_RATE_LIMIT_BURST": "5", "AEGIS_AUTH_CACHE_SECONDS": "0"}
    with ServerProcess(sqlite_url(tmp_path), tmp_path / "server.log", env=env) as server:
        flooder = create_key(server.db_url, "flooder", ["governance:read"])
        other = create_key(server.db_url, "other", ["governance:read"])
        statuses: list[int] = []
        retry_after: list[str] = []
        stop = threading.Event()

        def flood() -> None:
            with httpx.Client(base_url=server.endpoint, headers={"Authorization": f"Bearer {flooder}"}) as http:
                for _ in range(60):
                    if stop.is_set():
                        return
                    response = http.get("/api/v1/capabilities")
                    statuses.append(response.status_code)
                    if response.status_code == 429:
                        retry_after.append(response.headers["retry-after"])

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            with AegisClient(endpoint=server.endpoint, api_key=other, retries=0) as client:
                answers = [client.capabilities.list() for _ in range(5)]  # its own full burst, during the flood
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert all(isinstance(a, list) for a in answers)
        assert statuses.count(429) > 0 and all(int(v) >= 1 for v in retry_after)
        # Per key: the flooder got at most its burst plus what refilled (1/s) while it flooded — a few.
        assert statuses.count(200) <= 5 + 10, statuses.count(200)
        # The flooder's limit, as the SDK sees it.
        with (
            AegisClient(endpoint=server.endpoint, api_key=flooder, retries=0) as client,
            pytest.raises(RateLimitError) as limited,
        ):
            for _ in range(10):
                client.capabilities.list()
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1


def _log_with(served: Served, line: str, timeout: float = 10.0) -> str:
    """The server's log once it holds `line` (the server writes INFO lines together, within 0.2 s)."""
    deadline = time.monotonic() + timeout
    while line not in (log := served.server.logs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert line in log, log[-2000:]
    return log


def test_no_key_token_or_parameter_value_reaches_a_log(
    served: Served, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in this module: it also greps what the tests above made the server log."""
    value = "logged-" + secrets.token_hex(8)
    with caplog.at_level(logging.DEBUG):
        with served.client() as client:
            decision = client.propose(**_body("rel.confirm", value))
            assert decision.confirmation_token is not None
            SECRETS.append(decision.confirmation_token)
            client.propose(**_body("rel.confirm", value), confirmation_token=decision.confirmation_token)
            body = _body("rel.allow", value)
            body["action"]["parameters"]["secret"] = "sensitive-" + value
            SECRETS.append("sensitive-" + value)
            client.propose(**body)
        # Failures that echo input must not echo values either.
        http = httpx.Client(base_url=served.server.endpoint, headers={"Authorization": f"Bearer {served.agent}"})
        with http:
            http.post(PROPOSE, json={**_body("rel.allow", value), "actor": {"id": value, "type": "robot"}})
            http.post(PROPOSE, json=_body("rel.allow", value) | {"extra": value})
            http.post(
                PROPOSE,
                json={**_body("rel.allow", value), "action": {"capability": "rel.allow", "parameters": {"n": value}}},
            )
            wrong_key = "aegis_sk_" + secrets.token_urlsafe(32)
            SECRETS.append(wrong_key)
            http.get("/api/v1/capabilities", headers={"Authorization": f"Bearer {wrong_key}"})
    server_log = _log_with(served, "GET /api/v1/capabilities -> 401")  # the last request's line
    client_log = "\n".join(record.getMessage() for record in caplog.records)
    assert "propose" in server_log  # the access log is there, at debug level
    for secret in SECRETS:
        assert secret not in server_log, f"the server logged a secret or value ({secret[:12]}…)"
        assert secret not in client_log, f"the SDK logged a secret or value ({secret[:12]}…)"
