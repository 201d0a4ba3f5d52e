"""The proxy's configuration: one pydantic model, loaded from a YAML file (`--config`) or built from the
command line (one stdio upstream). Errors name the file, the field and how to fix it (`ConfigError`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aegis_mcp._call import CAPABILITY_NAME, capability_for
from aegis_sdk.models import ActorType

RiskLevel = Literal["low", "medium", "high", "critical"]


class ConfigError(Exception):
    """The proxy's configuration is wrong; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AegisSettings(_Strict):
    """Where the AEGIS platform is. The key is never in the file: `api_key_env` names the variable holding it."""

    endpoint: str | None = None
    api_key_env: str = "AEGIS_API_KEY"


class ActorConfig(_Strict):
    id: str = Field(min_length=1)
    type: ActorType = "ai-agent"


class UpstreamConfig(_Strict):
    """One upstream MCP server: a stdio `command` (+ `args`, `env`, `cwd`) or a streamable HTTP `url`."""

    name: str = Field(min_length=1)
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tools: list[str] | None = None
    capability_prefix: str | None = None
    capabilities: dict[str, str] = Field(default_factory=dict)
    tool_prefix: str = ""

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                f"upstream {self.name!r} needs exactly one of `command` (a stdio server) or `url` (streamable HTTP)"
            )
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError(f"upstream {self.name!r} has a `url`: `args`, `env` and `cwd` are for a `command`")
        if self.command is not None and self.headers:
            raise ValueError(f"upstream {self.name!r} has a `command`: `headers` are for a `url`")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {self.name!r}: `url` must start with http:// or https://, got {self.url!r}")
        for tool, capability in self.capabilities.items():
            if not CAPABILITY_NAME.match(capability):
                raise ValueError(f"upstream {self.name!r}: {capability!r} (for tool {tool!r}) is not a capability name")
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def exposed_name(self, tool: str) -> str:
        return self.tool_prefix + tool

    def capability(self, tool: str, default_prefix: str) -> str:
        prefix = self.capability_prefix if self.capability_prefix is not None else default_prefix
        return capability_for(tool, prefix=prefix, mapping=self.capabilities)


class ProxyConfig(_Strict):
    """The whole proxy: who the agent is, where AEGIS is, how to govern, and the upstreams."""

    aegis: AegisSettings = Field(default_factory=AegisSettings)
    actor: ActorConfig
    capability_prefix: str = "mcp"
    fail_open: bool = False
    review_timeout: float = Field(default=300.0, ge=0)
    sync_capabilities: bool = False
    risk_level: RiskLevel = "medium"
    upstream_timeout: float = Field(default=300.0, gt=0)
    listen_token_env: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    upstreams: list[UpstreamConfig] = Field(min_length=1)

    @field_validator("actor", mode="before")
    @classmethod
    def _actor_id(cls, value: object) -> object:
        return {"id": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _unique_names(self) -> ProxyConfig:
        names = [upstream.name for upstream in self.upstreams]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"upstream names must be unique; repeated: {', '.join(doubled)}")
        return self

    def endpoint_and_key(self, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
        """The AEGIS endpoint and API key, from the config and the environment; ConfigError when missing."""
        env = os.environ if environ is None else environ
        endpoint = self.aegis.endpoint or env.get("AEGIS_ENDPOINT")
        key = env.get(self.aegis.api_key_env)
        missing = []
        if not endpoint:
            missing.append("the AEGIS endpoint (--endpoint, `aegis.endpoint` in the config, or AEGIS_ENDPOINT)")
        if not key:
            missing.append(f"the AEGIS API key (--api-key, or the environment variable {self.aegis.api_key_env})")
        if missing:
            raise ConfigError("missing " + " and ".join(missing))
        assert endpoint is not None and key is not None
        return endpoint, key


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key; remove it or check its spelling")
        elif item["type"] == "missing":
            lines.append(f"  {where}: required; add it")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def parse_config(data: object, source: str = "the configuration") -> ProxyConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with `actor` and `upstreams` at the top level")
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: str | Path) -> ProxyConfig:
    """Read a YAML configuration file (see docs/mcp.md)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse_config(data, str(file))


def upstream_name(command: Sequence[str]) -> str:
    """The name of a single-command upstream: its script or package (`python -m pkg` → pkg, `node server.js` →
    server, `npx -y @org/server-files` → server-files), else the command's own name."""
    arguments = list(command[1:])
    for index, argument in enumerate(arguments):
        if argument in ("-m", "-p", "--package") and index + 1 < len(arguments):
            return _short(arguments[index + 1]) or "upstream"
        if not argument.startswith("-"):
            return _short(argument) or "upstream"
    return _short(command[0]) or "upstream"


def _short(target: str) -> str:
    """`/srv/tools/server.py` → server, `@org/server-files@1.2` → server-files, `pkg.module` → pkg.module."""
    name = target.rstrip("/").rsplit("/", 1)[-1]
    if "@" in name[1:]:
        name = name[0] + name[1:].split("@", 1)[0]
    name = name.lstrip("@")
    for suffix in (".py", ".js", ".mjs", ".cjs", ".ts", ".exe"):
        name = name.removesuffix(suffix)
    return name


def config_from_arguments(
    *,
    actor: str,
    actor_type: str = "ai-agent",  # validated: ai-agent, ai-copilot, automation or human
    command: Sequence[str],
    endpoint: str | None = None,
    capability_prefix: str = "mcp",
    fail_open: bool = False,
    review_timeout: float = 300.0,
    sync_capabilities: bool = False,
    risk_level: RiskLevel = "medium",
    upstream_timeout: float = 300.0,
) -> ProxyConfig:
    """The configuration of `aegis-mcp proxy --actor ID ... -- COMMAND ARGS...` (one stdio upstream)."""
    if not command:
        raise ConfigError("no upstream: put the upstream server's command after `--`, or use --config FILE")
    data: dict[str, Any] = {
        "aegis": {"endpoint": endpoint} if endpoint else {},
        "actor": {"id": actor, "type": actor_type},
        "capability_prefix": capability_prefix,
        "fail_open": fail_open,
        "review_timeout": review_timeout,
        "sync_capabilities": sync_capabilities,
        "risk_level": risk_level,
        "upstream_timeout": upstream_timeout,
        "upstreams": [{"name": upstream_name(command), "command": command[0], "args": list(command[1:])}],
    }
    return parse_config(data, "the command line")


__all__ = [
    "ActorConfig",
    "AegisSettings",
    "ConfigError",
    "ProxyConfig",
    "UpstreamConfig",
    "config_from_arguments",
    "load_config",
    "parse_config",
]
