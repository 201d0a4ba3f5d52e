"""Governed tools on the sync path against the real server: each outcome, confirmation, escalation,
execution reports, actor/session from the run's config, fail-closed, and what the model sees."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from lc_support import event_types, execution_payload
from pydantic import BaseModel, Field

from aegis_langchain import (
    ActionDenied,
    ConfirmationRequired,
    GovernanceRefusal,
    GovernanceUnavailable,
    GovernedTool,
    ReviewPending,
    current_decision,
    derive_capability,
    govern_tool,
    govern_tools,
    governed_tool,
)
from aegis_sdk import AegisClient, Decision


def call(name: str, args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "args": args}


def make_refund(client: AegisClient, ran: list[dict[str, Any]], **settings: Any) -> GovernedTool:
    @governed_tool("payments.refund", client=client, actor="billing-bot", **settings)
    def refund(order_id: str, amount: float, currency: str = "EUR") -> str:
        """Refund (part of) an order to the customer's card."""
        ran.append({"order_id": order_id, "amount": amount, "currency": currency})
        return f"refunded {amount} {currency} on {order_id}"

    return refund


# -- what the model sees ------------------------------------------------------------------------------


def test_a_governed_tool_looks_exactly_like_the_plain_tool(client: AegisClient) -> None:
    def refund(order_id: str, amount: float, currency: str = "EUR") -> str:
        """Refund (part of) an order to the customer's card."""
        return "ok"

    governed = governed_tool("payments.refund", client=client)(refund)
    plain = tool(refund)
    assert isinstance(governed, BaseTool)
    assert (governed.name, governed.description) == (plain.name, plain.description)
    assert convert_to_openai_tool(governed) == convert_to_openai_tool(plain)
    assert governed.args == plain.args
    assert governed.capability == "payments.refund"


# -- ALLOW --------------------------------------------------------------------------------------------


