"""Server settings: one pydantic-settings model, built in code or from `AEGIS_*` environment variables.

`Settings(...)` in code takes only what it is given (an in-process server never picks up a production
`AEGIS_DB_URL` by accident); `Settings.from_env()` reads the environment through pydantic-settings: each
field's variable is `AEGIS_` + its name in capitals, or its alias (`AEGIS_REVIEW_TIMEOUT_SECONDS`).
Every field is documented in docs/server.md (section "Settings"); keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

if TYPE_CHECKING:
    from aegis_server.engine import EngineConfig

DEFAULT_DB_URL = "sqlite+aiosqlite:///./.aegis/aegis.db"
DEFAULT_POLICY_DIR = Path("examples/policies")


_ENV_PREFIX = "AEGIS_"


class Settings(BaseSettings):
    """Everything the server can be told. Defaults are safe for a developer laptop."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, env_prefix=_ENV_PREFIX, validate_by_name=True)

    db_url: str = Field(default=DEFAULT_DB_URL, min_length=1, description="SQLAlchemy async URL of the store.")
    db_migrate: bool = Field(default=True, description="Apply pending migrations when the server starts.")
    policy_paths: tuple[Path, ...] | None = Field(
        default=None,
        description="Policy files or folders. None: `examples/policies` if it exists in the CWD, else none.",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret for confirmation tokens. None: generated once and kept in the store.",
    )
    escalate_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    default_review_timeout_seconds: int = Field(
        default=3600,
        gt=0,
        le=30 * 24 * 3600,
        validation_alias="AEGIS_REVIEW_TIMEOUT_SECONDS",
    )
    confirmation_ttl_seconds: int = Field(default=300, gt=0, le=7 * 24 * 3600)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_json_depth: int = Field(default=32, gt=0, le=1000)
    max_parameters_bytes: int = Field(default=64 * 1024, gt=0)
    rate_limit_per_minute: int = Field(default=6000, ge=0, description="Per API key; 0 disables the limit.")
    rate_limit_burst: int = Field(default=600, gt=0, description="Requests a key may make at once.")
    max_wait_seconds: float = Field(default=60.0, ge=0.0, le=600.0, description="Cap of `?wait=` long polls.")
    long_poll_recheck_seconds: float = Field(
        default=1.0, gt=0.0, description="How often a `?wait=` poll re-reads the store (reviews on other replicas)."
    )
    review_expiry_interval_seconds: float = Field(default=1.0, gt=0.0)
    policy_refresh_interval_seconds: float = Field(default=1.0, ge=0.0)
    auth_cache_seconds: float = Field(default=2.0, ge=0.0, description="How long a verified key is trusted.")
    log_level: str = Field(default="INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    docs_enabled: bool = Field(default=True, description="Serve /docs and /redoc (the OpenAPI JSON always).")
    allow_self_review: bool = Field(
        default=False,
        description="Let the key that proposed a decision (or a reviewer named like its actor) review it. "
        "Development only: it removes the separation of duties.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis:// or rediss:// URL: rate-limit counters shared by every replica. None: per replica.",
    )
    condition_cost_budget: int = Field(
        default=500_000,
        ge=1_000,
        le=1_000_000_000,
        description="The most a condition may cost (estimated from the proposal's data before it runs); "
        "over it the rule fails closed with `evaluation_budget_exceeded`.",
    )
    replay_max_proposals: int = Field(
        default=200_000,
        ge=1,
        le=100_000_000,
        description="The most stored proposals one `POST /api/v1/policies/replay` re-decides (its `limit` is "
        "capped at this); the CLI has no limit.",
    )
    replay_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="The longest one `POST /api/v1/policies/replay` runs: it then stops and answers what it "
        "replayed, `truncated` with the reason timeout; the CLI has no time bound.",
    )
    audit_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="HMAC key of the audit chain (version 2). None: `audit-hmac.key` in the checkpoint directory, "
        "generated once. Never stored in the database; every replica of one database needs the same key.",
    )
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 key signing audit checkpoints (PEM PKCS#8, or 64 hex digits). None: "
        "`audit-signing.key` in the checkpoint directory, generated once.",
    )
    audit_checkpoint_dir: Path | None = Field(
        default=None,
        description="Where signed checkpoints (and generated key files) go. None: beside a SQLite file "
        "(`aegis.db` -> `aegis.audit/`), `~/.aegis/audit/<host>-<port>-<database>/` for PostgreSQL.",
    )
    audit_checkpoint_webhook: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Also POST each checkpoint (JSON) here, off the request path, retried on failure.",
    )
    audit_checkpoint_interval_seconds: float = Field(
        default=1.0, gt=0.0, le=60.0, description="How often a checkpoint is written while records are appended."
    )
    keep_alive_timeout_seconds: float = Field(
        default=5.0, gt=0.0, le=3600.0, description="`serve`: an idle keep-alive connection is closed after this."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="`serve`: a connection whose request line and headers are not complete this long after it "
        "opened (or after the first byte of its next request) is closed.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="`serve`: a request whose body has not fully arrived this long after its head was complete "
        "is answered 408 (or, when the app already answers, cut) and its connection closed.",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="`serve`: a request line and headers larger than this are answered 431 and the connection closed.",
    )
    shutdown_timeout_seconds: int = Field(
        default=30,
        gt=0,
        le=3600,
        description="`serve`: on SIGTERM, requests in flight (long polls included) get this long to finish.",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The address people open the server at (e.g. https://aegis.example.com): links to the console "
        "in webhooks use it. None: `serve`'s own http://HOST:PORT.",
    )
    console_enabled: bool = Field(default=True, description="Serve the reviewer console at /console.")
    console_session_seconds: int = Field(
        default=8 * 3600, gt=0, le=30 * 24 * 3600, description="A console sign-in lasts this long, then expires."
    )
    console_secure_cookie: bool | None = Field(
        default=None,
        description="Mark the console's session cookie Secure. None: when the request came over HTTPS "
        "(`X-Forwarded-Proto` is not trusted).",
    )
    webhooks_enabled: bool = Field(
        default=True, description="Deliver webhook events from this server (the outbox is written either way)."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=120.0,
        description="A receiver that has not answered this long after the request was sent fails that attempt.",
    )
    webhook_retry_schedule_seconds: tuple[float, ...] = Field(
        default=(5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0),
        min_length=0,
        max_length=50,
        description="The waits before each retry of a failed delivery (seconds, comma-separated in the "
        "environment); after the last one fails, the delivery is marked failed. Default: ~23.6 hours of retries.",
    )
    webhook_retention_days: float = Field(
        default=30.0,
        gt=0.0,
        le=3650.0,
        description="Delivered and failed deliveries, and events no delivery waits for, are deleted this long "
        "after they were made (pending ones are kept).",
    )
    webhook_poll_interval_seconds: float = Field(
        default=1.0, gt=0.0, le=60.0, description="How often the dispatcher looks for events other replicas wrote."
    )
    # Audit export
    audit_export_file: Path | None = Field(
        default=None,
        description="Export the audit as JSON lines to this file (rotated). None: no file export.",
    )
    audit_export_file_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, description="The export file is rotated before it would grow past this."
    )
    audit_export_file_backups: int = Field(
        default=10, ge=1, le=1000, description="Rotated export files kept (`audit.jsonl.1` .. `.N`)."
    )
    audit_export_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Export the audit by POSTing batches of JSON lines (application/x-ndjson) here. None: none.",
    )
    audit_export_authorization: SecretStr | None = Field(
        default=None, description="The Authorization header sent with each export POST (e.g. `Bearer ...`)."
    )
    audit_export_batch: int = Field(default=500, gt=0, le=10_000, description="The most records per export batch.")
    audit_export_poll_interval_seconds: float = Field(
        default=1.0, gt=0.0, le=60.0, description="How often the exporter looks for records other replicas wrote."
    )
    audit_export_lease_seconds: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="A replica exporting to a sink holds it this long (renewed); a dead one's is taken over after.",
    )
    audit_export_timeout_seconds: float = Field(
        default=10.0, gt=0.0, le=120.0, description="An export POST not answered this long after it was sent fails."
    )
    audit_export_retry_max_seconds: float = Field(
        default=60.0, gt=0.0, le=3600.0, description="The longest wait between retries of a batch a sink refused."
    )
    audit_export_shutdown_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=600.0,
        description="At shutdown, how long the exporters may take to export what is committed.",
    )
    # Observability
    metrics_access: Literal["open", "key"] = Field(
        default="open",
        description="/metrics: `open` (no key) or `key` (an API key with the scope `metrics` or `admin`).",
    )
    metrics_listen: str | None = Field(
        default=None,
        description="HOST:PORT: `serve` answers /metrics there alone (and not on its main address). None: on the "
        "main address.",
    )

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str | None) -> str | None:
        if value is not None:
            _host_port(value)
        return value

    def metrics_address(self) -> tuple[str, int] | None:
        """The (host, port) of the separate /metrics listener, or None when /metrics is on the main address."""
        return _host_port(self.metrics_listen) if self.metrics_listen is not None else None

    def engine_config(self) -> EngineConfig:
        """The engine's configuration these settings give (the value key, derived from the server secret, is
        the governance runtime's to add)."""
        from aegis_server.engine import EngineConfig  # the engine's libraries load only where they decide

        return EngineConfig(
            escalate_threshold=self.escalate_threshold,
            default_review_timeout_seconds=self.default_review_timeout_seconds,
            condition_cost_budget=self.condition_cost_budget,
        )

    def resolved_policy_paths(self, cwd: Path | None = None) -> tuple[Path, ...]:
        """The policy paths to load: the configured ones, or the default folder when it exists."""
        if self.policy_paths is not None:
            return self.policy_paths
        base = cwd if cwd is not None else Path.cwd()
        default = base / DEFAULT_POLICY_DIR
        return (default,) if default.is_dir() else ()

    @field_validator("audit_export_url")
    @classmethod
    def _check_audit_export_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  # raises on a port out of range
        except ValueError:
            raise ValueError("is not a valid http(s) URL (e.g. https://siem.example/ingest)") from None
        if not parts.hostname:
            raise ValueError("has no host (e.g. https://siem.example/ingest)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0")
        return value

    def token_secret(self) -> bytes | None:
        return self.secret.get_secret_value().encode("utf-8") if self.secret is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """In code, only the keyword arguments: the environment is read by `from_env()` alone."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `AEGIS_*` variables (see docs/server.md); keyword overrides win.

        Raises ValueError naming the variable when one cannot be parsed.
        """
        try:
            found = _Environment(cls, os.environ if environ is None else environ)()
            values = {_FIELD_BY_VARIABLE.get(key, key): value for key, value in found.items()}
            return cls(**{**values, **overrides})
        except SettingsError as exc:
            raise ValueError(f"invalid server settings: {exc}") from None
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False, include_input=False):
                name = str(error["loc"][0]) if error["loc"] else "?"
                variable = ENV_VARIABLES.get(name, name)
                problems.append(f"{variable}: {error['msg']}")
            raise ValueError("invalid server settings: " + "; ".join(problems)) from None


