"""`replay_stored`: re-decide the stored proposals of a window under a candidate set and report what changed.

In one process, slices are fetched on the event loop and parsed and re-decided in worker threads (the API's
server keeps deciding); a `timeout` stops it early, reported `truncated` with the reason "timeout". With
`workers` > 1 (the CLI), the window's sequence range is split into that many contiguous parts, each read and
re-decided by a process of its own that compiles the candidate itself; their tallies
are merged in order, so the report is the one a single process would make.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import multiprocessing
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from aegis_sdk.models import Capability, Policy
from aegis_server.engine import EngineConfig, PolicySet, compile_policy_set
from aegis_server.replay.candidate import Candidate
from aegis_server.replay.original_schemas import OriginalSchemas
from aegis_server.replay.redecide import Redecider, Tally
from aegis_server.replay.report import (
    CandidateDescription,
    ReplayReport,
    ReplayTotals,
    ReplayWindow,
    RuleCount,
    Transition,
    VersionCount,
)
from aegis_server.settings import Settings
from aegis_server.store.database import Database
from aegis_server.store.engine import create_engine
from aegis_server.store.policy_versions import PolicyVersions
from aegis_server.store.proposal_history import ProposalHistory, SequenceRange

__all__ = [
    "DEFAULT_SAMPLES",
    "ReplayBusy",
    "one_replay_at_a_time",
    "replay_on_server",
    "replay_stored",
]

DEFAULT_SAMPLES = 10


THREAD_SLICE = 5_000
"""Audit sequence numbers per read in one process: the rows a slice holds arrive on the event loop, so
slices stay small enough that a server replaying keeps answering."""

PARALLEL_MIN_SEQUENCES = 100_000
"""A window spans at least this many audit sequence numbers (about half as many proposals, ~2 s in one
process) before it is spread over processes: starting one costs about a second of imports."""


class ReplayBusy(RuntimeError):
    """Another replay runs in this server process (the API and the console share one)."""


class _OneAtATime:
    """Whether a replay runs in this process (set and cleared on the event loop, so no lock is needed)."""

    running = False


_gate = _OneAtATime()


@contextlib.contextmanager
def one_replay_at_a_time() -> Iterator[None]:
    """Hold this process's one replay slot for the block; `ReplayBusy` when another replay holds it."""
    if _gate.running:
        raise ReplayBusy(
            "Another replay is running on this server; one runs at a time. Retry when it has finished, or run "
            "`aegis-server policy replay` beside the server."
        )
    _gate.running = True
    try:
        yield
    finally:
        _gate.running = False


async def replay_on_server(
    store: Any,
    settings: Settings,
    candidate: Candidate,
    *,
    since: datetime,
    until: datetime,
    samples: int = DEFAULT_SAMPLES,
    limit: int | None = None,
) -> ReplayReport:
    """A replay a running server makes (the API's, the console's): in worker threads, with the server's
    engine configuration, at most `replay_max_proposals` stored proposals (`limit` may ask for fewer), for
    at most `replay_timeout_seconds`."""
    maximum = settings.replay_max_proposals
    return await replay_stored(
        store,
        candidate.policy_set,
        since=since,
        until=until,
        config=settings.engine_config(),
        samples=samples,
        limit=min(limit or maximum, maximum),
        description=candidate.description,
        timeout=settings.replay_timeout_seconds,
    )


async def replay_stored(
    store: Any,
    candidate: PolicySet,
    *,
    since: datetime,
    until: datetime,
    config: EngineConfig,
    samples: int = DEFAULT_SAMPLES,
    limit: int | None = None,
    description: CandidateDescription | None = None,
    workers: int = 1,
    timeout: float | None = None,
) -> ReplayReport:
    """Re-decide the proposals decided in `[since, until)` (by their audit records' time) under `candidate`
    with `config`, keeping up to `samples` decision ids per transition. `limit`: replay at most that many
    stored proposals, the oldest (the report says `truncated`). `workers` > 1 uses that many processes
    (not with a `limit` or a `timeout`, nor an in-memory database). `timeout`: stop after about that many
    seconds (the report says `truncated`, reason "timeout", with the counts of what was replayed)."""
    started = time.perf_counter()
    history: ProposalHistory = store.proposal_history
    sequences = await history.sequence_range(since, until)
    url = store.database.engine.url
    in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
    truncated: Literal["limit", "timeout"] | None = None
    large = sequences.end - sequences.first >= PARALLEL_MIN_SEQUENCES
    if workers > 1 and limit is None and timeout is None and not in_memory and large:
        tally = await _in_processes(
            url.render_as_string(hide_password=False), candidate, config, sequences, samples, workers
        )
    else:
        deadline = None if timeout is None else time.monotonic() + timeout
        originals = OriginalSchemas(store.policy_versions)
        tally, truncated = await _in_thread(history, originals, candidate, config, sequences, samples, limit, deadline)
    return _report(
        tally,
        ReplayWindow(since=since, until=until),
        description or CandidateDescription(kind="policies", version=candidate.version, digest=candidate.digest),
        truncated,
        time.perf_counter() - started,
    )


