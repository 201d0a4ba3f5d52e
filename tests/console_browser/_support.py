"""What the console's browser tests share: a real aegis-server process, Debian's chromium, axe-core, screenshots.

- `ConsoleServer`: `python -m aegis_server serve` on a free loopback port, a SQLite file in a temporary
  folder and the example policies; its keys are made with the CLI (`aegis-server keys create`), as an
  operator would.
- `launch_chromium()`: Debian's `chromium` through Playwright's `executable_path`. Playwright's own browser
  download cannot work on these machines, so none is ever attempted.
- `assert_accessible(page)`: the vendored axe-core (vendor/README.md) run on the page, WCAG 2 A and AA.
- `save_screenshot(page, name)`: a PNG in `$AEGIS_CONSOLE_SCREENSHOTS` (`make console-screenshots` points it
  at docs/images/console/), else in a temporary folder.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Locator, Page, Playwright

from aegis_sdk import AegisClient
from aegis_sdk.models import Decision

ROOT = Path(__file__).resolve().parents[2]
POLICIES = "examples/policies"
AXE_SCRIPT = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
STRUCTURE_RULES = {
    "landmark-one-main",
    "landmark-no-duplicate-main",
    "landmark-unique",
    "page-has-heading-one",
    "region",
}
"""axe's best-practice rules the console's UI contract makes promises of too: landmarks (header/nav/main, all
content inside one) and one h1 per page."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AGENT_ACTORS = "ai-agent:refund-bot-*"
"""The proposer key may propose only for these actors; every test proposes as one of them."""


def browser_required() -> bool:
    """CI (and `AEGIS_TEST_BROWSER=required`) must run these tests: a missing chromium fails there."""
    return os.environ.get("AEGIS_TEST_BROWSER") == "required" or os.environ.get("CI") == "true"


def chromium_path() -> str | None:
    return shutil.which("chromium")


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


@dataclass(frozen=True)
class ConsoleKeys:
    agent: str  # governance:propose + governance:read, bound to AGENT_ACTORS: the agent's SDK key
    alice: str  # reviewer
    bob: str  # a second reviewer
    self_reviewer: str  # proposes and reviews: may review others' requests, never its own
    admin: str
    auditor: str  # audit:read only


_END_OF_COMMAND = "--- end of aegis-server command ---"
_CLI_SCRIPT = f"""
import json, sys
from aegis_server.cli import main
for arguments in json.loads(sys.argv[1]):
    status = main(arguments)
    print("\\n{_END_OF_COMMAND}", status, flush=True)
"""


def _key(name: str, scopes: str, actors: str | None = None) -> list[str]:
    return ["keys", "create", "--name", name, "--scopes", scopes] + (["--actors", actors] if actors else [])


