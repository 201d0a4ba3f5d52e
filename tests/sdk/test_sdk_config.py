"""Configuration: arguments win over AEGIS_* variables, and every bad value is a clear ConfigurationError."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sdk_support import API_KEY, ENDPOINT

from aegis_sdk import AegisClient, AegisError, AsyncAegisClient, ConfigurationError


def test_everything_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_ENDPOINT", "http://127.0.0.1:8001/")
    monkeypatch.setenv("AEGIS_API_KEY", API_KEY)
    monkeypatch.setenv("AEGIS_TIMEOUT", "2.5")
    monkeypatch.setenv("AEGIS_RETRIES", "0")
    with AegisClient() as aegis:
        assert (aegis.endpoint, aegis.timeout, aegis.retries) == ("http://127.0.0.1:8001", 2.5, 0)


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_ENDPOINT", "http://127.0.0.1:8001")
    monkeypatch.setenv("AEGIS_API_KEY", "aegis_sk_from_env")
    monkeypatch.setenv("AEGIS_TIMEOUT", "2.5")
    monkeypatch.setenv("AEGIS_RETRIES", "7")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with AegisClient(ENDPOINT, "aegis_sk_from_arg", 9.0, 1, http_client=http) as aegis:
        assert (aegis.endpoint, aegis.timeout, aegis.retries) == (ENDPOINT, 9.0, 1)
        aegis.health()
    assert seen[0].headers["Authorization"] == "Bearer aegis_sk_from_arg"
    assert str(seen[0].url).startswith(ENDPOINT)
    http.close()


def test_endpoint_may_end_with_the_api_prefix() -> None:
    with AegisClient(endpoint=f"{ENDPOINT}/api/v1/", api_key=API_KEY) as aegis:
        assert aegis.endpoint == ENDPOINT


def test_endpoint_may_have_a_path_prefix() -> None:
    with AegisClient(endpoint="https://gateway.example/aegis", api_key=API_KEY) as aegis:
        assert aegis.endpoint == "https://gateway.example/aegis"


@pytest.mark.parametrize("client_class", [AegisClient, AsyncAegisClient])
def test_missing_endpoint_names_the_argument_and_the_variable(client_class: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        client_class(api_key=API_KEY)
    assert "endpoint=" in str(caught.value)
    assert "AEGIS_ENDPOINT" in str(caught.value)
    assert caught.value.code == "missing_endpoint"


@pytest.mark.parametrize("client_class", [AegisClient, AsyncAegisClient])
def test_missing_key_names_the_argument_and_the_variable(client_class: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        client_class(endpoint=ENDPOINT)
    assert "api_key=" in str(caught.value)
    assert "AEGIS_API_KEY" in str(caught.value)


def test_configuration_error_is_an_aegis_error_and_a_value_error() -> None:
    assert issubclass(ConfigurationError, AegisError)
    assert issubclass(ConfigurationError, ValueError)
    with pytest.raises(ValueError):
        AegisClient(endpoint="", api_key=API_KEY)


@pytest.mark.parametrize(
    "endpoint",
    ["not a url", "ftp://127.0.0.1", "127.0.0.1:8000", "http://", "http://127.0.0.1:8000/?x=1", "   ", 8000],
)
def test_malformed_endpoint(endpoint: Any) -> None:
    with pytest.raises(ConfigurationError, match="endpoint"):
        AegisClient(endpoint=endpoint, api_key=API_KEY)


def test_malformed_endpoint_from_the_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_ENDPOINT", "localhost:8000")
    with pytest.raises(ConfigurationError, match="AEGIS_ENDPOINT"):
        AegisClient(api_key=API_KEY)


@pytest.mark.parametrize("api_key", ["", "  ", "aegis sk", "aegis_sk\nx", "ключ", 123])
def test_bad_api_key(api_key: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"api_key|AEGIS_API_KEY"):
        AegisClient(endpoint=ENDPOINT, api_key=api_key)


def test_key_is_never_in_a_configuration_message() -> None:
    with pytest.raises(ConfigurationError) as caught:
        AegisClient(endpoint=ENDPOINT, api_key="aegis_sk_secret part")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("timeout", [-1, -0.5, 0, float("nan"), float("inf"), "soon", True])
def test_bad_timeout_argument(timeout: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY, timeout=timeout)
    assert "timeout" in str(caught.value)
    assert "AEGIS_TIMEOUT" in str(caught.value)


@pytest.mark.parametrize("value", ["-3", "abc", "0"])
def test_bad_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AEGIS_TIMEOUT", value)
    with pytest.raises(ConfigurationError, match="AEGIS_TIMEOUT environment variable"):
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY)


@pytest.mark.parametrize("retries", [-1, 1.5, "3", True])
def test_bad_retries_argument(retries: Any) -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY, retries=retries)


@pytest.mark.parametrize("value", ["-1", "three", "1.5"])
def test_bad_retries_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AEGIS_RETRIES", value)
    with pytest.raises(ConfigurationError, match="AEGIS_RETRIES"):
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY)


@pytest.mark.parametrize("retry_delay", [-1.0, float("inf"), "1"])
def test_bad_retry_delay(retry_delay: Any) -> None:
    with pytest.raises(ConfigurationError, match="retry_delay"):
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY, retry_delay=retry_delay)


def test_zero_retries_and_zero_delay_are_valid() -> None:
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY, retries=0, retry_delay=0) as aegis:
        assert (aegis.retries, aegis.retry_delay) == (0, 0.0)


def test_log_level_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_LOG_LEVEL", "debug")
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY):
        assert logging.getLogger("aegis_sdk").level == logging.DEBUG


def test_bad_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_LOG_LEVEL", "chatty")
    with pytest.raises(ConfigurationError, match="AEGIS_LOG_LEVEL"):
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY)


def test_wrong_kind_of_http_client() -> None:
    async_http = httpx.AsyncClient()
    with pytest.raises(ConfigurationError, match="AsyncAegisClient"):
        AegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=async_http)  # type: ignore[arg-type]
    sync_http = httpx.Client()
    with pytest.raises(ConfigurationError, match="AegisClient"):
        AsyncAegisClient(endpoint=ENDPOINT, api_key=API_KEY, http_client=sync_http)  # type: ignore[arg-type]
    sync_http.close()


def test_repr_never_shows_the_key() -> None:
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY) as aegis:
        assert API_KEY not in repr(aegis)
        assert API_KEY not in repr(aegis._config)
        assert ENDPOINT in repr(aegis)
