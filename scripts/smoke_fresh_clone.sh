#!/usr/bin/env bash
# The README's two commands on a fresh clone, as a newcomer runs them: clone this repository's HEAD into
# a temporary folder, then `make demo` (set-up included) and `make test`, each timed. Exit 0 only when both
# are green. CI (.ci/run) runs the same two commands on its own fresh clone; this is the same check by hand.
#
#     bash scripts/smoke_fresh_clone.sh [REPO]      # default: this repository
set -euo pipefail
repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/aegis"
cd "$work/aegis"
echo "== fresh clone of $(git log -1 --format='%h %s') in $work/aegis"

started=$SECONDS
make demo
demo=$((SECONDS - started))

started=$SECONDS
make test
tests=$((SECONDS - started))

echo "== both green: make demo ${demo} s (the first run installs uv and the workspace), make test ${tests} s"