def _cli(db_url: str, *commands: list[str]) -> list[str]:
    """Run `aegis-server` commands (its CLI's own `main`) in one Python process: starting one per key would cost
    seconds each on a loaded machine. Returns each command's output."""
    done = subprocess.run(
        [sys.executable, "-c", _CLI_SCRIPT, json.dumps([[*command, "--db", db_url] for command in commands])],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    outputs = done.stdout.split(_END_OF_COMMAND)
    statuses = [part.split("\n", 1)[0].strip() for part in outputs[1:]]
    assert done.returncode == 0 and statuses == ["0"] * len(commands), f"aegis-server CLI: {done.stderr}"
    return [outputs[0].strip()] + [part.split("\n", 1)[1].strip() for part in outputs[1:-1]]


class ConsoleServer:
    """A real `aegis-server serve` subprocess with the console on; `stop()` ends it."""

    def __init__(self, folder: Path, *, session_seconds: int | None = None) -> None:
        self.db_url = f"sqlite+aiosqlite:///{folder / 'aegis.db'}"
        agent, alice, bob, self_reviewer, admin, auditor = _cli(
            self.db_url,
            ["db", "upgrade"],
            _key("refund-agent", "governance:propose,governance:read", AGENT_ACTORS),
            _key("alice", "governance:review,governance:read"),
            _key("bob", "governance:review,governance:read"),
            _key("dana-self-reviewer", "governance:propose,governance:read,governance:review", AGENT_ACTORS),
            _key("root-admin", "admin", "*"),
            _key("erin-auditor", "audit:read"),
        )[1:]
        self.keys = ConsoleKeys(agent, alice, bob, self_reviewer, admin, auditor)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "AEGIS_PUBLIC_URL": self.endpoint}
        if session_seconds is not None:
            environment["AEGIS_CONSOLE_SESSION_SECONDS"] = str(session_seconds)
        # The policies as `make serve` names them (relative to the repository): the Policies page shows the path.
        command = [sys.executable, "-m", "aegis_server", "serve", "--db", self.db_url, "--policy", POLICIES]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        self._output: list[str] = []
        self._process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=lambda: self._output.extend(self._process.stdout or []), daemon=True)
        self._reader.start()
        self._clients: list[AegisClient] = []
        deadline = time.monotonic() + 120  # a loaded 2-core CI machine starts it slowly
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"aegis-server exited early: {self.output()}")
            try:
                if httpx.get(f"{self.endpoint}/api/v1/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"aegis-server not ready in 120 s: {self.output()}")
            time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"{self.endpoint}{path}"

    def output(self) -> str:
        return "".join(self._output)

    def client(self, api_key: str) -> AegisClient:
        client = AegisClient(endpoint=self.endpoint, api_key=api_key)
        self._clients.append(client)
        return client

    def decision(self, decision_id: str) -> Decision:
        """The decision as the API shows it now (read with the admin key)."""
        return self.client(self.keys.admin).decisions.get(decision_id)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def unique_order_id() -> str:
    return f"A-{secrets.token_hex(5)}"


def propose_large_refund(agent: AegisClient, order_id: str, *, bot: str = "refund-bot-1") -> Decision:
    """A refund above 1000: examples/policies/payments.yaml escalates it to a person for an hour."""
    decision = agent.propose(
        actor={"id": bot, "type": "ai-agent"},
        action={
            "capability": "payments.refund",
            "parameters": {"order_id": order_id, "amount": 5000, "currency": "EUR"},
        },
    )
    assert decision.outcome == "ESCALATE", decision
    return decision


def sign_in(page: Page, server: ConsoleServer, api_key: str) -> None:
    """Sign in through the form, as a person would, and wait to land past it (the inbox, for most keys)."""
    page.goto(server.url("/console/sign-in"))
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/console/sign-in" not in url)


def assert_accessible(page: Page) -> None:
    """axe-core over the whole page (WCAG 2.0/2.1 A and AA, and STRUCTURE_RULES); fails listing every violation."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol, not added as a <script>: the console's Content-Security-Policy
        # (script-src 'self') rightly refuses inline scripts, and the page is checked with that policy on.
        page.evaluate(AXE_SCRIPT.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        [*WCAG_TAGS, "best-practice"],
    )
    violations = [v for v in result["violations"] if v["id"] in STRUCTURE_RULES or set(v["tags"]) & set(WCAG_TAGS)]
    scheme = page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'")
    lines = [
        f"- {v['id']} ({v['impact']}): {v['help']}; at {', '.join(str(n['target']) for n in v['nodes'][:5])}"
        + (f" (+{len(v['nodes']) - 5} more)" if len(v["nodes"]) > 5 else "")
        for v in violations
    ]
    assert not violations, f"axe-core: {len(violations)} violation(s) on {page.url} ({scheme}):\n" + "\n".join(lines)


def screenshots_folder() -> Path:
    configured = os.environ.get("AEGIS_CONSOLE_SCREENSHOTS")
    folder = Path(configured) if configured else Path(tempfile.gettempdir()) / "aegis-console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(page: Page, name: str) -> Path:
    """The viewport (1280x800) as `<name>.png`: what a person sees first, small enough for the docs."""
    path = screenshots_folder() / f"{name}.png"
    page.screenshot(path=str(path), full_page=False, animations="disabled", caret="hide")
    return path


def approve_button(page: Page) -> Locator:
    return page.get_by_role("button", name="Approve", exact=True)


def inbox_item(page: Page, order_id: str) -> Locator:
    """The innermost element holding both this request's order id and an Approve button: its inbox entry.

    The UI contract fixes names and roles, not the markup, so the entry is found by what a person sees."""
    return page.locator("main *", has_text=order_id, has=approve_button(page)).last


def session_cookie(page: Page) -> str:
    cookies = [c for c in page.context.cookies() if c["name"] == "aegis_console"]
    assert len(cookies) == 1, f"expected one aegis_console cookie, got {cookies}"
    return cookies[0]["value"]


def review_form(item: Locator, button_name: str) -> tuple[str, dict[str, str]]:
    """The action and the fields a press of `button_name` in this entry submits (csrf_token included)."""
    button = item.get_by_role("button", name=button_name, exact=True)
    found: dict[str, Any] = button.evaluate(
        """button => {
            const form = button.form;
            const fields = Object.fromEntries([...new FormData(form)].map(([k, v]) => [k, String(v)]));
            if (button.name) fields[button.name] = button.value;
            return {action: form.action, fields};
        }"""
    )
    return found["action"], found["fields"]
