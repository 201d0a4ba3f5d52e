"""`Settings.from_env`: the AEGIS_* variables docs/server.md lists, their parsing and the messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis_server.settings import ENV_VARIABLES, Settings


def test_every_variable_is_aegis_and_the_field_name_except_the_review_timeout() -> None:
    assert ENV_VARIABLES["db_url"] == "AEGIS_DB_URL"
    assert ENV_VARIABLES["default_review_timeout_seconds"] == "AEGIS_REVIEW_TIMEOUT_SECONDS"
    assert set(ENV_VARIABLES) == set(Settings.model_fields)
    assert all(variable.startswith("AEGIS_") and variable.isupper() for variable in ENV_VARIABLES.values())


def test_values_are_read_and_parsed() -> None:
    settings = Settings.from_env(
        {
            "AEGIS_DB_URL": "sqlite+aiosqlite:///x.db",
            "AEGIS_DB_MIGRATE": "no",
            "AEGIS_POLICY_PATHS": "a:b: ",
            "AEGIS_REVIEW_TIMEOUT_SECONDS": "5",
            "AEGIS_ALLOW_SELF_REVIEW": "TRUE",
            "AEGIS_SECRET": "s3cret-value-long-enough",
        }
    )
    assert settings.db_url == "sqlite+aiosqlite:///x.db"
    assert settings.db_migrate is False
    assert settings.policy_paths == (Path("a"), Path("b"))
    assert settings.default_review_timeout_seconds == 5
    assert settings.allow_self_review is True
    assert settings.token_secret() == b"s3cret-value-long-enough"


def test_empty_values() -> None:
    assert Settings.from_env({"AEGIS_POLICY_PATHS": ""}).policy_paths == ()
    assert Settings.from_env({"AEGIS_SECRET": "", "AEGIS_REDIS_URL": ""}).secret is None
    with pytest.raises(ValueError, match="AEGIS_DB_URL: String should have at least 1 character"):
        Settings.from_env({"AEGIS_DB_URL": ""})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AEGIS_REVIEW_TIMEOUT_SECONDS": "abc"}, "AEGIS_REVIEW_TIMEOUT_SECONDS: Input should be a valid integer"),
        ({"AEGIS_DB_MIGRATE": "maybe"}, "AEGIS_DB_MIGRATE: Input should be a valid boolean"),
        ({"AEGIS_REDIS_URL": "http://x"}, "AEGIS_REDIS_URL: Value error, must be a redis://"),
        ({"AEGIS_MAX_BODY_BYTES": "1e3"}, "AEGIS_MAX_BODY_BYTES: Input should be a valid integer"),
    ],
)
def test_a_bad_value_names_its_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        Settings.from_env(environ)
    assert str(raised.value).startswith("invalid server settings: ")
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value) and "https://errors.pydantic.dev" not in str(raised.value)


def test_overrides_win_and_only_capitals_count() -> None:
    environ = {"AEGIS_DB_URL": "sqlite+aiosqlite:///env.db", "aegis_log_level": "debug"}
    settings = Settings.from_env(environ, db_url="sqlite+aiosqlite:///flag.db")
    assert settings.db_url == "sqlite+aiosqlite:///flag.db"
    assert settings.log_level == "INFO"


def test_settings_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_DB_URL", "sqlite+aiosqlite:///from-env.db")
    assert Settings().db_url != "sqlite+aiosqlite:///from-env.db"
    assert Settings.from_env().db_url == "sqlite+aiosqlite:///from-env.db"
