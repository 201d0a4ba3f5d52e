#!/usr/bin/env bash
# The built aegisgov-sdk wheel (import package aegis_sdk) installs into a fresh venv outside the workspace, pulls only httpx,
# pydantic and opentelemetry-api (and their own dependencies), and imports.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
UV="python3 -m uv"

wheel=$(ls dist/aegisgov_sdk-*.whl 2>/dev/null | head -n 1 || true)
[ -n "$wheel" ] || { echo "error: no dist/aegisgov_sdk-*.whl; run 'make dist' first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$UV venv --quiet --python python3 "$work/venv"
$UV pip install --quiet --python "$work/venv/bin/python" "$wheel"
cd "$work"
"$work/venv/bin/python" - <<'PY'
import importlib.metadata as md
import re

requires = md.requires("aegisgov-sdk") or []
direct = sorted({re.match(r"[A-Za-z0-9_.\-]+", r).group(0).lower() for r in requires if "extra ==" not in r})
assert direct == ["httpx", "opentelemetry-api", "pydantic"], (
    f"aegisgov-sdk must depend on httpx, pydantic and opentelemetry-api only, found {direct}"
)

allowed = {"aegisgov-sdk", "httpx", "pydantic", "opentelemetry-api", "pydantic-core", "annotated-types",
           "typing-extensions", "typing-inspection", "anyio", "certifi", "httpcore", "h11", "idna", "sniffio",
           "exceptiongroup"}
installed = {d.metadata["Name"].lower().replace("_", "-") for d in md.distributions()}
unexpected = installed - allowed - {"pip", "setuptools", "wheel"}
assert not unexpected, f"unexpected packages pulled in by aegisgov-sdk: {sorted(unexpected)}"

import aegis_sdk
from aegis_sdk import AegisClient, AsyncAegisClient, Decision, AegisError, GovernanceError

assert issubclass(GovernanceError, AegisError)
client = AegisClient(endpoint="http://127.0.0.1:9", api_key="aegis_sk_test")
client.close()
print(f"ok: aegisgov-sdk {aegis_sdk.__version__} installs alone with {sorted(installed - {'aegisgov-sdk'})}")
PY
