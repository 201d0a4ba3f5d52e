"""Every example of the SDK page (spec/python-sdk-doc.txt), as written there; only the endpoint and key
are adapted, and the platform is a fake behind httpx.MockTransport."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

import httpx
import pytest
from sdk_support import API_KEY, ENDPOINT, FakePlatform, decision_body, error_body, reply

from aegis_sdk import AegisClient, AegisError, AsyncAegisClient, Decision, GovernanceError

PAGE_PROPOSAL = {
    "actor": {"id": "agent-001", "type": "ai-agent"},
    "action": {
        "capability": "database.query",
        "parameters": {
            "query": "SELECT * FROM users LIMIT 10",
            "database": "production",
        },
    },
    "context": {
        "session_id": "sess_abc123",
        "metadata": {"source": "customer-support-bot"},
    },
}


def test_setup_with_the_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_API_KEY", API_KEY)
    aegis = AegisClient(
        endpoint="https://api.aegissystems.live",
        api_key=os.environ["AEGIS_API_KEY"],
    )
    try:
        assert aegis.endpoint == "https://api.aegissystems.live"
    finally:
        aegis.close()


def test_configuration_defaults_match_the_options_table() -> None:
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY) as aegis:
        assert (aegis.timeout, aegis.retries, aegis.retry_delay) == (30.0, 3, 1.0)
    with AegisClient(endpoint=ENDPOINT, api_key=API_KEY, timeout=5.0, retries=1, retry_delay=0.5) as aegis:
        assert (aegis.timeout, aegis.retries, aegis.retry_delay) == (5.0, 1, 0.5)


def test_proposing_an_action_sends_the_page_proposal(make_sync: Any) -> None:
    platform = FakePlatform(reply(200, decision_body("ALLOW")))
    aegis = make_sync(platform)
    decision = aegis.propose(
        actor={"id": "agent-001", "type": "ai-agent"},
        action={
            "capability": "database.query",
            "parameters": {
                "query": "SELECT * FROM users LIMIT 10",
                "database": "production",
            },
        },
        context={
            "session_id": "sess_abc123",
            "metadata": {"source": "customer-support-bot"},
        },
    )
    assert decision.outcome == "ALLOW"
    assert platform.last.url == f"{ENDPOINT}/api/v1/governance/propose"
    assert platform.bodies()[-1] == PAGE_PROPOSAL


@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION"])
def test_handling_decisions_with_match(make_sync: Any, outcome: str) -> None:
    extra: dict[str, Any] = {}
    if outcome == "ESCALATE":
        extra["review"] = {"status": "pending"}
    if outcome == "REQUIRE_CONFIRMATION":
        extra["confirmation_token"] = "ctok_1"
    aegis = make_sync(FakePlatform(reply(200, decision_body(outcome, **extra))))
    decision = aegis.propose(**PAGE_PROPOSAL)
    seen: list[str] = []

    def execute_query(decision: Decision) -> str:
        seen.append("executed")
        return "rows"

    def notify_reviewer(decision: Decision) -> None:
        seen.append("reviewer notified")

    def prompt_user(decision: Decision) -> bool:
        seen.append("user prompted")
        return True

    # The page's block, verbatim.
    match decision.outcome:
        case "ALLOW":
            # Safe to execute the action
            result = execute_query(decision)
            assert result == "rows"
        case "DENY":
            print(f"Action denied: {decision.reason}")
            seen.append("denied")
        case "ESCALATE":
            # Route to human reviewer
            notify_reviewer(decision)
        case "REQUIRE_CONFIRMATION":
            # Present to user for approval
            confirmed = prompt_user(decision)
            if confirmed:
                # Resubmit with confirmation token
                pass

    expected = {
        "ALLOW": "executed",
        "DENY": "denied",
        "ESCALATE": "reviewer notified",
        "REQUIRE_CONFIRMATION": "user prompted",
    }
    assert seen == [expected[outcome]]


def test_decision_object_has_the_page_fields_plus_the_contract_extensions(make_sync: Any) -> None:
    aegis = make_sync(FakePlatform(reply(200, decision_body("ALLOW", constraints={"max_rows": 100}))))
    decision = aegis.propose(**PAGE_PROPOSAL)
    assert dataclasses.is_dataclass(decision)
    names = [f.name for f in dataclasses.fields(decision)]
    page_fields = ["decision_id", "outcome", "reason", "risk_score", "constraints", "timestamp", "audit_ref"]
    extensions = [
        "policy_ids",
        "confirmation_token",
        "expires_at",
        "review",
        "parent_decision_id",
        "policy_version",
        "shadow",
    ]
    assert names == page_fields + extensions
    hints = typing.get_type_hints(Decision)
    assert typing.get_args(hints["outcome"]) == ("ALLOW", "DENY", "ESCALATE", "REQUIRE_CONFIRMATION")
    assert isinstance(decision.decision_id, str)
    assert isinstance(decision.reason, str)
    assert isinstance(decision.risk_score, float)
    assert decision.constraints == {"max_rows": 100}
    assert isinstance(decision.timestamp, str)
    assert isinstance(decision.audit_ref, str)


async def test_async_support(make_async: Any) -> None:
    platform = FakePlatform(reply(200, decision_body("ALLOW")))
    aegis = make_async(platform)
    decision = await aegis.propose(
        actor={"id": "agent-001", "type": "ai-agent"},
        action={"capability": "database.query", "parameters": {"query": "..."}},
    )
    assert decision.outcome == "ALLOW"
    assert platform.bodies()[-1]["action"] == {"capability": "database.query", "parameters": {"query": "..."}}


async def test_async_client_as_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_API_KEY", API_KEY)
    aegis = AsyncAegisClient(
        endpoint="https://api.aegissystems.live",
        api_key=os.environ["AEGIS_API_KEY"],
    )
    await aegis.aclose()


@pytest.mark.parametrize(
    ("answer", "printed"),
    [
        (reply(404, error_body("governance_error", "unknown_capability", "Unknown capability")), "Governance error"),
        (reply(401, error_body("authentication_error", "invalid_api_key", "Unknown key")), "Transport error"),
        (httpx.ConnectError("connection refused"), "Transport error"),
    ],
)
def test_error_handling(make_sync: Any, capsys: pytest.CaptureFixture[str], answer: Any, printed: str) -> None:
    aegis = make_sync(FakePlatform(answer), retries=0)
    try:
        decision = aegis.propose(**PAGE_PROPOSAL)
    except GovernanceError as e:
        # Governance system error (e.g., invalid capability)
        print(f"Governance error: {e}")
    except AegisError as e:
        # Transport error (network, timeout, auth failure)
        print(f"Transport error: {e}")
    else:
        raise AssertionError(f"expected an error, got {decision}")
    assert capsys.readouterr().out.startswith(printed)


def test_client_with_ellipsis_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's integration patterns write `AegisClient(...)`: it configures itself from AEGIS_*."""
    monkeypatch.setenv("AEGIS_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("AEGIS_API_KEY", API_KEY)
    aegis = AegisClient(...)
    assert aegis.endpoint == ENDPOINT
    aegis.close()


async def test_fastapi_dependency_pattern(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    try:
        from fastapi import HTTPException  # the page's import, when FastAPI is installed
    except ImportError:  # the SDK's own test environment has no FastAPI: an equivalent exception

        class HTTPException(Exception):  # type: ignore[no-redef]
            def __init__(self, status_code: int, detail: Any = None) -> None:
                super().__init__(detail)
                self.status_code = status_code
                self.detail = detail

    monkeypatch.setenv("AEGIS_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("AEGIS_API_KEY", API_KEY)
    aegis = AsyncAegisClient(...)
    outcomes = iter(["ALLOW", "DENY"])
    platform = FakePlatform(lambda request: reply(200, decision_body(next(outcomes), reason="not in office hours")))
    await aegis._http.aclose()
    aegis._http = httpx.AsyncClient(transport=httpx.MockTransport(platform))

    async def require_governance(capability: str, parameters: dict[str, Any], agent_id: str) -> Decision:
        decision = await aegis.propose(
            actor={"id": agent_id, "type": "ai-agent"},
            action={"capability": capability, "parameters": parameters},
        )
        if decision.outcome != "ALLOW":
            raise HTTPException(status_code=403, detail=decision.reason)
        return decision

    try:
        allowed = await require_governance("payments.refund", {"amount": 40}, "agent-7")
        assert allowed.outcome == "ALLOW"
        with pytest.raises(HTTPException) as caught:
            await require_governance("payments.refund", {"amount": 4000}, "agent-7")
        assert caught.value.status_code == 403
        assert caught.value.detail == "not in office hours"
        assert platform.bodies()[0]["actor"] == {"id": "agent-7", "type": "ai-agent"}
    finally:
        await aegis._http.aclose()
        await aegis.aclose()


def test_langchain_tool_wrapper_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEGIS_ENDPOINT", ENDPOINT)
    monkeypatch.setenv("AEGIS_API_KEY", API_KEY)
    aegis = AegisClient(...)
    outcomes = iter(["ALLOW", "DENY"])
    platform = FakePlatform(lambda request: reply(200, decision_body(next(outcomes), reason="too many recipients")))
    aegis._http.close()
    aegis._http = httpx.Client(transport=httpx.MockTransport(platform))

    def governed_tool(capability: str) -> Any:
        def decorator(func: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                decision = aegis.propose(
                    actor={"id": "langchain-agent", "type": "ai-agent"},
                    action={"capability": capability, "parameters": kwargs},
                )
                if decision.outcome == "ALLOW":
                    return func(*args, **kwargs)
                raise PermissionError(f"Governance denied: {decision.reason}")

            return wrapper

        return decorator

    @governed_tool("email.send")
    def send_email(to: str, subject: str) -> str:
        return f"sent to {to}"

    try:
        assert send_email(to="a@example.com", subject="hi") == "sent to a@example.com"
        with pytest.raises(PermissionError, match="Governance denied: too many recipients"):
            send_email(to="all@example.com", subject="hi")
        assert platform.bodies()[0]["action"] == {
            "capability": "email.send",
            "parameters": {"to": "a@example.com", "subject": "hi"},
        }
    finally:
        aegis._http.close()
        aegis.close()
