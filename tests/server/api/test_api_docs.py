"""docs/api.md and docs/server.md stay in step with the server: every route, error code and setting."""

from __future__ import annotations

import re
from pathlib import Path

from aegis_server.app import create_app
from aegis_server.settings import ENV_VARIABLES, Settings

DOCS = Path(__file__).resolve().parents[3] / "docs"
SOURCE = Path(__file__).resolve().parents[3] / "packages" / "aegis-server" / "src" / "aegis_server"


def test_every_route_is_in_the_api_doc() -> None:
    text = (DOCS / "api.md").read_text()
    app = create_app(Settings(policy_paths=()))
    for route in app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/api/") or path in ("/metrics", "/openapi.json"):
            for method in sorted(getattr(route, "methods", ()) or ()):
                if method != "HEAD":
                    assert f"`{method} {path}" in text, f"{method} {path} is not documented in docs/api.md"


def test_every_error_code_is_in_the_api_doc() -> None:
    text = (DOCS / "api.md").read_text()
    code = "\n".join(p.read_text() for p in SOURCE.rglob("*.py") if "store" not in p.parts and "engine" not in p.parts)
    raised = set(re.findall(r'(?:governance_error|validation_error)\(\s*\d+,\s*"([a-z_]+)"', code))
    raised |= set(re.findall(r'ApiError\(\s*\d+,\s*"[a-z_]+",\s*"([a-z_]+)"', code))
    raised |= set(re.findall(r'"(confirmation_[a-z]+)"', code))
    raised |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', code))  # the domain errors (governance/errors.py)
    assert {"unknown_capability", "confirmation_used", "rate_limited", "missing_scope"} <= raised
    for error_code in raised:
        assert f"`{error_code}`" in text, f"error code {error_code} is not documented in docs/api.md"


def test_every_setting_is_in_the_server_doc() -> None:
    text = (DOCS / "server.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in text, f"setting {name} is not documented in docs/server.md"
        assert f"`{ENV_VARIABLES[name]}`" in text, f"{ENV_VARIABLES[name]} is not documented in docs/server.md"
