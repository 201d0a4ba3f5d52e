"""`aegis-server webhooks ...`: the same operations as the API on a database, errors in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis_server.cli import main

URL = "https://hooks.example.test/aegis"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'aegis.db'}"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _create(capsys: pytest.CaptureFixture[str], db: str, *extra: str) -> tuple[str, str]:
    code, out, err = _run(capsys, "webhooks", "create", "--db", db, "--url", URL, "--events", "*", *extra)
    assert code == 0, err
    secret = out.strip()
    endpoint_id = err.split("created webhook endpoint ")[1].split()[0]
    return endpoint_id, secret


def test_create_list_show_update_delete(capsys: pytest.CaptureFixture[str], db: str) -> None:
    endpoint_id, secret = _create(capsys, db, "--capability", "payments.*", "--min-risk", "0.5", "--format", "slack")
    assert secret.startswith("whsec_") and "\n" not in secret

    code, out, _ = _run(capsys, "webhooks", "list", "--db", db)
    assert code == 0
    assert endpoint_id in out and "capability payments.*, risk >= 0.5" in out and "slack" in out
    assert secret not in out

    code, out, _ = _run(capsys, "webhooks", "show", endpoint_id, "--db", db)
    assert code == 0 and URL in out and secret not in out

    code, out, err = _run(
        capsys, "webhooks", "update", endpoint_id, "--db", db, "--capability", "none", "--disable", "--events",
        "decision.escalated,review.resolved",
    )  # fmt: skip
    assert code == 0, err
    assert "filter:      risk >= 0.5" in out and "enabled:     no" in out
    assert "decision.escalated,review.resolved" in out

    code, out, _ = _run(capsys, "webhooks", "delete", endpoint_id, "--db", db)
    assert code == 0
    code, _, err = _run(capsys, "webhooks", "show", endpoint_id, "--db", db)
    assert code == 1 and "no webhook endpoint" in err


def test_rotate_test_deliveries_retry(capsys: pytest.CaptureFixture[str], db: str) -> None:
    endpoint_id, secret = _create(capsys, db)
    code, out, _ = _run(capsys, "webhooks", "rotate-secret", endpoint_id, "--db", db)
    assert code == 0 and out.strip().startswith("whsec_") and out.strip() != secret

    code, out, _ = _run(capsys, "webhooks", "test", endpoint_id, "--db", db)
    assert code == 0 and "webhook.test" in out
    code, out, _ = _run(capsys, "webhooks", "deliveries", endpoint_id, "--db", db, "--status", "pending")
    assert code == 0 and "webhook.test" in out and "pending" in out
    delivery_id = out.splitlines()[1].split()[0]

    code, _, err = _run(capsys, "webhooks", "retry", endpoint_id, delivery_id, "--db", db)
    assert code == 1 and "only a failed delivery" in err
    code, _, err = _run(capsys, "webhooks", "retry", endpoint_id, "999999", "--db", db)
    assert code == 1 and "no delivery" in err
    code, _, err = _run(capsys, "webhooks", "retry", endpoint_id, str(10**30), "--db", db)
    assert code == 2 and "DELIVERY_ID" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "ftp://x.example/a", "--events", "*"], "--url: "),
        (["--url", "https://u:p@x.example/a", "--events", "*"], "credentials"),
        (["--url", URL, "--events", "decision.allowed"], "--events: unknown event type"),
        (["--url", URL, "--events", "*", "--min-risk", "2"], "--min-risk"),
        (["--url", URL, "--events", "*", "--min-risk", "high"], "--min-risk"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], db: str, argv: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "webhooks", "create", "--db", db, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert out == ""


def test_nothing_to_update_and_bad_limit(capsys: pytest.CaptureFixture[str], db: str) -> None:
    endpoint_id, _ = _create(capsys, db)
    code, _, err = _run(capsys, "webhooks", "update", endpoint_id, "--db", db)
    assert code == 2 and "nothing to change" in err
    code, _, err = _run(capsys, "webhooks", "deliveries", endpoint_id, "--db", db, "--limit", "0")
    assert code == 2 and "--limit" in err
    code, _, err = _run(capsys, "webhooks", "deliveries", endpoint_id, "--db", db, "--cursor", "nope")
    assert code == 2 and "--cursor" in err
