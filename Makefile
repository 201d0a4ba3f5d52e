# The README names these targets. Each one installs what it needs (uv, then the locked workspace).
SHELL := /bin/bash
PYTHON ?= python3
export UV_PYTHON_DOWNLOADS := never
# Installed packages come with their bytecode: where PYTHONDONTWRITEBYTECODE is set, every process would
# otherwise compile the server's imports again (~6 s a start on a slow machine instead of ~2).
export UV_COMPILE_BYTECODE := 1
UV := $(PYTHON) -m uv
RUN := $(UV) run --locked

.PHONY: setup demo serve test console-screenshots test-sdk-pythons test-server-lowest-fastapi lint format bench bench-galileo-env dist check-wheel smoke-dists docs docs-serve bump clean

setup:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --locked --quiet
	@$(RUN) python -m compileall -q packages/aegis-sdk/src packages/aegis-server/src packages/aegis-fastapi/src packages/aegis-langchain/src packages/aegis-mcp/src >/dev/null

demo: setup
	$(RUN) python examples/demo.py

serve: setup
	@echo "AEGIS on http://127.0.0.1:8000 (SQLite under ./.aegis/, policies from examples/policies/). The first start"
	@echo "prints a development key; later: $(UV) run aegis-server keys create --name me --scopes admin --actors '*'"
	$(RUN) aegis-server serve

test: setup
	$(RUN) pytest $(PYTEST_ARGS)

# The console's screenshots (docs/images/console/*.png), taken by its browser tests with Debian's chromium.
console-screenshots: setup
	AEGIS_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/images/console $(RUN) pytest -q -p no:cacheprovider tests/console_browser/test_pages.py tests/console_browser/test_policy_lifecycle.py

test-sdk-pythons: setup
	bash scripts/test_sdk_pythons.sh

test-server-lowest-fastapi: setup
	bash scripts/test_server_lowest_fastapi.sh

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: setup
	$(RUN) --group bench python -m bench

# Galileo's agent-control-server needs Python >= 3.12, so it cannot join the workspace lock: the bench
# runs it from this side environment when it exists (bench/peer_galileo.py).
GALILEO_PYTHON ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12.*/bin/python) $(shell command -v python3.12))
bench-galileo-env:
	@test -n "$(GALILEO_PYTHON)" || { echo "needs a Python 3.12 (pyenv install 3.12, or GALILEO_PYTHON=/path/to/python3.12)"; exit 1; }
	$(GALILEO_PYTHON) -m venv .bench-venvs/galileo
	.bench-venvs/galileo/bin/pip install --quiet --disable-pip-version-check "agent-control-server==8.15.*"

dist: setup
	rm -rf dist
	for p in packages/*/; do $(UV) build --quiet --out-dir dist "$$p"; done
	$(RUN) python scripts/check_dists.py dist

check-wheel: dist
	bash scripts/check_sdk_wheel.sh

# The five wheels (aegisgov-*) in a fresh virtualenv outside the workspace, the installed aegis-server, a smoke test.
smoke-dists: dist
	bash scripts/smoke_dists.sh dist

# The documentation site, warnings as errors (site/); `make docs-serve` previews it with live reload.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict --quiet --site-dir site

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs serve --dev-addr 127.0.0.1:8001

# One version for every package, the root and every sibling pin (the pyproject.toml files), then the lock; each
# package's __version__ reads its installed metadata, so the next `uv sync` (any make target) carries it.
bump: setup
	@test -n "$(VERSION)" || { echo "usage: make bump VERSION=x.y.z"; exit 2; }
	$(RUN) python scripts/bump_version.py $(VERSION)
	$(UV) lock --quiet
	@$(UV) sync --locked --quiet

clean:
	rm -rf dist site .aegis .pytest_cache .mypy_cache .ruff_cache
