#!/usr/bin/env bash
# Run the tests of the packages that promise Python >=3.10 (the SDK and both adapters) against their built
# wheels, under 3.10 and 3.13 from pyenv. Each run uses a fresh virtualenv outside the workspace, so no
# workspace source can leak in. (aegis-server needs 3.11+, so only tests that do not import it run here.)
# aegis-fastapi calls FastAPI internals, so it promises a bounded FastAPI range: the first Python runs the
# LOWEST FastAPI of that range (with the Starlette it resolves), every other one the NEWEST.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
UV="python3 -m uv"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for package in aegis-sdk aegis-fastapi aegis-langchain; do
    $UV build --quiet --wheel --out-dir "$work/dist" "packages/$package"
done
wheels=("$work"/dist/aegisgov_sdk-*.whl "$work"/dist/aegisgov_fastapi-*.whl)
langchain_wheel=$(ls "$work"/dist/aegisgov_langchain-*.whl)
# Tests that need only the SDK and the adapters (and not aegis-server, which needs Python 3.11+).
test_paths=(tests/sdk tests/fastapi/test_fastapi_fake.py tests/fastapi/test_fastapi_routers_fake.py tests/langchain/test_fake_platform.py tests/fastapi/test_fastapi_escalation_fake.py)

# The range of aegis-fastapi's pyproject.toml, e.g. "fastapi>=0.115,<0.166": lowest is ==0.115 (0.115.0).
fastapi_range=$(grep -o '"fastapi>=[0-9.]*,<[0-9.]*"' packages/aegis-fastapi/pyproject.toml | tr -d '"')
[ -n "$fastapi_range" ] || { echo "error: no bounded fastapi>=X,<Y in packages/aegis-fastapi/pyproject.toml" >&2; exit 1; }
fastapi_lowest="fastapi==${fastapi_range#fastapi>=}"
fastapi_lowest=${fastapi_lowest%%,*}

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
    if [ "$ran" -eq 0 ]; then fastapi_spec=$fastapi_lowest; else fastapi_spec=$fastapi_range; fi
    $UV pip install --quiet --python "$venv/bin/python" "${wheels[@]}" "$langchain_wheel[langgraph,agents]" \
        "$fastapi_spec" pytest pytest-asyncio hypothesis uvicorn
    frameworks=$("$venv/bin/python" -c 'import fastapi, starlette; print(f"fastapi {fastapi.__version__}, starlette {starlette.__version__}")')
    echo "== aegis-sdk, aegis-fastapi, aegis-langchain tests on $("$venv/bin/python" --version) from the built wheels, with $frameworks ($fastapi_spec)"
    # -p no:cacheprovider: leave no state behind; --rootdir: use the workspace's pytest settings.
    (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$OLDPWD" \
        -c "$OLDPWD/pyproject.toml" "${test_paths[@]/#/$OLDPWD/}")
    "$venv/bin/python" - <<'PY'
import sys
import aegis_fastapi, aegis_langchain, aegis_sdk
for module in (aegis_sdk, aegis_fastapi, aegis_langchain):
    assert "/site-packages/" in module.__file__, f"tests imported {module.__file__}, not the installed wheel"
print(f"ok: aegis_sdk {aegis_sdk.__version__} and both adapters on Python {sys.version.split()[0]}, from wheels")
PY
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "error: no Python version was tested" >&2; exit 1; }
