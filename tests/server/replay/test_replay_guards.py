"""What a replay must not do, through `replay_stored` and the API on a recorded session: guess when the
candidate's schema decides on a value kept only as a hash (SQLite and PostgreSQL: the schema the proposal was
decided under is read from the stored versions), parse the stored rows on the event loop, or run past the
server's `replay_timeout_seconds`."""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
import yaml
from conftest import POLICIES, Clock, record_session

from aegis_sdk.models import Capability, Policy
from aegis_server.engine import EngineConfig
from aegis_server.inprocess import InProcessServer
from aegis_server.replay import ReplayReport, candidate_from_documents, replay_stored

WIDE = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))
DOCUMENTS = yaml.safe_load(POLICIES.read_text())


def _documents(card_schema: dict[str, Any]) -> tuple[list[Policy], list[Capability]]:
    """The session's own policies, with `card_schema` for the card number of payments.charge."""
    documents = copy.deepcopy(DOCUMENTS)
    for capability in documents["capabilities"]:
        if capability["name"] == "payments.charge":
            capability["parameter_schema"]["properties"]["card_number"] = card_schema
    return (
        [Policy.model_validate(item) for item in documents["policies"]],
        [Capability.model_validate(item) for item in documents["capabilities"]],
    )


async def _replay(server: InProcessServer, card_schema: dict[str, Any]) -> ReplayReport:
    candidate = candidate_from_documents(*_documents(card_schema))
    return await replay_stored(
        server.service.store, candidate.policy_set, since=WIDE[0], until=WIDE[1], config=EngineConfig()
    )


async def test_a_candidate_schema_deciding_on_a_hashed_value_is_not_replayable(store_url: str, clock: Clock) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=store_url, clock=clock) as server:
        recorded = await record_session(server, clock, 18)
        payments = [item for item in recorded if item.capability == "payments.charge" and not item.confirmation]
        assert payments

        # the card numbers are 16 digits: a minimum of 20 refuses every one, the 76-character hash passes
        stricter = await _replay(server, {"type": "string", "x-sensitive": True, "minLength": 20})
        assert stricter.totals.not_replayable == {"sensitive_parameters": len(payments)}
        assert stricter.transitions == []

        # the schema they were decided under: every payment replays, unchanged
        same = await _replay(server, {"type": "string", "x-sensitive": True})
        assert same.totals.not_replayable == {}
        assert same.totals.changed == 0


async def test_stored_rows_are_parsed_off_the_event_loop(
    sqlite_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=sqlite_url, clock=clock) as server:
        await record_session(server, clock, 9)
        loop_thread = threading.current_thread()
        parsed_on: list[threading.Thread] = []
        loads = orjson.loads

        def watched_loads(data: Any) -> Any:
            parsed_on.append(threading.current_thread())
            return loads(data)

        monkeypatch.setattr(orjson, "loads", watched_loads)
        report = await _replay(server, {"type": "string", "x-sensitive": True})
        assert report.totals.stored > 0
        assert parsed_on and loop_thread not in parsed_on


async def test_an_api_replay_stops_at_the_servers_time_bound(make_server: Any, clock: Clock) -> None:
    async with make_server(replay_timeout_seconds=1e-9) as server:
        await record_session(server, clock, 6)
        client = server.async_http_client()
        response = await client.post(
            "/api/v1/policies/replay", json={"since": "1h", "candidate": {"policies": [], "capabilities": []}}
        )
        assert response.status_code == 200, response.text
        report = response.json()
        assert (report["truncated"], report["truncated_reason"]) == (True, "timeout")
        assert report["totals"]["stored"] < 6

    async with make_server() as server:
        client = server.async_http_client()
        response = await client.post(
            "/api/v1/policies/replay", json={"since": "1h", "candidate": {"policies": [], "capabilities": []}}
        )
        assert (response.json()["truncated"], response.json()["truncated_reason"]) == (False, None)
