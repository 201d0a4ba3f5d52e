"""Client configuration: constructor arguments first, then the AEGIS_* environment variables, then defaults."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import EllipsisType

import httpx

from aegis_sdk.errors import ConfigurationError

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY = 1.0

ENV_ENDPOINT = "AEGIS_ENDPOINT"
ENV_API_KEY = "AEGIS_API_KEY"
ENV_TIMEOUT = "AEGIS_TIMEOUT"
ENV_RETRIES = "AEGIS_RETRIES"
ENV_LOG_LEVEL = "AEGIS_LOG_LEVEL"

_API_PREFIX = "/api/v1"
_LOG_LEVELS = {"CRITICAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30, "INFO": 20, "DEBUG": 10, "NOTSET": 0}

logger = logging.getLogger("aegis_sdk")


@dataclass(frozen=True)
class ClientConfig:
    """The resolved, validated settings of one client."""

    endpoint: str  # the platform root, without a trailing slash and without /api/v1
    api_key: str
    timeout: float
    retries: int
    retry_delay: float

    @property
    def base_url(self) -> str:
        return self.endpoint + _API_PREFIX

    def __repr__(self) -> str:  # never show the key
        return (
            f"ClientConfig(endpoint={self.endpoint!r}, api_key='***', timeout={self.timeout!r}, "
            f"retries={self.retries!r}, retry_delay={self.retry_delay!r})"
        )


def resolve_config(
    endpoint: str | EllipsisType | None,
    api_key: str | None,
    timeout: float | None,
    retries: int | None,
    retry_delay: float | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Merge arguments over the environment and validate everything, naming the argument and the variable."""
    env = os.environ if environ is None else environ
    # `AegisClient(...)` (a literal Ellipsis, as on the SDK page) means "everything from the environment".
    if endpoint is Ellipsis:
        endpoint = None
    configure_logging(env.get(ENV_LOG_LEVEL))
    return ClientConfig(
        endpoint=_endpoint(endpoint, env),
        api_key=_api_key(api_key, env),
        timeout=_timeout(timeout, env),
        retries=_retries(retries, env),
        retry_delay=_retry_delay(retry_delay),
    )


def _source(argument: str, env_var: str | None, from_env: bool) -> str:
    if from_env and env_var:
        return f"the {env_var} environment variable"
    return f"the {argument}= argument"


def _text_source(value: object, env: Mapping[str, str], env_var: str, missing: str, wanted: str) -> tuple[str, bool]:
    """The argument, else the environment variable, as a string; and whether it came from the variable.
    Neither (or blank): ConfigurationError `missing`; not a string: "<argument> must be <wanted>"."""
    argument = env_var.removeprefix("AEGIS_").lower()
    raw = env.get(env_var) if value is None else value
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ConfigurationError(missing, code=f"missing_{argument}")
    if not isinstance(raw, str):
        raise ConfigurationError(
            f"{argument} must be {wanted}, got {type(raw).__name__} (set {argument}= or {env_var}).",
            code=f"invalid_{argument}",
        )
    return raw, value is None


def _endpoint(value: str | None, env: Mapping[str, str]) -> str:
    missing = (
        f"No AEGIS endpoint configured: pass endpoint= (e.g. AegisClient(endpoint='http://127.0.0.1:8000', ...)) "
        f"or set the {ENV_ENDPOINT} environment variable."
    )
    raw, from_env = _text_source(value, env, ENV_ENDPOINT, missing, "a string URL such as 'http://127.0.0.1:8000'")
    text = raw.strip()
    hint = (
        f"endpoint must be an http(s) URL of the AEGIS platform root such as 'http://127.0.0.1:8000', "
        f"got {text!r} from {_source('endpoint', ENV_ENDPOINT, from_env)}"
    )
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{hint}: {exc}.", code="invalid_endpoint") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(f"{hint}.", code="invalid_endpoint")
    if url.query or url.fragment:
        raise ConfigurationError(f"{hint}: remove the query string or fragment.", code="invalid_endpoint")
    root = text.rstrip("/")
    # The SDK adds /api/v1 itself; accept an endpoint that already ends with it.
    if root.endswith(_API_PREFIX):
        root = root[: -len(_API_PREFIX)]
    return root


