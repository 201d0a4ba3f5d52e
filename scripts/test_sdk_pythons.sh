#!/usr/bin/env bash
# Run the tests of the packages that promise Python >=3.10 (the SDK, both adapters and aegis-mcp) against
# their built wheels, under 3.10 and 3.13 from pyenv. Each run uses a fresh virtualenv outside the workspace,
# so no workspace source can leak in. (aegis-server needs 3.11+, so only tests that do not import it run here.)
# The aegis-mcp tests talk to a real aegis-server in its own process (`python -m aegis_server ...`): that
# process, and only it, runs on the workspace's Python through a small shim, while the proxy, the upstream
# MCP servers and the tests run on the Python under test.
# aegis-fastapi calls FastAPI internals, so it promises a bounded FastAPI range: the first Python runs the
# LOWEST FastAPI of that range (with the Starlette it resolves), every other one the NEWEST. aegis-mcp likewise:
# the first Python runs the LOWEST mcp SDK it accepts (mcp>=2.0 → mcp==2.0.0 with mcp-types==2.0.0), the
# others the newest.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
UV="python3 -m uv"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for package in aegis-sdk aegis-fastapi aegis-langchain aegis-mcp; do
    $UV build --quiet --wheel --out-dir "$work/dist" "packages/$package"
done
wheels=("$work"/dist/aegisgov_sdk-*.whl "$work"/dist/aegisgov_fastapi-*.whl "$work"/dist/aegisgov_mcp-*.whl)
langchain_wheel=$(ls "$work"/dist/aegisgov_langchain-*.whl)
# Tests that need only the SDK and the adapters (and not aegis-server, which needs Python 3.11+).
test_paths=(tests/sdk tests/fastapi/test_fastapi_fake.py tests/fastapi/test_fastapi_routers_fake.py tests/langchain/test_fake_platform.py tests/langchain/test_langchain_tracing.py tests/fastapi/test_fastapi_escalation_fake.py tests/fastapi/test_fastapi_tracing.py tests/mcp_governance)

# `python -m aegis_server ARGS` on the Python under test becomes the workspace's `python -m aegis_server ARGS`
# (the server needs 3.11+). Only the tests' interpreter sees the shim (PYTHONPATH); the server's does not.
server_python="$PWD/.venv/bin/python"
[ -x "$server_python" ] || { echo "error: no workspace environment at .venv; run 'make setup' first" >&2; exit 1; }
mkdir -p "$work/server-shim/aegis_server"
cat >"$work/server-shim/aegis_server/__init__.py" <<'PY'
"""A stand-in for the tests on a Python that cannot install aegis-server: only `python -m aegis_server` works."""
PY
cat >"$work/server-shim/aegis_server/__main__.py" <<PY
import os, sys
env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
os.execve("$server_python", ["$server_python", "-m", "aegis_server", *sys.argv[1:]], env)
PY

# The range of aegis-fastapi's pyproject.toml, e.g. "fastapi>=0.115,<0.166": lowest is ==0.115 (0.115.0).
fastapi_range=$(grep -o '"fastapi>=[0-9.]*,<[0-9.]*"' packages/aegis-fastapi/pyproject.toml | tr -d '"')
[ -n "$fastapi_range" ] || { echo "error: no bounded fastapi>=X,<Y in packages/aegis-fastapi/pyproject.toml" >&2; exit 1; }
fastapi_lowest="fastapi==${fastapi_range#fastapi>=}"
fastapi_lowest=${fastapi_lowest%%,*}

# The lower bound of aegis-mcp's "mcp>=X,<Y": mcp==X (and mcp-types==X, released with it).
mcp_floor=$(grep -o '"mcp>=[0-9.]*,<[0-9]*"' packages/aegis-mcp/pyproject.toml | tr -d '"' | sed 's/^mcp>=\([0-9.]*\),.*/\1/')
[ -n "$mcp_floor" ] || { echo "error: no mcp>=X,<Y in packages/aegis-mcp/pyproject.toml" >&2; exit 1; }
case "$mcp_floor" in *.*.*) mcp_lowest=$mcp_floor ;; *) mcp_lowest="$mcp_floor.0" ;; esac

pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
versions=${AEGIS_SDK_PYTHONS:-"3.10 3.13"}
ran=0
for minor in $versions; do
    interpreter=$(ls -d "$pyenv_root"/versions/"$minor".*/bin/python"$minor" 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$interpreter" ]; then
        echo "error: no Python $minor under $pyenv_root/versions (set AEGIS_SDK_PYTHONS to the versions you have)" >&2
        exit 1
    fi
    venv="$work/venv-$minor"
    $UV venv --quiet --python "$interpreter" "$venv"
    if [ "$ran" -eq 0 ]; then
        fastapi_spec=$fastapi_lowest
        mcp_specs=("mcp==$mcp_lowest" "mcp-types==$mcp_lowest")
    else
        fastapi_spec=$fastapi_range
        mcp_specs=()
    fi
    $UV pip install --quiet --python "$venv/bin/python" "${wheels[@]}" "$langchain_wheel[langgraph,agents]" \
        "$fastapi_spec" "${mcp_specs[@]}" pytest pytest-asyncio hypothesis uvicorn opentelemetry-sdk
    frameworks=$("$venv/bin/python" -c 'import fastapi, starlette, importlib.metadata as m; v = m.version("mcp"); print(f"fastapi {fastapi.__version__}, starlette {starlette.__version__}, mcp {v}")')
    if [ "$ran" -eq 0 ]; then
        "$venv/bin/python" -c 'import importlib.metadata as m, sys; v = m.version("mcp"); sys.exit(0 if v == sys.argv[1] else f"expected mcp {sys.argv[1]}, found {v}")' "$mcp_lowest"
    fi
    echo "== aegis-sdk, aegis-fastapi, aegis-langchain, aegis-mcp tests on $("$venv/bin/python" --version) from the built wheels, with $frameworks ($fastapi_spec)"
    # -p no:cacheprovider: leave no state behind; --rootdir: use the workspace's pytest settings.
    (cd "$work" && PYTHONPATH="$work/server-shim" "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$OLDPWD" \
        -c "$OLDPWD/pyproject.toml" "${test_paths[@]/#/$OLDPWD/}")
    "$venv/bin/python" - <<'PY'
import sys
import aegis_fastapi, aegis_langchain, aegis_mcp, aegis_sdk, mcp
for module in (aegis_sdk, aegis_fastapi, aegis_langchain, aegis_mcp):
    assert "/site-packages/" in module.__file__, f"tests imported {module.__file__}, not the installed wheel"
print(f"ok: aegis_sdk {aegis_sdk.__version__}, both adapters and aegis_mcp on Python {sys.version.split()[0]}, from wheels")
PY
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "error: no Python version was tested" >&2; exit 1; }
