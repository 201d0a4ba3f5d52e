"""`decisions.report_execution_later()`: execution reports queued, sent batched in the background, retried,
flushed at close and at interpreter exit, counted in `client.report_stats` (against the fake platform; the
real server's batch endpoint is exercised in tests/e2e/test_background_reports.py)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from aegis_sdk import AegisClient, AsyncAegisClient, InvalidRequestError
from aegis_sdk.testing import FakePlatform

ACTOR = {"id": "agent-1", "type": "ai-agent"}
ACTION = {"capability": "database.query", "parameters": {"query": "SELECT 1"}}


def allowed(client: AegisClient) -> str:
    return client.propose(ACTOR, ACTION).decision_id


def test_a_report_is_queued_and_delivered_after_the_call_returned() -> None:
    fake = FakePlatform()
    with fake.client() as client:
        decision_id = allowed(client)
        before = len(fake.requests)
        client.decisions.report_execution_later(decision_id, status="SUCCESS", duration_ms=3.0)
        assert client.flush_reports()
        assert fake.executions[decision_id].status == "SUCCESS"
        assert [r.path for r in fake.requests[before:]] == ["/api/v1/governance/executions/batch"]
        stats = client.report_stats
        assert (stats.queued, stats.sent, stats.failed, stats.retried, stats.pending) == (1, 1, 0, 0, 0)


def test_close_flushes_the_queue() -> None:
    fake = FakePlatform()
    client = fake.client()
    ids = [allowed(client) for _ in range(5)]
    for decision_id in ids:
        client.decisions.report_execution_later(decision_id, status="FAILED", error={"code": "Boom"})
    client.close()
    assert sorted(fake.executions) == sorted(ids)
    assert client.report_stats.sent == 5 and client.report_stats.pending == 0


def test_a_platform_down_then_up_gets_each_report_once() -> None:
    fake = FakePlatform()
    with fake.client(retries=0, retry_delay=0.001) as client:
        decision_id = allowed(client)
        fake.fail_with_connect_error(times=2, path="*/executions/batch")
        fake.fail_next(503, times=1, path="*/executions/batch", retry_after=0)
        client.decisions.report_execution_later(decision_id, status="SUCCESS")
        assert client.flush_reports()
        stats = client.report_stats
    assert list(fake.executions) == [decision_id]
    assert (stats.sent, stats.retried, stats.failed) == (1, 3, 0)
    assert [r.event_type for r in fake.audit_log].count("execution") == 1


def test_a_full_queue_sends_on_the_callers_path() -> None:
    fake = FakePlatform()
    with fake.client() as client:
        client._reporter.queue.capacity = 0  # full
        decision_id = allowed(client)
        client.decisions.report_execution_later(decision_id, status="SUCCESS")
        assert fake.executions[decision_id].status == "SUCCESS"  # sent before the call returned
        assert fake.requests[-1].path.endswith(f"/decisions/{decision_id}/execution")
        assert client.report_stats.synchronous == 1 and client.report_stats.queued == 0


def test_each_report_gets_its_own_answer(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePlatform()
    fake.script("files.delete", "DENY")
    with fake.client() as client, caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        good = allowed(client)
        denied = client.propose(ACTOR, {"capability": "files.delete", "parameters": {}}).decision_id
        client.decisions.report_execution_later(good, status="SUCCESS")
        client.decisions.report_execution_later(good, status="SUCCESS")  # the same again: a duplicate
        client.decisions.report_execution_later(denied, status="SUCCESS")
        client.decisions.report_execution_later("dec_unknown", status="SUCCESS")
        assert client.flush_reports()
        stats = client.report_stats
    assert list(fake.executions) == [good]
    assert (stats.sent, stats.failed) == (2, 2)
    assert "decision dec_unknown (code=not_found)" in caplog.text
    assert f"decision {denied} (code=not_allowed)" in caplog.text


def test_a_refused_batch_is_final_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePlatform()
    with fake.client() as client, caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        decision_id = allowed(client)
        fake.fail_next(403, times=1, path="*/executions/batch")
        client.decisions.report_execution_later(decision_id, status="SUCCESS")
        assert client.flush_reports()
        assert (client.report_stats.failed, client.report_stats.retried) == (1, 0)
    assert fake.executions == {}
    assert "refused a batch of 1 execution reports" in caplog.text and decision_id in caplog.text


def test_a_platform_without_the_batch_route_gets_single_reports() -> None:
    fake = FakePlatform()
    with fake.client() as client:
        ids = [allowed(client) for _ in range(2)]
        fake.fail_next(404, times=1, path="*/executions/batch", code="not_found")
        for decision_id in ids:
            client.decisions.report_execution_later(decision_id, status="SUCCESS")
        assert client.flush_reports()
        assert client.report_stats.sent == 2
    assert sorted(fake.executions) == sorted(ids)
    assert fake.requests[-1].path.endswith("/execution")


def test_bad_input_raises_on_the_callers_path() -> None:
    with FakePlatform().client() as client:
        with pytest.raises(InvalidRequestError):
            client.decisions.report_execution_later("dec_1", status="DONE")  # type: ignore[arg-type]
        with pytest.raises(InvalidRequestError):
            client.decisions.report_execution_later("", status="SUCCESS")
        with pytest.raises(InvalidRequestError):
            client.decisions.report_execution_later("dec_1", status="SUCCESS", result=object())
        assert client.report_stats.queued == 0


def test_the_async_client_reports_from_several_event_loops() -> None:
    fake = FakePlatform()
    client: AsyncAegisClient = fake.async_client()

    async def one() -> str:
        decision = await client.propose(ACTOR, ACTION)
        await client.decisions.report_execution_later(decision.decision_id, status="SUCCESS")
        return decision.decision_id

    ids = [asyncio.run(one()) for _ in range(3)]  # each loop ends right after queuing its report

    async def close() -> None:
        await client.aclose()

    asyncio.run(close())
    assert sorted(fake.executions) == sorted(ids)
    assert client.report_stats.sent == 3 and client.report_stats.pending == 0


def test_interpreter_exit_flushes_the_queue() -> None:
    script = textwrap.dedent(
        """
        import atexit
        from aegis_sdk.testing import FakePlatform

        fake = FakePlatform()
        # registered before the client's hook, so it runs after it (atexit runs last-in, first-out)
        atexit.register(lambda: print("executions", sorted(fake.executions), flush=True))
        client = fake.client()
        decision = client.propose({"id": "a", "type": "ai-agent"}, {"capability": "x.y", "parameters": {}})
        client.decisions.report_execution_later(decision.decision_id, status="SUCCESS")
        print("decision", decision.decision_id, flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["executions"] == repr([lines["decision"]])


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aegis_sdk" and r.levelno == logging.ERROR]


def test_a_report_already_recorded_before_its_first_send_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Another run (a re-run of the same step in another process) reported the decision first: the same status
    is answered `duplicate`, another one `already_reported`; either way the action may have run twice."""
    fake = FakePlatform()
    with fake.client() as other, fake.client() as client, caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        same, different = allowed(client), allowed(client)
        other.decisions.report_execution(same, status="SUCCESS")
        other.decisions.report_execution(different, status="SUCCESS")
        client.decisions.report_execution_later(same, status="SUCCESS")
        client.decisions.report_execution_later(different, status="FAILED", error={"code": "Boom"})
        assert client.flush_reports()
        stats = client.report_stats
    assert (stats.sent, stats.failed) == (1, 1)  # a duplicate counts as sent; another status is refused
    errors = error_lines(caplog)
    assert len(errors) == 2 and "performed twice" in errors[0]
    assert any(same in line for line in errors) and any(different in line for line in errors)


def test_a_duplicate_answering_a_resend_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A batch whose answer was lost is sent again: its `duplicate` answer is this client's own report."""
    fake = FakePlatform()
    with fake.client(retries=0, retry_delay=0.001) as client, caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        decision_id = allowed(client)
        client.decisions.report_execution_later(decision_id, status="SUCCESS")
        report = client._reporter.queue.items[0]
        report.sends = 1  # as if a first send had reached the platform and its answer was lost
        client.decisions.report_execution(decision_id, status="SUCCESS")  # what that send recorded
        assert client.flush_reports()
        assert (client.report_stats.sent, client.report_stats.failed) == (1, 0)
    assert error_lines(caplog) == []


def test_an_event_loop_ending_with_reports_queued_says_so(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePlatform()
    client: AsyncAegisClient = fake.async_client()

    async def one() -> str:
        decision = await client.propose(ACTOR, ACTION)
        await client.decisions.report_execution_later(decision.decision_id, status="SUCCESS")
        return decision.decision_id

    with caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        decision_id = asyncio.run(one())  # the loop ends while the worker lingers for a batch
    warnings = [r.getMessage() for r in caplog.records if r.name == "aegis_sdk" and r.levelno == logging.WARNING]
    assert any("event loop ended with 1 execution report(s) still queued" in w for w in warnings), warnings
    assert client.report_stats.pending == 1 and fake.executions == {}

    async def close() -> None:
        await client.aclose()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        asyncio.run(close())  # no warning when the client is closed: its worker is stopped, not cut short
    assert list(fake.executions) == [decision_id]
    assert not [r for r in caplog.records if "event loop ended" in r.getMessage()]


# -- what a hostile review of the reporter found (each failed before the fix) --------------------------------


def run_script(source: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_forked_child_sends_its_own_reports() -> None:
    # gunicorn --preload, multiprocessing's fork: the parent's thread was running when the child was made.
    out = run_script(
        """
        import os
        from aegis_sdk.testing import FakePlatform

        fake = FakePlatform()
        client = fake.client()
        actor, action = {"id": "a", "type": "ai-agent"}, {"capability": "x.y", "parameters": {}}
        parents = client.propose(actor, action).decision_id
        client.decisions.report_execution_later(parents, status="SUCCESS")
        assert client.flush_reports()  # the parent's thread exists now
        pid = os.fork()
        if pid == 0:
            childs = client.propose(actor, action).decision_id
            client.decisions.report_execution_later(childs, status="SUCCESS")
            ok = client.flush_reports(5) and childs in fake.executions and client.report_stats.sent == 1
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), flush=True)
        """
    )
    assert "child 0" in out.stdout, out.stdout + out.stderr


def test_an_async_client_dropped_without_aclose_is_flushed_at_exit() -> None:
    out = run_script(
        """
        import asyncio, atexit, gc
        from aegis_sdk.testing import FakePlatform

        fake = FakePlatform()
        atexit.register(lambda: print("executions", len(fake.executions), flush=True))

        async def main():
            client = fake.async_client()  # never closed, and gone when main() returns
            for _ in range(3):
                actor, action = {"id": "a", "type": "ai-agent"}, {"capability": "x.y", "parameters": {}}
                decision = await client.propose(actor, action)
                await client.decisions.report_execution_later(decision.decision_id, status="SUCCESS")

        asyncio.run(main())
        gc.collect()
        """
    )
    assert "executions 3" in out.stdout, out.stdout + out.stderr


class _Hold(httpx.AsyncBaseTransport):
    """Batch sends wait `seconds` before reaching the fake (a slow platform)."""

    def __init__(self, fake: FakePlatform, seconds: float) -> None:
        self.fake, self.seconds = fake, seconds

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/executions/batch"):
            await asyncio.sleep(self.seconds)
        return await self.fake.transport.handle_async_request(request)


def test_a_batch_in_flight_on_a_loop_closed_without_cancelling_is_sent_by_the_next_loop() -> None:
    fake = FakePlatform()
    client = AsyncAegisClient(
        endpoint="http://fake", api_key="k", http_client=httpx.AsyncClient(transport=_Hold(fake, 0.5)), retry_delay=0
    )

    async def queue_and_leave() -> str:
        decision = await client.propose(ACTOR, ACTION)
        await client.decisions.report_execution_later(decision.decision_id, status="SUCCESS")
        await asyncio.sleep(0.15)  # the worker took the batch and waits for its answer
        return decision.decision_id

    loop = asyncio.new_event_loop()
    decision_id = loop.run_until_complete(queue_and_leave())
    loop.close()  # without cancelling the worker: it never resumes
    assert client.report_stats.pending == 1

    async def flush_and_close() -> bool:
        flushed = await client.flush_reports(5)
        await client.aclose()
        return flushed

    assert asyncio.run(flush_and_close())
    assert decision_id in fake.executions
    assert client.report_stats.sent == 1 and client.report_stats.pending == 0


def test_close_keeps_retrying_until_its_deadline_not_until_the_attempts_run_out() -> None:
    fake = FakePlatform()
    client = fake.client(retries=0)
    decision_id = allowed(client)
    fake.fail_with_connect_error(times=30, path="*/executions/batch")  # more than REPORT_ATTEMPTS quick sends
    client.decisions.report_execution_later(decision_id, status="SUCCESS")
    client.close()  # retries every 0.2 s while closing: ~6 s of refusals, within the 10 s flush
    assert decision_id in fake.executions
    assert (client.report_stats.sent, client.report_stats.failed) == (1, 0)


def test_retry_after_is_honoured() -> None:
    fake = FakePlatform()
    with fake.client(retries=0) as client:
        decision_id = allowed(client)
        fake.fail_next(503, times=1, path="*/executions/batch", retry_after=1)
        client.decisions.report_execution_later(decision_id, status="SUCCESS")
        # Watch, without flushing (a flush asks for a send now): the first send is refused, the second waits.
        deadline = time.monotonic() + 20
        while not any(r.path.endswith("/executions/batch") for r in fake.requests):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        refused_at = time.monotonic()
        while decision_id not in fake.executions:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        waited = time.monotonic() - refused_at
    assert waited >= 0.9  # the backoff alone would have resent after ~0.05 s
    assert client.report_stats.retried == 1


def test_close_is_bounded_by_its_timeout_even_with_a_request_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePlatform()

    def never_answers(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/executions/batch"):
            time.sleep(30)
        return fake.transport.handle_request(request)

    client = AegisClient(
        endpoint="http://fake", api_key="k", http_client=httpx.Client(transport=httpx.MockTransport(never_answers))
    )
    decision_id = client.propose(ACTOR, ACTION).decision_id
    client.decisions.report_execution_later(decision_id, status="SUCCESS")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="aegis_sdk"):
        client._reporter.close(timeout=1.0)
    assert time.monotonic() - started < 5.0  # was timeout + the client's 30 s timeout
    assert client.report_stats.failed == 1
    assert any(decision_id in record.getMessage() for record in caplog.records)
