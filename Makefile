# The README names these targets. Each one installs what it needs (uv, then the locked workspace).
SHELL := /bin/bash
PYTHON ?= python3
export UV_PYTHON_DOWNLOADS := never
UV := $(PYTHON) -m uv
RUN := $(UV) run --locked

.PHONY: setup demo serve test test-sdk-pythons lint format bench dist check-wheel bump clean

setup:
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --locked --quiet

demo: setup
	$(RUN) python examples/demo.py

serve: setup
	$(RUN) aegis-server serve

test: setup
	$(RUN) pytest $(PYTEST_ARGS)

test-sdk-pythons: setup
	bash scripts/test_sdk_pythons.sh

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

format: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: setup
	$(RUN) python -m bench

dist: setup
	rm -rf dist
	for p in packages/*/; do $(UV) build --quiet --out-dir dist "$$p"; done

check-wheel: dist
	bash scripts/check_sdk_wheel.sh

bump: setup
	$(RUN) python scripts/bump_version.py $(VERSION)

clean:
	rm -rf dist .aegis .pytest_cache .mypy_cache .ruff_cache
