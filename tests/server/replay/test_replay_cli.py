"""`aegis-server policy replay`: the human table and `--json` of a recorded session, the three kinds of
candidate, and exit 2 with a message that says what to fix for bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import POLICIES, STRICTER, Clock, Recorded, expected_transitions, record_session, stricter_outcome

from aegis_server.cli import main
from aegis_server.inprocess import InProcessServer
from aegis_server.policies.files import load_policy_paths
from aegis_server.store import Store
from aegis_server.store.policy_versions import NewPolicyVersion


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["policy", "replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def _empty_database(tmp_path: Path) -> str:
    """A migrated database where nothing was decided and no policy-set version is recorded."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    store = await Store.open(url)
    await store.close()
    return url


async def _record_versions(server: InProcessServer) -> tuple[int, int]:
    """Versions 1 (the session's set) and 2 (the stricter set), as the versions feature records them."""
    numbers = []
    for path in (POLICIES, STRICTER):
        documents = load_policy_paths([path])
        numbers.append(
            await server.service.store.policy_versions.record(
                NewPolicyVersion(
                    digest=f"sha256:{path.name}",
                    policies=tuple(documents.policies),
                    capabilities=tuple(documents.capabilities),
                    sources=documents.sources,
                    cause="files_loaded",
                    summary=f"loaded {path}",
                )
            )
        )
    return numbers[0], numbers[1]


def _check_json(out: str, recorded: list[Recorded]) -> dict[str, object]:
    report = json.loads(out)
    expected = expected_transitions(recorded, stricter_outcome)
    assert {(t["from"], t["to"]): t["sample_decision_ids"] for t in report["transitions"]} == {
        key: ids for key, ids in expected.items()
    }
    assert report["totals"]["confirmations_skipped"] == sum(item.confirmation for item in recorded)
    assert report["totals"]["not_replayable"]["sensitive_parameters"] > 0
    return dict(report)


async def test_json_and_human_reports_of_a_candidate_folder(
    tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    async with InProcessServer(policy_paths=[POLICIES], db_url=url, clock=clock) as server:
        recorded = await record_session(server, clock, 30)
    code, out, err = await _cli(
        capsys, "--since", "1h", "--candidate", str(STRICTER), "--db", url, "--json", "--samples", "100"
    )
    assert (code, err) == (0, "")
    report = _check_json(out, recorded)
    assert report["candidate"] == {
        "kind": "files",
        "path": str(STRICTER),
        "version": None,
        "digest": report["candidate"]["digest"],
    }  # type: ignore[index]

    code, out, err = await _cli(capsys, "--since", "1h", "--candidate", str(STRICTER), "--db", url, "--samples", "2")
    assert (code, err) == (0, "")
    expected = expected_transitions(recorded, stricter_outcome)
    lines = out.splitlines()
    assert lines[2].split() == ["TRANSITION", "COUNT", "RULES"]
    for (origin, outcome), ids in expected.items():
        row = next(line for line in lines if line.startswith(f"{origin} -> {outcome} "))
        rule = "queries/production" if outcome == "ESCALATE" else "files/system"
        assert row.split()[3:] == [str(len(ids)), rule, f"({len(ids)})"]
        assert f"e.g. {ids[0]}, {ids[1]}" in out
    assert "confirmations skipped" in lines[-2] and "sensitive_parameters" in lines[-2]
    assert lines[-1].endswith("proposals/s")


async def test_version_and_latest_version_candidates(
    tmp_path: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"
    async with InProcessServer(policy_paths=[POLICIES], db_url=url, clock=clock) as server:
        recorded = await record_session(server, clock, 24)
        original, stricter = await _record_versions(server)
    code, out, err = await _cli(
        capsys, "--since", "1h", "--version", str(stricter), "--db", url, "--json", "--samples", "100"
    )
    assert (code, err) == (0, "")
    report = _check_json(out, recorded)
    assert report["candidate"]["kind"] == "version" and report["candidate"]["version"] == stricter  # type: ignore[index]

    code, out, err = await _cli(capsys, "--since", "1h", "--version", str(original), "--db", url, "--json")
    assert code == 0
    assert json.loads(out)["transitions"] == []

    # neither: the latest version (here the stricter one)
    code, out, err = await _cli(capsys, "--since", "1h", "--db", url, "--json", "--samples", "100")
    assert code == 0
    report = _check_json(out, recorded)
    assert report["candidate"]["kind"] == "active" and report["candidate"]["version"] == stricter  # type: ignore[index]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is neither a duration (e.g. 30m, 12h, 7d, 2w) nor an RFC 3339"),
        (["--since", "2030-01-01T00:00:00"], "has no time zone; add one (e.g. 2030-01-01T00:00:00Z"),
        (["--since", "1h", "--until", "2h"], "the window is empty: --since"),
        (["--since", "1h", "--until", "soon"], "--until 'soon' is neither a duration"),
        (["--since", "1h", "--samples", "-1"], "--samples must be between 0 and 1000"),
        (["--since", "1h", "--version", "0"], "--version must be a version number"),
        (["--since", "9999999w"], "--since '9999999w' reaches back before the year 1"),
        (["--since", "1d", "--until", "9999-12-31T23:59:59-01:00"], "is outside the years 1..9999"),
        (["--since", "1h", "--version", "7"], "there is no policy-set version 7 (no version is recorded yet)"),
        (["--since", "1h"], "no policy-set version is recorded in this database yet"),
        (["--since", "1h", "--candidate", "/nonexistent/policies"], "--candidate /nonexistent/policies: no such file"),
    ],
)
async def test_bad_input_exits_2_saying_what_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    url = await _empty_database(tmp_path)
    code, out, err = await _cli(capsys, *argv, "--db", url)
    assert (code, out) == (2, "")
    assert message in err, err
    assert "Traceback" not in err


async def test_a_candidate_that_does_not_compile_exits_2_listing_the_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await _empty_database(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "policies:\n  - name: p\n    rules:\n      - {capability: db.query, outcome: ALLOW, condition: 'nope('}\n"
    )
    code, out, err = await _cli(capsys, "--since", "1h", "--candidate", str(broken), "--db", url)
    assert (code, out) == (2, "")
    assert "the candidate policy set does not compile" in err and "does not compile" in err.splitlines()[1]


async def test_candidate_and_version_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await _cli(capsys, "--since", "1h", "--candidate", str(STRICTER), "--version", "1")
    assert code == 2
    assert "not allowed with argument" in err
