"""`aegis-server policy history|show|diff|rollback` on the database, and a running server picking up a
rollback made by the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aegis_server.cli import main

from .conftest import EMAIL, ServerFactory, email_policy, proposal, stricter_files


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _save(http: httpx.Client, method: str, path: str, body: dict[str, Any]) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code in (200, 201), response.text


def _email_outcome(http: httpx.Client) -> tuple[str, int]:
    decision = http.post("/api/v1/governance/propose", json=proposal("email.send", to="a@corp.example")).json()
    return decision["outcome"], decision["policy_version"]


@pytest.fixture
def db(make_server: ServerFactory, tmp_path: Path) -> str:
    """A database with versions 1 (files), 2 (email.send), 3 (email: ALLOW) and 4 (email: DENY)."""
    with make_server() as server:
        http = server.http_client()
        _save(http, "POST", "/api/v1/capabilities", EMAIL)
        _save(http, "POST", "/api/v1/policies", email_policy("ALLOW"))
        _save(http, "PUT", "/api/v1/policies/email", email_policy("DENY"))
    return f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"


def test_history(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = _run(capsys, "policy", "history", "--db", db)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["4", "3", "2", "1"]
    assert "policy_saved" in lines[0] and "policy 'email' saved" in lines[0] and "files_loaded" in lines[3]
    code, out, _ = _run(capsys, "policy", "history", "--db", db, "--limit", "2", "--json")
    assert code == 0
    items = json.loads(out)
    assert [item["version"] for item in items] == [4, 3] and items[0]["created_by"].startswith("key_")


def test_show(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = _run(capsys, "policy", "show", "3", "--db", db)
    assert code == 0 and out.startswith("# version 3: policy 'email' saved")
    code, out, _ = _run(capsys, "policy", "show", "3", "--db", db, "--yaml")
    content = yaml.safe_load(out)
    assert [p["name"] for p in content["policies"]] == ["baseline", "email"]
    assert "#   email: api" in out.splitlines()
    code, out, _ = _run(capsys, "policy", "show", "3", "--db", db, "--json")
    shown = json.loads(out)
    assert shown["version"] == 3 and shown["cause"] == "policy_saved" and len(shown["capabilities"]) == 3


def test_diff(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = _run(capsys, "policy", "diff", "3", "4", "--db", db)
    assert code == 0
    assert "policy email: changed (rules)" in out and "  rule send: changed" in out
    assert "--- version 3" in out and "+    outcome: DENY" in out
    code, out, _ = _run(capsys, "policy", "diff", "1", "4", "--db", db, "--json")
    diff = json.loads(out)
    assert [c["name"] for c in diff["capabilities"]] == ["email.send"]
    code, out, _ = _run(capsys, "policy", "diff", "2", "2", "--db", db)
    assert "hold the same policy set" in out


def test_rollback_needs_yes_when_not_interactive(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, _, err = _run(capsys, "policy", "rollback", "3", "--db", db)
    assert code == 2 and "add --yes" in err
    code, out, _ = _run(capsys, "policy", "history", "--db", db, "--limit", "1")
    assert out.split()[0] == "4"


def test_rollback_is_audited_and_made_by_the_cli(
    capsys: pytest.CaptureFixture[str], db: str, make_server: ServerFactory
) -> None:
    code, out, err = _run(capsys, "policy", "rollback", "3", "--db", db, "--yes")
    assert code == 0, err
    assert "Rolled back to version 3: restored policies 'email' (new version 5)." in out
    assert "policy_refresh_interval_seconds" in out
    code, out, _ = _run(capsys, "policy", "history", "--db", db, "--limit", "1", "--json")
    [newest] = json.loads(out)
    assert (newest["cause"], newest["created_by"], newest["rollback_of"]) == ("rollback", "cli", 3)
    with make_server() as server:
        log = server.http_client().get("/api/v1/audit/log", params={"event_type": "policy_rollback"}).json()
    [record] = log["items"]
    assert record["payload"]["to_version"] == 3 and record["payload"]["by"] == "cli"
    assert record["payload"]["policy_version"] == 5
    code, _, err = _run(capsys, "audit", "verify", "--db", db)
    assert code == 0, err
    code, out, _ = _run(capsys, "policy", "rollback", "3", "--db", db, "--yes")
    assert code == 0 and out.startswith("Nothing to roll back")


def test_unknown_and_bad_versions(capsys: pytest.CaptureFixture[str], db: str) -> None:
    for argv in (("show", "9"), ("diff", "1", "9"), ("rollback", "9", "--yes")):
        code, _, err = _run(capsys, "policy", *argv, "--db", db)
        assert code == 1 and "no policy-set version 9" in err and "policy history" in err, argv
    for argv in (("show", "0"), ("show", "x"), ("history", "--limit", "0")):
        code, _, err = _run(capsys, "policy", *argv, "--db", db)
        assert code == 2 and ("version number" in err or "number from 1" in err), argv


def test_a_running_server_picks_up_a_cli_rollback(
    capsys: pytest.CaptureFixture[str], db: str, make_server: ServerFactory
) -> None:
    with make_server(policy_refresh_interval_seconds=0) as server:
        http = server.http_client()
        assert _email_outcome(http) == ("DENY", 4)
        code, _, err = _run(capsys, "policy", "rollback", "3", "--db", db, "--yes")
        assert code == 0, err
        assert _email_outcome(http) == ("ALLOW", 5)


def test_rollback_says_the_files_roll_back_file_defined_policies(
    capsys: pytest.CaptureFixture[str], db: str, make_server: ServerFactory, policy_file: Path
) -> None:
    stricter_files(policy_file)
    with make_server():
        pass  # a restart with changed files: version 5
    code, out, err = _run(capsys, "policy", "rollback", "3", "--db", db, "--yes")
    assert code == 0, err
    assert "restored policies 'email'" in out
    assert f"policies 'baseline' (from files {policy_file})" in out
    assert "restore those files from version 3 (`aegis-server policy show 3 --files`) and restart the servers" in out


def test_show_prints_policy_files_that_load_as_they_are(
    capsys: pytest.CaptureFixture[str], db: str, policy_file: Path, tmp_path: Path
) -> None:
    """D6: `show --yaml` is one loadable policy file (sources as comments); `show --files` holds only what
    the policy files defined, one document per file, which restores the file as it was."""
    from aegis_server.policies.files import load_policy_paths

    code, out, err = _run(capsys, "policy", "show", "3", "--db", db, "--yaml")
    assert code == 0, err
    whole = tmp_path / "whole.yaml"
    whole.write_text(out)
    loaded = load_policy_paths([whole])
    assert [p.name for p in loaded.policies] == ["baseline", "email"]
    assert sorted(c.name for c in loaded.capabilities) == ["database.drop", "email.send", "payments.transfer"]

    code, out, err = _run(capsys, "policy", "show", "3", "--db", db, "--files")
    assert code == 0, err
    assert out.splitlines()[0] == f"# file: {policy_file} (policy-set version 3)"
    restored = tmp_path / "restored.yaml"
    restored.write_text(out)
    files = load_policy_paths([restored])
    original = load_policy_paths([policy_file])
    assert [p.name for p in files.policies] == ["baseline"] and files.policies == original.policies
    assert sorted(c.name for c in files.capabilities) == sorted(c.name for c in original.capabilities)


@pytest.mark.parametrize("number", ["99999999999999999999999", "2147483648"])
def test_a_version_number_beyond_the_column_is_exit_2(
    capsys: pytest.CaptureFixture[str], make_server: ServerFactory, store_url: str, number: str
) -> None:
    """D7: a number the database column cannot hold is refused with exit 2 and a clear message, on SQLite
    and PostgreSQL, never a traceback (the API bounds it to 2**31-1 the same way)."""
    with make_server(db_url=store_url):
        pass  # the schema and version 1
    for argv in (("show", number), ("diff", "1", number), ("rollback", number, "--yes")):
        code, _, err = _run(capsys, "policy", *argv, "--db", store_url)
        assert code == 2, (argv, err)
        assert "is not a version number" in err and "2147483647" in err, err
    code, _, err = _run(capsys, "policy", "show", "2147483647", "--db", store_url)
    assert code == 1 and "no policy-set version 2147483647" in err
