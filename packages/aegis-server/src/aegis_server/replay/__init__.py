"""Replay: re-decide the stored proposals of a time window under a candidate policy set and report how the
outcomes would change (`replay_stored`). The CLI (`aegis-server policy replay`), the API
(`POST /api/v1/policies/replay`) and the console call the same service."""

from aegis_server.replay.candidate import (
    Candidate,
    CandidateError,
    candidate_from_documents,
    candidate_from_files,
    candidate_from_version,
    latest_candidate,
)
from aegis_server.replay.report import (
    NOT_REPLAYABLE_REASONS,
    REFUSALS,
    CandidateDescription,
    ReplayReport,
    ReplayTotals,
    ReplayWindow,
    RuleCount,
    Transition,
    VersionCount,
)
from aegis_server.replay.service import (
    DEFAULT_SAMPLES,
    ReplayBusy,
    one_replay_at_a_time,
    replay_on_server,
    replay_stored,
)
from aegis_server.replay.window import WindowError, parse_moment, replay_window

__all__ = [
    "DEFAULT_SAMPLES",
    "NOT_REPLAYABLE_REASONS",
    "REFUSALS",
    "Candidate",
    "CandidateDescription",
    "CandidateError",
    "ReplayBusy",
    "ReplayReport",
    "ReplayTotals",
    "ReplayWindow",
    "RuleCount",
    "Transition",
    "VersionCount",
    "WindowError",
    "candidate_from_documents",
    "candidate_from_files",
    "candidate_from_version",
    "latest_candidate",
    "one_replay_at_a_time",
    "parse_moment",
    "replay_on_server",
    "replay_stored",
    "replay_window",
]
