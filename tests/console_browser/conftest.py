"""Fixtures for the console's browser tests: one chromium and one aegis-server for all of them (package-scoped:
both end when this folder's tests are done, not when the rest of `make test` is).

Without Debian's `chromium` the tests are skipped with the reason, except under `CI=true` or
`AEGIS_TEST_BROWSER=required` (.ci/run sets it), where a missing browser fails them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from ._support import ConsoleServer, browser_required, chromium_path, launch_chromium

NewPage = Callable[..., Page]
TIMEOUT_MS = 15_000  # the longest one step may take on a loaded 2-core CI machine before the test fails

expect.set_options(timeout=TIMEOUT_MS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's chromium through Playwright (tests/console_browser)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        reason = "Debian's chromium is not installed (apt-get install chromium); the console's browser tests need it"
        if browser_required():
            pytest.fail(reason + " (CI=true or AEGIS_TEST_BROWSER=required)")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def console(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """The server most tests share (the default 8-hour session); each test proposes its own requests."""
    server = ConsoleServer(tmp_path_factory.mktemp("console"))
    yield server
    server.stop()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[NewPage]:
    """`new_page(color_scheme="dark", javascript=False)`: a page in a fresh browser context (its own cookies),
    1280x800."""
    contexts: list[BrowserContext] = []

    def make(color_scheme: str = "light", *, javascript: bool = True) -> Page:
        context = browser.new_context(
            java_script_enabled=javascript,
            color_scheme=color_scheme,  # type: ignore[arg-type]
            viewport={"width": 1280, "height": 800},
            locale="en-US",
            timezone_id="UTC",
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
