#!/usr/bin/env bash
# Run the SDK's tests against its built wheel under every Python it promises (>=3.10) that pyenv has here.
# Each run uses a fresh virtualenv outside the workspace, so no workspace source can leak in.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS=never
UV="python3 -m uv"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$UV build --quiet --wheel --out-dir "$work/dist" packages/aegis-sdk
wheel=$(ls "$work"/dist/aegis_sdk-*.whl)

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
    $UV pip install --quiet --python "$venv/bin/python" "$wheel" pytest pytest-asyncio hypothesis
    echo "== aegis-sdk tests on $("$venv/bin/python" --version) from the built wheel"
    # -p no:cacheprovider: leave no state behind; --rootdir: use the workspace's pytest settings.
    (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$OLDPWD" \
        -c "$OLDPWD/pyproject.toml" "$OLDPWD/tests/sdk")
    "$venv/bin/python" - <<'PY'
import aegis_sdk, sys
assert "/site-packages/" in aegis_sdk.__file__, f"tests imported {aegis_sdk.__file__}, not the installed wheel"
print(f"ok: aegis_sdk {aegis_sdk.__version__} on Python {sys.version.split()[0]} from {aegis_sdk.__file__}")
PY
    ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "error: no Python version was tested" >&2; exit 1; }
