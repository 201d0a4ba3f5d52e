"""wait_for_review(): long-polls the decision until a reviewer approves (then resubmits with the approval's
token and returns the ALLOW), denies or lets it expire (returns the final DENY), or the timeout passes
(ReviewTimeoutError carrying the decision). The clock is fake: nothing waits for real."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sdk_support import FakePlatform, decision_body, reply, resolve

from aegis_sdk import ConfirmationError, InvalidRequestError, MalformedResponseError, ReviewError, ReviewTimeoutError

ACTOR = {"id": "agent-001", "type": "ai-agent"}
ACTION = {"capability": "payments.refund", "parameters": {"amount": 900}}
PENDING = decision_body(
    "ESCALATE", decision_id="dec_esc", review={"status": "pending"}, expires_at="2026-01-01T01:00:00Z"
)
DECISION_PATH = "/api/v1/governance/decisions/dec_esc"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Reviewer:
    """The platform side of the long-poll: each poll 'waits' its full `wait` on the fake clock, and the
    review resolves after `polls` polls."""

    def __init__(self, clock: Clock, polls: int, final: dict[str, Any], *, early: bool = False) -> None:
        self.clock, self.polls, self.final, self.early = clock, polls, final, early
        self.waits: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        wait = int(request.url.params["wait"])
        self.waits.append(wait)
        if len(self.waits) >= self.polls:
            return reply(200, self.final)
        if not self.early:
            self.clock.now += wait
        return reply(200, PENDING)


def setup(make_client: Any, sleeps: list[float], reviewer_polls: int, final: dict[str, Any], **kw: Any) -> Any:
    clock = Clock()
    reviewer = Reviewer(clock, reviewer_polls, final, early=kw.pop("early", False))
    allowed = decision_body("ALLOW", decision_id="dec_allow", parent_decision_id="dec_esc")
    platform = FakePlatform(reply(200, PENDING))
    platform.route("GET", DECISION_PATH, reviewer)
    client = make_client(platform, **kw)
    client._clock = clock
    original_sleep = client._sleep

    def advance(seconds: float) -> Any:
        clock.now += seconds
        return original_sleep(seconds)

    client._sleep = advance
    return client, platform, reviewer, clock, allowed


async def test_approved_review_returns_the_allow_of_the_resubmission(make_client: Any, sleeps: list[float]) -> None:
    approved = {**PENDING, "review": {"status": "approved", "reviewer": "ops"}, "confirmation_token": "ctok_rev"}
    client, platform, reviewer, _, allowed = setup(make_client, sleeps, 3, approved)
    decision = await resolve(client.propose(ACTOR, ACTION, {"session_id": "s1"}))
    assert decision.outcome == "ESCALATE"
    platform.queue = [reply(200, allowed)]
    final = await resolve(client.wait_for_review(decision, timeout=300))
    assert (final.outcome, final.parent_decision_id) == ("ALLOW", "dec_esc")
    assert reviewer.waits == [60, 60, 60]
    proposals = [b for b, r in zip(platform.bodies(), platform.requests, strict=True) if r.method == "POST"]
    assert proposals[1] == {**proposals[0], "confirmation_token": "ctok_rev"}
    assert sleeps == []


@pytest.mark.parametrize("status", ["denied", "expired"])
async def test_denied_or_expired_review_returns_the_final_deny(
    make_client: Any, sleeps: list[float], status: str
) -> None:
    final_deny = {**PENDING, "outcome": "DENY", "reason": f"review {status}", "review": {"status": status}}
    client, platform, _, _, _ = setup(make_client, sleeps, 2, final_deny)
    decision = await resolve(client.propose(ACTOR, ACTION))
    final = await resolve(client.wait_for_review(decision, timeout=300))
    assert final.outcome == "DENY"
    assert final.review is not None and final.review.status == status
    assert [r.method for r in platform.requests] == ["POST", "GET", "GET"]


async def test_timeout_raises_with_the_last_decision(make_client: Any, sleeps: list[float]) -> None:
    never = {**PENDING}
    client, _, reviewer, clock, _ = setup(make_client, sleeps, 10_000, never)
    decision = await resolve(client.propose(ACTOR, ACTION))
    with pytest.raises(ReviewTimeoutError) as caught:
        await resolve(client.wait_for_review(decision, timeout=150))
    assert reviewer.waits == [60, 60, 30]
    assert clock.now == 1150.0
    assert caught.value.decision.decision_id == "dec_esc"
    assert caught.value.decision.outcome == "ESCALATE"
    assert "2026-01-01T01:00:00Z" in str(caught.value)
    assert caught.value.code == "review_timeout"


async def test_an_early_answer_pauses_before_polling_again(make_client: Any, sleeps: list[float]) -> None:
    approved = {**PENDING, "review": {"status": "approved"}, "confirmation_token": "ctok_rev"}
    client, platform, reviewer, _, allowed = setup(make_client, sleeps, 4, approved, early=True)
    decision = await resolve(client.propose(ACTOR, ACTION))
    platform.queue = [reply(200, allowed)]
    final = await resolve(client.wait_for_review(decision, timeout=10))
    assert final.outcome == "ALLOW"
    assert sleeps == [1.0, 1.0, 1.0]
    assert reviewer.waits == [10, 9, 8, 7]


async def test_an_already_approved_decision_is_resubmitted_at_once(make_client: Any, sleeps: list[float]) -> None:
    approved = {**PENDING, "review": {"status": "approved"}, "confirmation_token": "ctok_rev"}
    client, platform, _, _, allowed = setup(make_client, sleeps, 1, approved)
    decision = await resolve(client.propose(ACTOR, ACTION))
    seen = await resolve(client.decisions.get("dec_esc", wait=5))
    platform.queue = [reply(200, allowed)]
    final = await resolve(client.wait_for_review(seen))
    assert final.outcome == "ALLOW"
    assert decision.decision_id == seen.decision_id


async def test_approved_without_a_token_is_malformed(make_client: Any, sleeps: list[float]) -> None:
    approved = {**PENDING, "review": {"status": "approved"}, "confirmation_token": None}
    client, _, _, _, _ = setup(make_client, sleeps, 1, approved)
    decision = await resolve(client.propose(ACTOR, ACTION))
    with pytest.raises(MalformedResponseError, match="no token"):
        await resolve(client.wait_for_review(decision, timeout=60))


@pytest.mark.parametrize("outcome", ["ALLOW", "DENY", "REQUIRE_CONFIRMATION"])
async def test_only_escalations_can_be_waited_for(make_client: Any, outcome: str) -> None:
    platform = FakePlatform(reply(200, decision_body(outcome, confirmation_token="t")))
    client = make_client(platform)
    decision = await resolve(client.propose(ACTOR, ACTION))
    with pytest.raises(ReviewError, match="not ESCALATE") as caught:
        await resolve(client.wait_for_review(decision))
    assert caught.value.code == "not_escalated"
    assert len(platform.requests) == 1


async def test_waiting_for_a_foreign_escalation_fails_before_waiting(make_client: Any) -> None:
    from aegis_sdk import Decision

    platform = FakePlatform(reply(200, PENDING))
    client = make_client(platform)
    with pytest.raises(ConfirmationError, match="does not remember"):
        await resolve(client.wait_for_review(Decision(**PENDING), timeout=60))
    assert platform.requests == []


async def test_wait_for_review_rejects_a_bad_timeout(make_client: Any) -> None:
    client = make_client(FakePlatform(reply(200, PENDING)))
    decision = await resolve(client.propose(ACTOR, ACTION))
    with pytest.raises(InvalidRequestError, match="timeout"):
        await resolve(client.wait_for_review(decision, timeout=-5))


async def test_decisions_get_with_wait(make_client: Any) -> None:
    platform = FakePlatform(reply(200, PENDING))
    client = make_client(platform, timeout=10.0)
    await resolve(client.decisions.get("dec_esc", wait=30))
    request = platform.last
    assert request.url.params["wait"] == "30"
    assert request.extensions["timeout"]["read"] == 40.0  # the long-poll is allowed on top of the timeout


@pytest.mark.parametrize("wait", [-1, 61, 1.5, True])
async def test_decisions_get_rejects_a_bad_wait(make_client: Any, wait: Any) -> None:
    platform = FakePlatform(reply(200, PENDING))
    client = make_client(platform)
    with pytest.raises(InvalidRequestError, match="wait"):
        await resolve(client.decisions.get("dec_esc", wait=wait))
    assert platform.requests == []
