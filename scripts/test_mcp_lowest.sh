#!/usr/bin/env bash
# Run the aegis-mcp tests on the LOWEST mcp SDK that aegis-mcp's pyproject.toml accepts (mcp>=2.0 → mcp==2.0.0,
# with mcp-types==2.0.0; the workspace lock holds the newest): a lower bound that is not tested is a promise
# nobody keeps. The proxy and the upstream servers the tests start are subprocesses of this same environment,
# so they run on that mcp too.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never

floor=$(grep -o '"mcp>=[0-9.]*,<[0-9]*"' packages/aegis-mcp/pyproject.toml | tr -d '"' | sed 's/^mcp>=\([0-9.]*\),.*/\1/')
[ -n "$floor" ] || { echo "error: no mcp>=X,<Y in packages/aegis-mcp/pyproject.toml" >&2; exit 1; }
case "$floor" in *.*.*) lowest=$floor ;; *) lowest="$floor.0" ;; esac
echo "aegis-mcp's lowest mcp: mcp==$lowest (mcp-types==$lowest)"
with=(--with "mcp==$lowest" --with "mcp-types==$lowest")
python3 -m uv run --locked "${with[@]}" python -c '
import importlib.metadata as md, sys
found = {name: md.version(name) for name in ("mcp", "mcp-types")}
print("running with", found)
sys.exit(0 if set(found.values()) == {sys.argv[1]} else f"expected {sys.argv[1]}, found {found}")' "$lowest"
python3 -m uv run --locked "${with[@]}" pytest -q -p no:cacheprovider tests/mcp_governance
