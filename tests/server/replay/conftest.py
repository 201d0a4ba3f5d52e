"""Fixtures of the replay tests: a session recorded through the API (db queries, file reads and card payments,
some confirmed with their token), and the expected outcomes of each candidate worked out here, from what was
sent, without the engine."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aegis_server.inprocess import InProcessServer

HERE = Path(__file__).parent
POLICIES = HERE / "policies.yaml"
STRICTER = HERE / "candidate_stricter"
BLIND = HERE / "candidate_blind"


class Clock:
    """The server's decision clock, moved by hand (the audit records keep the real time)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Recorded:
    """One decision of the recorded session."""

    decision_id: str
    body: dict[str, Any]
    outcome: str
    decided_at: datetime
    confirmation: bool = False
    policy_version: int | None = None

    @property
    def capability(self) -> str:
        return str(self.body["action"]["capability"])

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.body["action"]["parameters"])


def _body(rng: random.Random, index: int) -> dict[str, Any]:
    kind = index % 3
    if kind == 0:
        action = {
            "capability": "db.query",
            "parameters": {
                "sql": rng.choice(["SELECT 1", "SELECT * FROM t", "DROP TABLE t"]),
                "database": rng.choice(["production", "staging"]),
            },
        }
    elif kind == 1:
        action = {"capability": "files.read", "parameters": {"path": rng.choice(["/etc/passwd", "/srv/report.csv"])}}
    else:
        card = rng.choice(["4000000000000002", "5500000000000004"])
        action = {
            "capability": "payments.charge",
            "parameters": {"card_number": card, "amount": rng.choice([20, 80, 150])},
        }
    return {
        "actor": {"id": f"agent-{index % 4}", "type": "ai-agent"},
        "action": action,
        "context": {"session_id": "recorded", "metadata": {"step": index}},
    }


async def record_session(server: InProcessServer, clock: Clock, count: int, seed: int = 17) -> list[Recorded]:
    """Propose `count` proposals (ten minutes apart on the decision clock), confirming every
    REQUIRE_CONFIRMATION with its token; returns every decision made, confirmations included."""
    client = server.async_http_client()
    rng = random.Random(seed)
    recorded: list[Recorded] = []
    for index in range(count):
        body = _body(rng, index)
        response = await client.post("/api/v1/governance/propose", json=body)
        assert response.status_code == 200, response.text
        decision = response.json()
        version = decision.get("policy_version")
        recorded.append(Recorded(decision["decision_id"], body, decision["outcome"], clock.now, policy_version=version))
        if decision["outcome"] == "REQUIRE_CONFIRMATION":
            confirmed = await client.post(
                "/api/v1/governance/propose", json={**body, "confirmation_token": decision["confirmation_token"]}
            )
            assert confirmed.json()["outcome"] == "ALLOW", confirmed.text
            recorded.append(
                Recorded(
                    confirmed.json()["decision_id"], body, "ALLOW", clock.now, confirmation=True, policy_version=version
                )
            )
        clock.now += timedelta(minutes=10)
    return recorded


def stricter_outcome(item: Recorded) -> str | None:
    """The outcome under candidate_stricter; None: not replayable (its shadow rule reads the card number)."""
    parameters = item.parameters
    if item.capability == "db.query":
        if "DROP" in parameters["sql"]:
            return "DENY"
        return "ESCALATE" if parameters["database"] == "production" else "ALLOW"
    if item.capability == "files.read":
        return "DENY" if parameters["path"].startswith("/etc/") else "ALLOW"
    return None


def blind_outcome(item: Recorded) -> str | None:
    """The outcome under candidate_blind (every proposal replayable: no rule reads the card number)."""
    parameters = item.parameters
    if item.capability == "db.query":
        return "DENY" if "DROP" in parameters["sql"] else "ALLOW"
    if item.capability == "files.read":
        return "ESCALATE" if item.decided_at.hour >= 16 else "ALLOW"
    amount = parameters["amount"]
    return "DENY" if amount > 50 else "ALLOW"


def expected_transitions(
    recorded: list[Recorded], outcome_of: Callable[[Recorded], str | None]
) -> dict[tuple[str, str], list[str]]:
    """(from, to) -> the decision ids (oldest first) whose outcome the candidate changes."""
    changed: dict[tuple[str, str], list[str]] = {}
    for item in recorded:
        if item.confirmation:
            continue
        new = outcome_of(item)
        if new is not None and new != item.outcome:
            changed.setdefault((item.outcome, new), []).append(item.decision_id)
    return changed


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(tmp_path: Path, clock: Clock) -> AsyncIterator[InProcessServer]:
    async with InProcessServer(
        policy_paths=[POLICIES],
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}",
        clock=clock,
        run_background_tasks=False,
        secret="test-secret-of-at-least-16-bytes",
    ) as running:
        yield running


@pytest.fixture
def make_server(tmp_path: Path, clock: Clock) -> Callable[..., InProcessServer]:
    """An InProcessServer on a SQLite file in tmp_path; keyword arguments override settings."""

    def factory(**overrides: Any) -> InProcessServer:
        return InProcessServer(
            policy_paths=[POLICIES],
            db_url=f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}",
            clock=clock,
            run_background_tasks=False,
            secret="test-secret-of-at-least-16-bytes",
            **overrides,
        )

    return factory