def test_allow_runs_the_tool_and_reports_success(client: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    refund = make_refund(client, ran)

    message = refund.invoke(call("refund", {"order_id": "A-1", "amount": 40, "currency": "EUR"}))

    assert isinstance(message, ToolMessage)
    assert message.content == "refunded 40.0 EUR on A-1"
    assert message.status == "success"
    assert ran == [{"order_id": "A-1", "amount": 40.0, "currency": "EUR"}]
    artifact = message.artifact
    assert artifact["outcome"] == "ALLOW" and artifact["refusal"] is None
    assert artifact["constraints"] == {"max_amount": 100}
    assert artifact["execution"] == "SUCCESS"
    # the audit ref is on the artifact, never in what the model reads
    assert artifact["audit_ref"] not in message.content and artifact["decision_id"] not in message.content
    # the report is queued, not sent on the call's path: its audit record does not exist yet
    assert artifact["execution_audit_ref"] is None
    assert client.report_stats.queued == 1
    decision = client.decisions.get(artifact["decision_id"])
    assert decision.audit_ref == artifact["audit_ref"]
    payload = execution_payload(client, artifact["decision_id"])  # flushes first
    assert payload["status"] == "SUCCESS"
    trail = client.audit.trail(artifact["decision_id"]).records
    assert trail[0].actor_id == "billing-bot"
    assert (client.report_stats.sent, client.report_stats.failed) == (1, 0)


def test_plain_invoke_returns_the_tools_own_output(client: AegisClient) -> None:
    refund = make_refund(client, [])
    assert refund.invoke({"order_id": "A-2", "amount": 10, "currency": "USD"}) == "refunded 10.0 USD on A-2"


def test_parameters_are_the_validated_arguments_with_defaults(client: AegisClient) -> None:
    refund = make_refund(client, [])
    message = refund.invoke(call("refund", {"order_id": "A-3", "amount": "12.5"}))
    trail = client.audit.trail(message.artifact["decision_id"]).records
    proposal = trail[0].payload
    assert proposal["action"]["parameters"] == {"order_id": "A-3", "amount": 12.5, "currency": "EUR"}
    assert proposal["context"]["metadata"] == {"langchain_tool": "refund", "langchain_tool_call_id": "call_1"}


def test_the_tool_can_read_the_decision_it_runs_under(client: AegisClient) -> None:
    seen: list[Decision | None] = []

    @governed_tool("database.query", client=client)
    def query(query: str, database: str) -> str:
        """Run SQL."""
        seen.append(current_decision())
        return "1 row"

    query.invoke({"query": "SELECT 1", "database": "staging"})
    assert seen[0] is not None and seen[0].constraints == {"max_rows": 1000}
    assert current_decision() is None


def test_a_failing_tool_reports_the_exception_type(client: AegisClient) -> None:
    @governed_tool("database.query", client=client)
    def query(query: str, database: str) -> str:
        """Run SQL."""
        raise TimeoutError("statement timeout")

    with pytest.raises(TimeoutError):
        query.invoke(call("query", {"query": "SELECT * FROM big", "database": "production"}))
    decision = next(iter(client.decisions.list(capability="database.query", limit=1)))
    payload = execution_payload(client, decision.decision_id)
    assert payload["status"] == "FAILED"
    assert payload["error"]["code"] == "TimeoutError"


def test_a_tool_exception_handled_by_the_tool_is_reported_failed(client: AegisClient) -> None:
    @governed_tool("database.query", client=client, handle_tool_error=True)
    def query(query: str, database: str) -> str:
        """Run SQL."""
        raise ToolException("no such table: userz")

    message = query.invoke(call("query", {"query": "SELECT * FROM userz", "database": "staging"}))
    assert message.status == "error" and "no such table" in message.content
    decision = next(iter(client.decisions.list(capability="database.query", limit=1)))
    assert execution_payload(client, decision.decision_id)["error"]["code"] == "ToolException"


# -- DENY ---------------------------------------------------------------------------------------------


def test_deny_is_a_message_for_the_model_and_the_tool_does_not_run(client: AegisClient) -> None:
    ran: list[str] = []

    @governed_tool("database.query", client=client)
    def query(query: str, database: str) -> str:
        """Run SQL."""
        ran.append(query)
        return "done"

    message = query.invoke(call("query", {"query": "DROP TABLE users", "database": "production"}))
    assert ran == []
    assert message.status == "error"
    assert "denied" in message.content and "Destructive SQL" in message.content
    assert message.artifact["outcome"] == "DENY" and message.artifact["refusal"] == "denied"
    assert message.artifact["decision_id"] not in message.content
    assert "execution" not in event_types(client, message.artifact["decision_id"])


def test_deny_raises_a_tool_exception_that_is_a_permission_error(client: AegisClient) -> None:
    @governed_tool("database.query", client=client, handle_tool_error=False)
    def query(query: str, database: str) -> str:
        """Run SQL."""
        return "done"

    with pytest.raises(PermissionError) as caught:  # the SDK page's pattern keeps working
        query.invoke({"query": "DROP TABLE users", "database": "production"})
    refusal = caught.value
    assert isinstance(refusal, ToolException) and isinstance(refusal, ActionDenied)
    assert refusal.decision is not None and refusal.decision.outcome == "DENY"
    assert refusal.code == "denied" and refusal.capability == "database.query"


def test_invalid_parameters_for_the_capability_are_refused(client: AegisClient) -> None:
    ran: list[float] = []
    refund = make_refund(client, ran, handle_tool_error=False)
    with pytest.raises(ActionDenied) as caught:
        refund.invoke({"order_id": "A-4", "amount": -5, "currency": "EUR"})
    assert caught.value.code == "invalid_parameters" and caught.value.decision is None
    assert "amount" in str(caught.value)
    assert ran == []


def test_the_kill_switch_in_the_runs_metadata_denies(client: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    refund = make_refund(client, ran)
    message = refund.invoke(
        call("refund", {"order_id": "A-5", "amount": 5}),
        config={"metadata": {"aegis_metadata": {"kill_switch": True}}},
    )
    assert message.artifact["outcome"] == "DENY" and ran == []


# -- REQUIRE_CONFIRMATION -----------------------------------------------------------------------------


def test_confirmation_without_a_callback_is_refused(client: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    refund = make_refund(client, ran, handle_tool_error=False)
    with pytest.raises(ConfirmationRequired) as caught:
        refund.invoke({"order_id": "A-6", "amount": 250, "currency": "EUR"})
    assert caught.value.code == "confirmation_required"
    assert "confirm" in str(caught.value)
    assert ran == []


def test_confirmation_yes_resubmits_with_the_token(client: AegisClient) -> None:
    asked: list[Decision] = []
    ran: list[dict[str, Any]] = []

    def confirm(decision: Decision) -> bool:
        asked.append(decision)
        return True

    refund = make_refund(client, ran, confirm=confirm)
    message = refund.invoke(call("refund", {"order_id": "A-7", "amount": 250}))

    assert [d.outcome for d in asked] == ["REQUIRE_CONFIRMATION"]
    assert ran == [{"order_id": "A-7", "amount": 250.0, "currency": "EUR"}]
    assert message.artifact["outcome"] == "ALLOW"
    assert message.artifact["parent_decision_id"] == asked[0].decision_id
    assert execution_payload(client, message.artifact["decision_id"])["status"] == "SUCCESS"


def test_confirmation_no_does_not_run(client: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    refund = make_refund(client, ran, confirm=lambda decision: False)
    message = refund.invoke(call("refund", {"order_id": "A-8", "amount": 250}))
    assert ran == []
    assert message.status == "error" and message.artifact["refusal"] == "confirmation_declined"
    assert "did not confirm" in message.content


# -- ESCALATE -----------------------------------------------------------------------------------------


def test_escalation_approved_while_waiting_runs(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    escalated: list[Decision] = []

    def operator(decision: Decision) -> None:  # the notification hook; here the operator acts at once
        escalated.append(decision)
        reviewer.decisions.review(decision.decision_id, approve=True, note="customer verified")

    refund = make_refund(client, ran, on_escalation=operator)
    message = refund.invoke(call("refund", {"order_id": "A-9", "amount": 5000}))

    assert ran == [{"order_id": "A-9", "amount": 5000.0, "currency": "EUR"}]
    assert message.artifact["outcome"] == "ALLOW"
    assert message.artifact["parent_decision_id"] == escalated[0].decision_id
    assert execution_payload(client, message.artifact["decision_id"])["status"] == "SUCCESS"


def test_escalation_denied_while_waiting_does_not_run(client: AegisClient, reviewer: AegisClient) -> None:
    ran: list[dict[str, Any]] = []

    def operator(decision: Decision) -> None:
        reviewer.decisions.review(decision.decision_id, approve=False, note="not this customer")

    refund = make_refund(client, ran, on_escalation=operator, handle_tool_error=False)
    with pytest.raises(ActionDenied) as caught:
        refund.invoke({"order_id": "A-10", "amount": 5000, "currency": "EUR"})
    assert ran == []
    assert caught.value.code == "review_denied"
    assert caught.value.decision is not None and caught.value.decision.review is not None
    assert caught.value.decision.review.status == "denied"
    assert "not this customer" in str(caught.value)


def test_escalation_not_reviewed_in_time_does_not_run(client: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    ticks = itertools.chain([0.0], itertools.repeat(10_000.0))
    client._clock = lambda: next(ticks)  # the wait's deadline has passed by the first poll
    refund = make_refund(client, ran, review_timeout=30, handle_tool_error=False)
    with pytest.raises(ReviewPending) as caught:
        refund.invoke({"order_id": "A-11", "amount": 5000, "currency": "EUR"})
    assert ran == []
    assert caught.value.code == "review_timeout"
    pending = client.decisions.get(caught.value.decision.decision_id)  # type: ignore[union-attr]
    assert pending.review is not None and pending.review.status == "pending"


def test_escalation_raise_mode_refuses_at_once(client: AegisClient) -> None:
    ran: list[dict[str, Any]] = []
    refund = make_refund(client, ran, on_escalate="raise")
    message = refund.invoke(call("refund", {"order_id": "A-12", "amount": 5000}))
    assert ran == []
    assert message.artifact["refusal"] == "review_pending" and message.artifact["outcome"] == "ESCALATE"
    assert "operator" in message.content


def test_interrupt_mode_outside_a_graph_refuses_like_raise(client: AegisClient) -> None:
    refund = make_refund(client, [], on_escalate="interrupt")
    message = refund.invoke(call("refund", {"order_id": "A-13", "amount": 5000}))
    assert message.artifact["refusal"] == "review_pending"


# -- fail closed --------------------------------------------------------------------------------------


def test_unreachable_platform_fails_closed(closed_port: int) -> None:
    ran: list[str] = []
    with AegisClient(endpoint=f"http://127.0.0.1:{closed_port}", api_key="aegis_sk_test", retries=0) as down:

        @governed_tool("email.send", client=down, handle_tool_error=False)
        def send(to: list[str], subject: str) -> str:
            """Send an email."""
            ran.append(subject)
            return "sent"

        with pytest.raises(GovernanceUnavailable) as caught:
            send.invoke({"to": ["ops@example.com"], "subject": "hi"})
    assert ran == []
    assert isinstance(caught.value, PermissionError) and caught.value.code == "unavailable"
    assert "not performed" in str(caught.value)


def test_no_client_anywhere_is_a_configuration_error() -> None:
    from aegis_sdk import ConfigurationError

    ran: list[str] = []

    @governed_tool("email.send")
    def send(to: list[str], subject: str) -> str:
        """Send an email."""
        ran.append(subject)
        return "sent"

    with pytest.raises(ConfigurationError, match="client="):
        send.invoke({"to": ["ops@example.com"], "subject": "hi"})
    assert ran == []


# -- actor and session --------------------------------------------------------------------------------


def test_actor_and_session_come_from_the_runs_config(client: AegisClient) -> None:
    @governed_tool("email.send", client=client)
    def send(to: list[str], subject: str) -> str:
        """Send an email."""
        return "sent"

    send.invoke(
        call("send", {"to": ["ops@example.com"], "subject": "a"}),
        config={
            "metadata": {"aegis_actor": {"id": "mailer-7", "type": "automation"}},
            "configurable": {"thread_id": "th-1"},
        },
    )
    send.invoke(
        call("send", {"to": ["ops@example.com"], "subject": "b"}),
        config={"metadata": {"aegis_actor": "support-bot", "aegis_session_id": "sess-9"}},
    )
    send.invoke(call("send", {"to": ["ops@example.com"], "subject": "c"}))
    seen = [(d.decision_id, d.outcome) for d in client.decisions.list(capability="email.send")]
    assert len(seen) == 3
    trails = {
        (r.actor_id, r.session_id) for decision_id, _ in seen for r in client.audit.trail(decision_id).records[:1]
    }
    assert trails == {("mailer-7", "th-1"), ("support-bot", "sess-9"), ("langchain-agent", None)}


def test_the_tools_actor_is_the_default_and_configure_sets_a_process_default(client: AegisClient) -> None:
    import aegis_langchain

    aegis_langchain.configure(client=client, actor="fleet-default")

    @governed_tool("email.send")
    def send(to: list[str], subject: str) -> str:
        """Send an email."""
        return "sent"

    message = send.invoke(call("send", {"to": ["ops@example.com"], "subject": "x"}))
    assert client.audit.trail(message.artifact["decision_id"]).records[0].actor_id == "fleet-default"


# -- existing tools ---------------------------------------------------------------------------------


class SqlInput(BaseModel):
    query: str = Field(description="One SQL statement")


class CommunityStyleSqlTool(BaseTool):
    """Shaped like a langchain-community tool: a BaseTool subclass with its own _run/_arun."""

    name: str = "sql_db_query"
    description: str = "Execute a SQL query against the database and return the rows."
    args_schema: type[BaseModel] = SqlInput
    executed: list[str] = Field(default_factory=list)

    def _run(self, query: str, run_manager: Any = None) -> str:
        self.executed.append(query)
        return "[(1,)]"

    async def _arun(self, query: str, run_manager: Any = None) -> str:
        self.executed.append("async:" + query)
        return "[(1,)]"


def test_an_existing_base_tool_is_governed_with_a_parameter_mapping(client: AegisClient) -> None:
    sql = CommunityStyleSqlTool(executed=[])
    governed = govern_tool(
        sql,
        "database.query",
        client=client,
        parameters=lambda args: {**args, "database": "production"},
    )
    assert convert_to_openai_tool(governed) == convert_to_openai_tool(sql)

    ok = governed.invoke(call("sql_db_query", {"query": "SELECT 1"}))
    refused = governed.invoke(call("sql_db_query", {"query": "DROP TABLE users"}, "call_2"))

    assert ok.content == "[(1,)]" and ok.artifact["outcome"] == "ALLOW"
    assert refused.artifact["outcome"] == "DENY"
    assert sql.executed == ["SELECT 1"]


def test_a_tool_with_its_own_artifact_keeps_it(client: AegisClient) -> None:
    @tool(response_format="content_and_artifact")
    def lookup(query: str, database: str) -> tuple[str, dict[str, int]]:
        """Look rows up."""
        return "2 rows", {"rows": 2}

    governed = govern_tool(lookup, "database.query", client=client)
    message = governed.invoke(call("lookup", {"query": "SELECT 2", "database": "staging"}))
    assert message.content == "2 rows"
    assert message.artifact["tool_artifact"] == {"rows": 2}
    assert message.artifact["outcome"] == "ALLOW"


def test_govern_tools_maps_capabilities_and_derives_the_rest(client: AegisClient) -> None:
    @tool
    def run_sql(query: str, database: str) -> str:
        """Run SQL."""
        return "ok"

    @tool("email.send")
    def mail(to: list[str], subject: str) -> str:
        """Mail."""
        return "sent"

    governed = govern_tools([run_sql, mail], {"run_sql": "database.query"}, client=client)
    assert [(t.name, t.capability) for t in governed] == [("run_sql", "database.query"), ("email.send", "email.send")]
    assert governed[1].invoke({"to": ["ops@example.com"], "subject": "s"}) == "sent"
    assert govern_tools(governed) == governed  # already governed tools are kept, never governed twice


def test_derived_capability_names() -> None:
    assert derive_capability("sql_db_query") == "sql_db_query"
    assert derive_capability("search web") == "search_web"
    assert derive_capability("payments.refund") == "payments.refund"
    assert derive_capability("-x") == "_-x"


def test_unknown_capability_fails_closed(client: AegisClient) -> None:
    ran: list[str] = []

    @governed_tool("payments.refnd", client=client, handle_tool_error=False)
    def refund(order_id: str) -> str:
        """Refund."""
        ran.append(order_id)
        return "ok"

    with pytest.raises(GovernanceRefusal) as caught:
        refund.invoke({"order_id": "A-1"})
    assert caught.value.code == "unavailable" and ran == []


async def test_an_existing_base_tool_runs_its_own_async_path(aserver: Any) -> None:
    sql = CommunityStyleSqlTool(executed=[])
    governed = govern_tool(
        sql,
        "database.query",
        async_client=aserver.async_client(),
        parameters=lambda args: {**args, "database": "staging"},
    )
    message = await governed.ainvoke(call("sql_db_query", {"query": "SELECT 2"}))
    assert message.content == "[(1,)]" and message.artifact["execution"] == "SUCCESS"
    assert sql.executed == ["async:SELECT 2"]


# -- a request the platform rejects as invalid, a confirmation it no longer takes ----------------------


def test_a_proposal_the_platform_rejects_as_invalid_is_refused_as_invalid_not_unavailable(client: AegisClient) -> None:
    ran: list[Any] = []

    @governed_tool("payments.refund", client=client, actor="billing-bot")
    def refund_with_notes(order_id: str, amount: float, notes: dict[str, Any]) -> str:
        """Refund with structured notes."""
        ran.append(order_id)
        return "refunded"

    deep: dict[str, Any] = {}
    for _ in range(40):  # deeper than the platform's 32 levels: 422 validation_error too_deep
        deep = {"n": deep}
    message = refund_with_notes.invoke(call("refund_with_notes", {"order_id": "A-9", "amount": 5, "notes": deep}))
    assert message.status == "error" and ran == []
    assert message.artifact["refusal"] == "invalid_parameters"
    assert "could not be checked" not in message.content  # not worded as an outage the model should wait out


def test_a_confirmation_that_expired_while_the_user_decided_is_refused_and_says_to_ask_again() -> None:
    from datetime import datetime, timedelta, timezone

    from lc_support import POLICIES

    from aegis_server.inprocess import InProcessServer

    now = [datetime.now(timezone.utc)]
    with InProcessServer(policy_paths=[POLICIES], clock=lambda: now[0]) as server:
        ran: list[dict[str, Any]] = []

        def slow_user(decision: Decision) -> bool:
            now[0] += timedelta(hours=1)  # the user answered after the token's time to live
            return True

        refund = make_refund(server.client(), ran, confirm=slow_user)
        message = refund.invoke(call("refund", {"order_id": "A-10", "amount": 250, "currency": "USD"}))
    assert message.status == "error" and ran == []
    assert message.artifact["refusal"] == "confirmation_expired"
    assert "Call the tool again" in message.content


def test_a_key_without_governance_read_is_a_set_up_problem_not_an_outage(server: Any) -> None:
    propose_only = server.client(server.create_key("propose-only", ["governance:propose"]))
    ran: list[dict[str, Any]] = []
    refund = make_refund(propose_only, ran, review_timeout=5)  # waiting on the review reads the decision
    message = refund.invoke(call("refund", {"order_id": "A-11", "amount": 5000, "currency": "EUR"}))
    assert message.status == "error" and ran == []
    assert message.artifact["refusal"] == "misconfigured"
    assert "governance:read" in message.content and "may work later" not in message.content
