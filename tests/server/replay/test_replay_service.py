"""`replay_stored` on a session recorded through the API, on SQLite and PostgreSQL: the report names exactly the
decisions whose outcome the candidate changes, skips the confirmations, and counts the proposals a rule cannot
re-decide without a sensitive value as not replayable."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import BLIND, POLICIES, STRICTER, Clock, Recorded, blind_outcome, expected_transitions, record_session
from conftest import stricter_outcome as stricter

from aegis_server.engine import EngineConfig
from aegis_server.inprocess import InProcessServer
from aegis_server.replay import ReplayReport, candidate_from_files, replay_stored
from aegis_server.replay import service as replay_service

WIDE = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


def _transitions(report: ReplayReport) -> dict[tuple[str, str], list[str]]:
    return {(t.from_, t.to): t.sample_decision_ids for t in report.transitions}


async def _replay(server: InProcessServer, path: object, **options: object) -> ReplayReport:
    store = server.service.store
    candidate = await candidate_from_files(store, path)
    since, until = options.pop("window", WIDE)  # type: ignore[misc]
    return await replay_stored(
        store,
        candidate.policy_set,
        since=since,
        until=until,
        config=EngineConfig(),
        samples=1000,
        description=candidate.description,
        **options,  # type: ignore[arg-type]
    )


def _check_stricter(report: ReplayReport, recorded: list[Recorded]) -> None:
    expected = expected_transitions(recorded, stricter)
    assert _transitions(report) == expected
    originals = [item for item in recorded if not item.confirmation]
    unreplayable = [item for item in originals if stricter(item) is None]
    changed = sum(len(ids) for ids in expected.values())
    totals = report.totals
    assert totals.stored == len(recorded)
    assert totals.confirmations_skipped == len(recorded) - len(originals) > 0
    assert totals.not_replayable == {"sensitive_parameters": len(unreplayable)}
    assert len(unreplayable) > 0
    assert totals.replayed == len(originals) - len(unreplayable)
    assert (totals.changed, totals.unchanged) == (changed, totals.replayed - changed)
    assert changed > 0 and totals.unchanged > 0
    rules = {(t.from_, t.to): [(r.policy_id, r.count) for r in t.rules] for t in report.transitions}
    assert rules == {
        key: [("queries/production" if key[1] == "ESCALATE" else "files/system", len(ids))]
        for key, ids in expected.items()
    }
    counts = [t.count for t in report.transitions]
    assert counts == sorted(counts, reverse=True)


async def test_stricter_candidate_reports_exactly_the_changed_decisions(store_url: str, clock: Clock) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=store_url, clock=clock) as server:
        recorded = await record_session(server, clock, 36)
        report = await _replay(server, STRICTER)
        _check_stricter(report, recorded)
        assert report.candidate.kind == "files" and report.candidate.path == str(STRICTER)
        assert report.truncated is False
        replayed = [item for item in recorded if not item.confirmation and stricter(item) is not None]
        changed = {i for ids in expected_transitions(recorded, stricter).values() for i in ids}
        by_version: dict[int | None, list[int]] = {}
        for item in replayed:
            counts = by_version.setdefault(item.policy_version, [0, 0])
            counts[0] += 1
            counts[1] += item.decision_id in changed
        assert [(v.version, v.proposals, v.changed) for v in report.by_original_version] == [
            (version, *counts)
            for version, counts in sorted(by_version.items(), key=lambda i: -1 if i[0] is None else i[0])
        ]


async def test_worker_processes_make_the_same_report(
    store_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window this small stays in one process unless the threshold says otherwise.
    monkeypatch.setattr(replay_service, "PARALLEL_MIN_SEQUENCES", 1)
    async with InProcessServer(policy_paths=[POLICIES], db_url=store_url, clock=clock) as server:
        recorded = await record_session(server, clock, 30)
        alone = await _replay(server, STRICTER)
        spread = await _replay(server, STRICTER, workers=2)
        _check_stricter(spread, recorded)
        assert spread.totals == alone.totals
        assert spread.transitions == alone.transitions


async def test_a_small_window_stays_in_one_process(
    sqlite_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_processes(*args: object) -> object:
        raise AssertionError("a window of a few proposals must not start worker processes")

    monkeypatch.setattr(replay_service, "_in_processes", no_processes)
    async with InProcessServer(policy_paths=[POLICIES], db_url=sqlite_url, clock=clock) as server:
        recorded = await record_session(server, clock, 12)
        _check_stricter(await _replay(server, STRICTER, workers=2), recorded)


async def test_rules_not_reading_the_hashed_value_replay_every_proposal_at_its_time(
    sqlite_url: str, clock: Clock
) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=sqlite_url, clock=clock) as server:
        recorded = await record_session(server, clock, 36)
        report = await _replay(server, BLIND)
        expected = expected_transitions(recorded, blind_outcome)
        assert _transitions(report) == expected
        assert report.totals.not_replayable == {}
        # time.hour rules see each proposal's original decision time (12:00 .. 17:50 on the decision clock)
        assert ("ALLOW", "ESCALATE") in expected
        assert ("REQUIRE_CONFIRMATION", "DENY") in expected


async def test_window_and_samples_and_limit(sqlite_url: str, clock: Clock) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=sqlite_url, clock=clock) as server:
        first = await record_session(server, clock, 12, seed=1)
        middle = datetime.now(timezone.utc)
        second = await record_session(server, clock, 12, seed=2)
        late = await _replay(server, STRICTER, window=(middle, middle + timedelta(hours=1)))
        assert late.totals.stored == len(second)
        assert _transitions(late) == {key: ids for key, ids in expected_transitions(second, stricter).items()}
        early = await _replay(server, STRICTER, window=(middle - timedelta(hours=1), middle))
        assert early.totals.stored == len(first)
        assert _transitions(early) == expected_transitions(first, stricter)

        store = server.service.store
        candidate = await candidate_from_files(store, STRICTER)
        few = await replay_stored(
            store, candidate.policy_set, since=WIDE[0], until=WIDE[1], config=EngineConfig(), samples=1, limit=5
        )
        assert few.truncated is True and few.totals.stored == 5
        oldest = expected_transitions((first + second)[:5], stricter)
        assert {(t.from_, t.to): t.count for t in few.transitions} == {k: len(v) for k, v in oldest.items()}
        assert all(t.sample_decision_ids == oldest[(t.from_, t.to)][:1] for t in few.transitions)


async def test_the_reader_pairs_each_proposal_with_its_decision(store_url: str, clock: Clock) -> None:
    async with InProcessServer(policy_paths=[POLICIES], db_url=store_url, clock=clock) as server:
        recorded = await record_session(server, clock, 15)
        history = server.service.store.proposal_history
        sequences = await history.sequence_range(*WIDE)
        read = [item async for batch in history.read(sequences, slice_size=7) for item in batch]
        assert [item.decision_id for item in read] == [item.decision_id for item in recorded]
        assert [item.outcome for item in read] == [item.outcome for item in recorded]
        assert [item.decided_at for item in read] == [item.decided_at for item in recorded]
        assert [item.parent_decision_id is not None for item in read] == [item.confirmation for item in recorded]
        for stored, sent in zip(read, recorded, strict=True):
            assert stored.redacted == (sent.capability == "payments.charge" and not sent.confirmation)
            if not sent.confirmation:
                parameters = stored.payload["action"]["parameters"]
                if stored.redacted:
                    assert parameters["card_number"].startswith("hmac-sha256:")
                    assert parameters["amount"] == sent.parameters["amount"]
                else:
                    assert parameters == sent.parameters
        empty = await history.sequence_range(WIDE[1], WIDE[1] + timedelta(days=1))
        assert [batch async for batch in history.read(empty)] == []
