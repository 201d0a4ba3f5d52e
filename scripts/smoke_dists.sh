#!/usr/bin/env bash
# The built wheels, and nothing else from this workspace: install all five into a fresh virtualenv in a
# temporary folder, start the installed `aegis-server` there, and run scripts/smoke_installed.py (copied
# next to it, run with `python -I`) against it with the installed SDK, adapters and aegis-mcp (whose installed `aegis-mcp proxy`
# governs a real MCP call there).
#
#     bash scripts/smoke_dists.sh [DIST_DIR]        # default dist/ (make smoke-dists builds it first)
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
UV="python3 -m uv"
dist=${1:-dist}

wheels=()
for stem in aegisgov_sdk aegisgov_server aegisgov_fastapi aegisgov_langchain aegisgov_mcp; do
    wheel=$(ls "$dist"/"$stem"-*.whl 2>/dev/null | head -n 1 || true)
    [ -n "$wheel" ] || { echo "error: no $dist/$stem-*.whl; run 'make dist' first" >&2; exit 1; }
    wheels+=("$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")")
done

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== install the five wheels into $work/venv"
$UV venv --quiet --python python3 "$work/venv"
$UV pip install --quiet --python "$work/venv/bin/python" "${wheels[@]}"
cp -r examples/policies "$work/policies"
cp examples/mcp_policies.yaml "$work/policies/mcp_policies.yaml"
cp scripts/smoke_installed.py "$work/smoke_installed.py"
cp examples/mcp_tools_server.py "$work/mcp_tools_server.py"
cd "$work"
py="$work/venv/bin/python"
server="$work/venv/bin/aegis-server"

echo "== start the installed aegis-server"
db="sqlite+aiosqlite:///$work/aegis.db"
"$server" db upgrade --db "$db"
key=$("$server" keys create --db "$db" --name smoke --scopes admin --actors '*')
port=$("$py" -I -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
AEGIS_LOG_LEVEL=warning "$server" serve --db "$db" --policy "$work/policies" --host 127.0.0.1 --port "$port" \
    >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
    "$py" -I -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:$port/api/v1/ready').status_code != 200)" \
        2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "error: aegis-server exited" >&2; exit 1; }
    sleep 0.2
done

echo "== smoke test with the installed SDK, adapters and aegis-mcp"
AEGIS_ENDPOINT="http://127.0.0.1:$port" AEGIS_API_KEY="$key" "$py" -I "$work/smoke_installed.py"
"$server" audit verify --db "$db"
