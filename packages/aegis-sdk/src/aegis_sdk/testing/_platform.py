"""`FakePlatform`: the public face of the fake — scripting, review actions, inspection, clients."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from aegis_sdk._wire.envelope import ApiError
from aegis_sdk.models import (
    AuditRecord,
    Capability,
    Decision,
    ExecutionReport,
    Outcome,
    Policy,
    Proposal,
    RiskLevel,
)
from aegis_sdk.testing import _decisions, _registry, _scripts
from aegis_sdk.testing._failures import Failure, add_failure
from aegis_sdk.testing._state import FakeState
from aegis_sdk.testing._transport import handle
from aegis_sdk.testing._types import AutoReview, OutcomeSpec, RecordedRequest, Responder, ScriptedOutcome

if TYPE_CHECKING:
    from aegis_sdk import AegisClient, AsyncAegisClient

DEFAULT_ENDPOINT = "http://aegis.test"
"""The endpoint `FakePlatform.client()` and friends use. The fake answers on any host."""

FAKE_API_KEY = "aegis_sk_fake"
"""The API key the fake's ready-made clients send (any key is accepted unless `api_key=` was given)."""

__all__ = ["DEFAULT_ENDPOINT", "FAKE_API_KEY", "FakePlatform"]

_SHOWN = 20


def _python_error(error: ApiError) -> Exception:
    if error.status == 404:
        return LookupError(error.message)
    return ValueError(error.message)


