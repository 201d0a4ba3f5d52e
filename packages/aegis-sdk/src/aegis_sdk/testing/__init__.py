"""A fake AEGIS platform for your own unit tests.

`FakePlatform` speaks the v1 HTTP contract (routes, bodies, status codes, the error envelope) from
memory, through an httpx transport, so the real `AegisClient` / `AsyncAegisClient` run against it
unchanged. Script the outcome per capability, play the user and the reviewer in confirmation and
review round trips, inject failures, and assert on what your code proposed::

    from aegis_sdk.testing import FakePlatform

    fake = FakePlatform()
    fake.script("payments.refund", "REQUIRE_CONFIRMATION")
    with fake.client() as aegis:
        decision = aegis.propose(
            actor={"id": "agent-1", "type": "ai-agent"},
            action={"capability": "payments.refund", "parameters": {"amount": 40}},
        )
    assert decision.outcome == "REQUIRE_CONFIRMATION"
    fake.assert_proposed("payments.refund", amount=40)

It imports only httpx, pydantic and aegis_sdk, and runs on Python 3.10+. See docs/testing.md.
"""

from aegis_sdk.testing._platform import DEFAULT_ENDPOINT, FAKE_API_KEY, FakePlatform
from aegis_sdk.testing._types import AutoReview, OutcomeSpec, RecordedRequest, Responder, ScriptedOutcome

__all__ = [
    "DEFAULT_ENDPOINT",
    "FAKE_API_KEY",
    "AutoReview",
    "FakePlatform",
    "OutcomeSpec",
    "RecordedRequest",
    "Responder",
    "ScriptedOutcome",
]