async def _in_thread(
    history: ProposalHistory,
    originals: OriginalSchemas,
    candidate: PolicySet,
    config: EngineConfig,
    sequences: SequenceRange,
    samples: int,
    limit: int | None,
    deadline: float | None,
) -> tuple[Tally, Literal["limit", "timeout"] | None]:
    """The tally and why it stopped early ("limit", "timeout"; None: the whole window)."""
    redecider = Redecider(candidate, config, originals)
    tally = Tally(samples=samples)
    async for batch in history.read(sequences, slice_size=THREAD_SLICE):
        if deadline is not None and time.monotonic() >= deadline:
            return tally, "timeout"
        await originals.load_for(batch)
        if limit is not None:
            remaining = limit - tally.stored
            if len(batch) > remaining:
                finished = await asyncio.to_thread(redecider.tally, batch[:remaining], tally, deadline)
                return tally, "limit" if finished else "timeout"
        if not await asyncio.to_thread(redecider.tally, batch, tally, deadline):
            return tally, "timeout"
    return tally, None


async def _in_processes(
    url: str, candidate: PolicySet, config: EngineConfig, sequences: SequenceRange, samples: int, workers: int
) -> Tally:
    policies = [policy.model_dump(mode="json") for policy in candidate.policies]
    capabilities = [capability.model_dump(mode="json") for capability in candidate.capabilities.values()]
    parts = sequences.split(workers)
    loop = asyncio.get_running_loop()
    # spawn, not fork: the parent holds threads (the database driver's) that a fork would copy mid-state.
    with concurrent.futures.ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("spawn")) as pool:
        tallies = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _replay_part, url, policies, capabilities, config, part, samples)
                for part in parts
            )
        )
    merged = Tally(samples=samples)
    for part_tally in tallies:
        merged.merge(part_tally)
    return merged


def _replay_part(
    url: str,
    policies: list[dict[str, Any]],
    capabilities: list[dict[str, Any]],
    config: EngineConfig,
    part: SequenceRange,
    samples: int,
) -> Tally:
    """One worker process: compile the candidate, read and re-decide one part of the range."""
    candidate = compile_policy_set(
        [Policy.model_validate(item) for item in policies], [Capability.model_validate(item) for item in capabilities]
    )
    originals: dict[int, dict[str, Any]] = {}
    redecider = Redecider(candidate, config, originals)
    tally = Tally(samples=samples)

    async def run() -> None:
        engine = create_engine(url)
        try:
            database = Database(engine)
            loader = OriginalSchemas(PolicyVersions(database))
            async for batch in ProposalHistory(database).read(part):
                await loader.load_for(batch)
                originals.update(loader)
                redecider.tally(batch, tally)
        finally:
            await engine.dispose()

    # This process only replays and then ends: the collector's passes over the millions of short-lived objects
    # cost a third of the read (measured); everything here is freed by reference counting.
    gc.disable()
    asyncio.run(run())
    return tally


def _report(
    tally: Tally,
    window: ReplayWindow,
    description: CandidateDescription,
    truncated: Literal["limit", "timeout"] | None,
    elapsed: float,
) -> ReplayReport:
    transitions = [
        Transition(
            **{"from": origin},
            to=outcome,
            count=part.count,
            rules=[
                RuleCount(policy_id=rule, count=count)
                for rule, count in sorted(part.rules.items(), key=lambda item: (-item[1], item[0]))
            ],
            sample_decision_ids=list(part.samples),
        )
        for (origin, outcome), part in sorted(tally.transitions.items(), key=lambda item: (-item[1].count, item[0]))
    ]
    versions = [
        VersionCount(version=version, proposals=proposals, changed=changed)
        for version, (proposals, changed) in sorted(
            tally.versions.items(), key=lambda item: -1 if item[0] is None else item[0]
        )
    ]
    return ReplayReport(
        window=window,
        candidate=description,
        totals=ReplayTotals(
            stored=tally.stored,
            replayed=tally.replayed,
            unchanged=tally.unchanged,
            changed=tally.changed,
            confirmations_skipped=tally.confirmations_skipped,
            not_replayable=dict(sorted(tally.not_replayable.items())),
        ),
        transitions=transitions,
        by_original_version=versions,
        truncated=truncated is not None,
        truncated_reason=truncated,
        elapsed_seconds=round(elapsed, 3),
        proposals_per_second=round(tally.stored / elapsed, 1) if elapsed > 0 else 0.0,
    )