class FakePlatform:
    """An in-memory AEGIS platform that speaks the v1 HTTP contract, for your own unit tests.

    Plug it into the SDK through its httpx transport — `fake.client()` / `fake.async_client()` do it for
    you, or pass `http_client=httpx.Client(transport=fake.transport)` yourself. Outcomes are scripted per
    capability (`script`, `script_sequence`, `default_outcome`); confirmation and review round trips work
    as on the real server; every proposal and request is recorded for assertions. No policy engine runs:
    the scripts decide. Thread-safe; one instance serves sync and async clients at the same time.

    Args:
        default_outcome: the outcome of a proposal that no script matches.
        strict_capabilities: answer proposals for unregistered capabilities with the platform's 404
            `unknown_capability` error (with near-name suggestions) instead of deciding them.
        capabilities: capabilities registered from the start (`Capability` models or bare names).
            Parameters of a registered capability are checked against its `parameter_schema`.
        policies: policies stored from the start (served by the policy routes; they do not decide).
        api_key: when given, only this key is accepted (others get 401 `invalid_api_key`).
        key_name: the name of the API key; the reviewer recorded by the review route.
        scopes: the scopes of the API key (default: all); a route needing another one answers 403.
        confirmation_ttl_seconds: lifetime of confirmation tokens.
        review_timeout_seconds: review deadline of an ESCALATE unless its script says otherwise.
        clock: where "now" comes from (default: the system clock); `advance()` moves it forward.
    """

    def __init__(
        self,
        *,
        default_outcome: Outcome = "ALLOW",
        strict_capabilities: bool = False,
        capabilities: Iterable[Capability | str] = (),
        policies: Iterable[Policy] = (),
        api_key: str | None = None,
        key_name: str = "fake-key",
        scopes: Iterable[str] | None = None,
        confirmation_ttl_seconds: int = 300,
        review_timeout_seconds: int = 3600,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if confirmation_ttl_seconds <= 0 or review_timeout_seconds <= 0:
            raise ValueError("confirmation_ttl_seconds and review_timeout_seconds must be positive")
        self._state = FakeState(
            default_outcome=default_outcome,
            strict_capabilities=strict_capabilities,
            capabilities=[c if isinstance(c, Capability) else Capability(name=c) for c in capabilities],
            policies=list(policies),
            clock=clock,
            confirmation_ttl_seconds=confirmation_ttl_seconds,
            review_timeout_seconds=review_timeout_seconds,
            api_key=api_key,
            key_name=key_name,
            scopes=scopes,
        )
        self._client_key = api_key or FAKE_API_KEY
        self._transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        return handle(self._state, request)

    # -- wiring -------------------------------------------------------------------------------------------

    @property
    def transport(self) -> httpx.MockTransport:
        """The httpx transport serving the fake; works for `httpx.Client` and `httpx.AsyncClient`."""
        return self._transport

    def http_client(self, **kwargs: Any) -> httpx.Client:
        """An `httpx.Client` on the fake, with `base_url` DEFAULT_ENDPOINT and the fake's bearer key."""
        kwargs.setdefault("base_url", DEFAULT_ENDPOINT)
        kwargs.setdefault("headers", {"Authorization": f"Bearer {self._client_key}"})
        return httpx.Client(transport=self._transport, **kwargs)

    def async_http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """The `httpx.AsyncClient` twin of `http_client()`."""
        kwargs.setdefault("base_url", DEFAULT_ENDPOINT)
        kwargs.setdefault("headers", {"Authorization": f"Bearer {self._client_key}"})
        return httpx.AsyncClient(transport=self._transport, **kwargs)

    def _client_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "http_client" in kwargs:
            raise TypeError("the fake supplies http_client itself; pass other AegisClient options only")
        options: dict[str, Any] = {"endpoint": DEFAULT_ENDPOINT, "api_key": self._client_key, "retry_delay": 0.0}
        options.update(kwargs)
        return options

    def client(self, **kwargs: Any) -> AegisClient:
        """An `AegisClient` talking to this fake. Keyword arguments go to `AegisClient` (`retries=`,
        `timeout=`…); `retry_delay` defaults to 0 so retry tests do not sleep."""
        from aegis_sdk import AegisClient

        return AegisClient(http_client=httpx.Client(transport=self._transport), **self._client_options(kwargs))

    def async_client(self, **kwargs: Any) -> AsyncAegisClient:
        """An `AsyncAegisClient` talking to this fake; options as for `client()`."""
        from aegis_sdk import AsyncAegisClient

        return AsyncAegisClient(
            http_client=httpx.AsyncClient(transport=self._transport), **self._client_options(kwargs)
        )

    def add_key(self, name: str, *, scopes: Iterable[str] | None = None) -> str:
        """Accept one more API key, named `name` (the reviewer the review route records) with `scopes`
        (default all); returns the key. Pass it to `client(api_key=...)` to act as that key, e.g. an
        agent key that may not review and a reviewer key that may. `reset()` forgets it."""
        return self._state.add_key(name, scopes)

    # -- scripting ----------------------------------------------------------------------------------------

    def script(
        self,
        capability: str,
        outcome: OutcomeSpec | Responder,
        *,
        reason: str | None = None,
        risk_score: float | None = None,
        constraints: Mapping[str, Any] | None = None,
        policy_ids: Sequence[str] | None = None,
        review_timeout_seconds: int | None = None,
        auto_review: AutoReview | None = None,
    ) -> None:
        """Answer proposals whose capability matches `capability` (a glob such as `payments.*`).

        `outcome` is an outcome name, a `ScriptedOutcome`, or a function of the `Proposal` returning
        either. When several scripts match, the most specific pattern wins (an exact name beats a glob;
        among globs, more literal characters win); among equally specific ones, the last registered.
        """
        defaults: dict[str, Any] = {
            "reason": reason,
            "risk_score": risk_score,
            "constraints": constraints,
            "policy_ids": policy_ids,
            "review_timeout_seconds": review_timeout_seconds,
            "auto_review": auto_review,
        }
        defaults = {key: value for key, value in defaults.items() if value is not None}
        if isinstance(outcome, ScriptedOutcome) and defaults:
            raise TypeError("give either a ScriptedOutcome or keyword options, not both")
        if isinstance(outcome, str):
            ScriptedOutcome(outcome, **defaults)  # check the combination now, not at the first proposal
        elif not isinstance(outcome, ScriptedOutcome) and not callable(outcome):
            raise TypeError("outcome must be an outcome name, a ScriptedOutcome, or a function of the Proposal")
        _scripts.add_rule(self._state, capability, outcome, defaults)

    def script_sequence(self, capability: str, outcomes: Iterable[OutcomeSpec]) -> None:
        """Answer the next matching proposals with `outcomes`, one each, in order. Once they are used up,
        this script stops matching and the next matching script (or `default_outcome`) answers."""
        items = [o if isinstance(o, ScriptedOutcome) else ScriptedOutcome(o) for o in outcomes]
        if not items:
            raise ValueError("script_sequence needs at least one outcome")
        _scripts.add_sequence(self._state, capability, items)

    def register_capability(
        self,
        name: str,
        *,
        parameter_schema: Mapping[str, Any] | None = None,
        description: str = "",
        risk_level: RiskLevel = "medium",
    ) -> Capability:
        """Register a capability: its parameters are then checked against `parameter_schema` (a JSON
        Schema subset) and, with `strict_capabilities=True`, it is one of the names that may be proposed."""
        capability = Capability(
            name=name,
            description=description,
            risk_level=risk_level,
            parameter_schema=dict(parameter_schema) if parameter_schema is not None else {"type": "object"},
        )
        _registry.put_capability(self._state, capability)
        return capability

    def add_policy(self, policy: Policy | Mapping[str, Any]) -> Policy:
        """Store (or replace) a policy, as `PUT /api/v1/policies/{name}` would. Policies do not decide in
        the fake; they are served back by the policy routes."""
        model = policy if isinstance(policy, Policy) else Policy.model_validate(policy)
        try:
            _registry.put_policy(self._state, model, create=False)
        except ApiError as error:
            raise _python_error(error) from None
        return model

    # -- failure injection --------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        *,
        times: int = 1,
        retry_after: float | None = None,
        code: str | None = None,
        message: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next `times` requests (to paths matching the glob `path`, default all) with an error
        envelope of `status`. Type and code follow the platform's table (429 `rate_limited`, 503
        `unavailable`, 500 `internal_error`…) unless `code` is given; 429 and 503 carry `Retry-After`
        (`retry_after`, default 0 so clients do not sleep). The failed requests change no state."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        add_failure(self._state, Failure("status", _times(times), path, status, retry_after, code, message))

    def fail_with_connect_error(self, times: int = 1, *, path: str | None = None) -> None:
        """Raise `httpx.ConnectError` for the next `times` requests, as if the platform were down."""
        add_failure(self._state, Failure("connect", _times(times), path))

    def fail_with_timeout(self, times: int = 1, *, path: str | None = None) -> None:
        """Raise `httpx.ReadTimeout` for the next `times` requests, as if the platform hung."""
        add_failure(self._state, Failure("timeout", _times(times), path))

    # -- reviews and time ---------------------------------------------------------------------------------

    def approve(
        self, decision_id: str, *, reviewer: str = "reviewer@example.test", note: str | None = None
    ) -> Decision:
        """Approve a pending ESCALATE: its review becomes approved and it gets a confirmation token."""
        try:
            return _decisions.resolve_review(self._state, decision_id, approve=True, reviewer=reviewer, note=note)
        except ApiError as error:
            raise _python_error(error) from None

    def deny(self, decision_id: str, *, reviewer: str = "reviewer@example.test", note: str | None = None) -> Decision:
        """Deny a pending ESCALATE: its review becomes denied (final)."""
        try:
            return _decisions.resolve_review(self._state, decision_id, approve=False, reviewer=reviewer, note=note)
        except ApiError as error:
            raise _python_error(error) from None

    def expire(self, decision_id: str) -> Decision:
        """Let a pending ESCALATE pass its deadline now: its review becomes expired (a final DENY)."""
        try:
            return _decisions.expire(self._state, decision_id)
        except ApiError as error:
            raise _python_error(error) from None

    def advance(self, seconds: float | timedelta) -> None:
        """Move the fake's clock forward (tokens and review deadlines expire as time passes)."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta():
            raise ValueError("the clock only moves forward")
        with self._state.lock:
            self._state.offset += step
            _decisions.expire_due(self._state)

    @property
    def now(self) -> datetime:
        """The fake's current time (UTC)."""
        return self._state.now()

    # -- inspection ---------------------------------------------------------------------------------------

    @property
    def proposals(self) -> list[Proposal]:
        """Every well-formed proposal received, in order — including the ones answered with a governance
        error (unknown capability, bad parameters, rejected token) and confirmation resubmissions.
        Not included: idempotent repeats (same Idempotency-Key, answered with the stored decision) and
        requests failed by `fail_next` / `fail_with_*`. So a propose() that retried counts once."""
        with self._state.lock:
            return list(self._state.proposals)

    @property
    def decisions(self) -> dict[str, Decision]:
        """Every decision made, by id, oldest first, in its current state (reviews applied)."""
        with self._state.lock:
            _decisions.expire_due(self._state)
            return {decision_id: entry.decision for decision_id, entry in self._state.entries.items()}

    @property
    def last_decision(self) -> Decision:
        """The most recent decision; raises LookupError when none was made."""
        with self._state.lock:
            if not self._state.entries:
                raise LookupError("the fake has made no decision yet")
            return list(self._state.entries.values())[-1].decision

    @property
    def pending_reviews(self) -> list[Decision]:
        """ESCALATE decisions still waiting for a reviewer, oldest first."""
        return [d for d in self.decisions.values() if d.review is not None and d.review.status == "pending"]

    @property
    def executions(self) -> dict[str, ExecutionReport]:
        """Execution reports received, by decision id."""
        with self._state.lock:
            return dict(self._state.executions)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request the transport saw, in order (injected failures included)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def audit_log(self) -> list[AuditRecord]:
        """The fake's hash-chained audit records, oldest first."""
        with self._state.lock:
            return list(self._state.audit)

    @property
    def capabilities(self) -> dict[str, Capability]:
        """Registered capabilities, by name."""
        with self._state.lock:
            return dict(self._state.capabilities)

    @property
    def policies(self) -> dict[str, Policy]:
        """Stored policies, by name."""
        with self._state.lock:
            return dict(self._state.policies)

    def reset(self) -> None:
        """Forget everything since construction: scripts, injected failures, proposals, decisions, tokens,
        reviews, executions, requests, audit, the clock offset, and capabilities or policies added later.
        What the constructor was given stays."""
        self._state.reset()

    def assert_proposed(self, capability: str, /, **parameters: Any) -> Proposal:
        """Assert that a proposal of `capability` (a glob) was received whose parameters include
        `parameters` (equal values); return the first such proposal."""
        for proposal in self.proposals:
            if _matches(proposal, capability, parameters):
                return proposal
        raise AssertionError(self._explain(capability, parameters, "No proposal matched"))

    def assert_not_proposed(self, capability: str, /, **parameters: Any) -> None:
        """Assert that no proposal of `capability` (a glob) with these parameters was received."""
        found = [p for p in self.proposals if _matches(p, capability, parameters)]
        if found:
            wanted = _describe_wanted(capability, parameters)
            raise AssertionError(f"Expected no proposal of {wanted}, but {len(found)} were received.")

    def _explain(self, capability: str, parameters: Mapping[str, Any], headline: str) -> str:
        received = self.proposals
        lines = [f"{headline} {_describe_wanted(capability, parameters)}."]
        if not received:
            lines.append("The fake received no proposals at all (is the code under test using this fake's client?).")
            return "\n".join(lines)
        lines.append(f"Received {len(received)} proposal(s):")
        for index, proposal in enumerate(received[:_SHOWN], start=1):
            action = proposal.action
            line = f"  {index}. {action.capability} by {proposal.actor.id}: {action.parameters!r}"
            if fnmatch.fnmatchcase(action.capability, capability):
                line += "  <- " + _difference(action.parameters, parameters)
            lines.append(line)
        if len(received) > _SHOWN:
            lines.append(f"  … and {len(received) - _SHOWN} more")
        return "\n".join(lines)


def _times(times: int) -> int:
    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")
    return times


def _matches(proposal: Proposal, capability: str, parameters: Mapping[str, Any]) -> bool:
    if not fnmatch.fnmatchcase(proposal.action.capability, capability):
        return False
    actual = proposal.action.parameters
    return all(name in actual and actual[name] == value for name, value in parameters.items())


def _describe_wanted(capability: str, parameters: Mapping[str, Any]) -> str:
    if not parameters:
        return repr(capability)
    shown = ", ".join(f"{name}={value!r}" for name, value in parameters.items())
    return f"{capability!r} with {shown}"


def _difference(actual: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    problems = []
    for name, value in wanted.items():
        if name not in actual:
            problems.append(f"{name} missing")
        elif actual[name] != value:
            problems.append(f"{name}={actual[name]!r}, expected {value!r}")
    return "; ".join(problems)