_EMPTY_IS_UNSET = frozenset(
    {
        "secret",
        "redis_url",
        "audit_key",
        "audit_signing_key",
        "audit_checkpoint_dir",
        "audit_checkpoint_webhook",
        "public_url",
        "console_secure_cookie",
        "audit_export_file",
        "audit_export_url",
        "audit_export_authorization",
        "metrics_listen",
    }
)
"""Optional settings whose variable set to the empty string means "unset" (the others refuse it)."""


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, with AEGIS's two conventions:
    `AEGIS_POLICY_PATHS` is an `os.pathsep`-separated list (empty: none), and an empty optional key or URL
    is unset."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # The source matches lower-cased names; only the documented capitals count (`aegis_db_url` does not).
        return {key.lower(): value for key, value in self._environ.items() if key == key.upper()}

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        if value is None:
            return None
        if field_name == "policy_paths":
            return tuple(Path(p) for p in value.split(os.pathsep) if p.strip())
        if field_name in _EMPTY_IS_UNSET and value == "":
            return None
        if field_name == "webhook_retry_schedule_seconds":
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return super().prepare_field_value(field_name, field, value, value_is_complex)


def _host_port(value: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets, e.g. [::1]:9464) as (host, port); ValueError saying the form."""
    host, _, port = value.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464 (got {value!r})")
    return host, int(port)


def _variable(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    return alias if isinstance(alias, str) else _ENV_PREFIX + name.upper()


ENV_VARIABLES: Mapping[str, str] = {name: _variable(name, field) for name, field in Settings.model_fields.items()}
"""Setting name -> environment variable, for the docs and the CLI."""
_FIELD_BY_VARIABLE = {variable: name for name, variable in ENV_VARIABLES.items()}

__all__ = ["DEFAULT_DB_URL", "ENV_VARIABLES", "Settings"]