def _api_key(value: str | None, env: Mapping[str, str]) -> str:
    missing = (
        f"No AEGIS API key configured: pass api_key= or set the {ENV_API_KEY} environment variable "
        "(create one with `aegis-server keys create`)."
    )
    raw, from_env = _text_source(value, env, ENV_API_KEY, missing, "a string")
    key = raw.strip()
    if not key.isascii() or not key.isprintable() or any(ch.isspace() for ch in key):
        raise ConfigurationError(
            f"api_key from {_source('api_key', ENV_API_KEY, from_env)} contains spaces or non-printable "
            "characters; copy the key exactly as `aegis-server keys create` printed it.",
            code="invalid_api_key",
        )
    return key


def _number_source(value: object, env: Mapping[str, str], env_var: str, default: object) -> tuple[object, bool]:
    """The argument, else the (non-blank) environment variable, else the default; and whether the variable
    was set (then a bad value is blamed on it)."""
    if value is not None:
        return value, False
    return env.get(env_var, "").strip() or default, env_var in env


def _timeout(value: float | None, env: Mapping[str, str]) -> float:
    raw, from_env = _number_source(value, env, ENV_TIMEOUT, DEFAULT_TIMEOUT)
    where = _source("timeout", ENV_TIMEOUT, from_env)
    number = _as_float(raw, "timeout", where, ENV_TIMEOUT, from_env)
    if not number > 0 or not math.isfinite(number):
        raise ConfigurationError(
            f"timeout must be a positive number of seconds, got {raw!r} from {where}; "
            f"set timeout= or {ENV_TIMEOUT} (default {DEFAULT_TIMEOUT}).",
            code="invalid_timeout",
        )
    return number


def _retries(value: int | None, env: Mapping[str, str]) -> int:
    raw, from_env = _number_source(value, env, ENV_RETRIES, DEFAULT_RETRIES)
    where = _source("retries", ENV_RETRIES, from_env)
    message = (
        f"retries must be a whole number >= 0 (retries after the first attempt), got {raw!r} from {where}; "
        f"set retries= or {ENV_RETRIES} (default {DEFAULT_RETRIES})."
    )
    if isinstance(raw, bool) or (isinstance(raw, str) and not from_env):
        raise ConfigurationError(message, code="invalid_retries")
    if isinstance(raw, str):
        try:
            raw = int(raw)
        except ValueError as exc:
            raise ConfigurationError(message, code="invalid_retries") from exc
    if not isinstance(raw, int) or raw < 0:
        raise ConfigurationError(message, code="invalid_retries")
    return raw


def _retry_delay(value: float | None) -> float:
    raw: object = DEFAULT_RETRY_DELAY if value is None else value
    number = _as_float(raw, "retry_delay", "the retry_delay= argument", None, False)
    if not number >= 0 or not math.isfinite(number):
        raise ConfigurationError(
            f"retry_delay must be a number of seconds >= 0, got {raw!r} (default {DEFAULT_RETRY_DELAY}).",
            code="invalid_retry_delay",
        )
    return number


def _as_float(raw: object, argument: str, where: str, env_var: str | None, from_env: bool) -> float:
    fix = f"set {argument}=" + (f" or {env_var}" if env_var else "")
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)) or (isinstance(raw, str) and not from_env):
        raise ConfigurationError(
            f"{argument} must be a number of seconds, got {type(raw).__name__} from {where}; {fix}.",
            code=f"invalid_{argument}",
        )
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigurationError(
            f"{argument} must be a number of seconds, got {raw!r} from {where}; {fix}.",
            code=f"invalid_{argument}",
        ) from exc


_handler_installed = False


def configure_logging(level_name: str | None) -> None:
    """Apply AEGIS_LOG_LEVEL to the `aegis_sdk` logger. When the application configured no logging at all,
    add a stderr handler so the chosen level is visible; otherwise leave handlers to the application."""
    global _handler_installed
    if level_name is None or not level_name.strip():
        return
    name = level_name.strip().upper()
    level = _LOG_LEVELS.get(name)
    if level is None:
        raise ConfigurationError(
            f"{ENV_LOG_LEVEL}={level_name!r} is not a log level; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL.",
            code="invalid_log_level",
        )
    logger.setLevel(level)
    if not _handler_installed and not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        _handler_installed = True


__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_RETRY_DELAY",
    "DEFAULT_TIMEOUT",
    "ENV_API_KEY",
    "ENV_ENDPOINT",
    "ENV_LOG_LEVEL",
    "ENV_RETRIES",
    "ENV_TIMEOUT",
    "ClientConfig",
    "configure_logging",
    "resolve_config",
]
