#!/usr/bin/env bash
# Run the server's API and contract tests on the LOWEST FastAPI that aegis-server's pyproject.toml accepts
# (the workspace lock holds the newest): a lower bound that is not tested is a promise nobody keeps.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never

lowest=$(grep -o '"fastapi>=[0-9.]*"' packages/aegis-server/pyproject.toml | tr -d '"' | sed 's/>=/==/')
[ -n "$lowest" ] || { echo "error: no fastapi>=X in packages/aegis-server/pyproject.toml" >&2; exit 1; }
echo "aegis-server's lowest FastAPI: $lowest"
# The socket backend starts a server process of the workspace's own environment: only the in-process ones.
python3 -m uv run --locked --with "$lowest" python -c 'import fastapi; print("running with fastapi", fastapi.__version__)'
python3 -m uv run --locked --with "$lowest" pytest -q -p no:cacheprovider tests/server/api tests/e2e -k "not socket"
