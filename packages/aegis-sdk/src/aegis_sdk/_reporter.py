"""Execution reports off the caller's path: `decisions.report_execution_later()` queues a report and returns;
a worker (a daemon thread for `AegisClient`, a task on the caller's event loop for `AsyncAegisClient`) sends
what is queued in batches of up to 100 (`POST /governance/executions/batch`, each report answered on its own),
after lingering `REPORT_LINGER` seconds for a batch to fill.

Never lost while the process lives: a batch that meets a transport error, a 429 or a 5xx stays queued and is
sent again after the platform's `Retry-After` or a backoff (`retry_delay * 2**n`, at most 30 s), up to
`REPORT_ATTEMPTS` sends per report; `close()` / `aclose()` and interpreter exit flush the queue, retrying until
`REPORT_FLUSH_TIMEOUT` seconds have passed (one deadline for all the clients at exit). A report is given up only
after its attempts are spent or when that deadline passes with the platform unreachable: then a WARNING names
it and `report_stats.failed` counts it. A report's own 4xx answer is final, counted as failed and logged; a
batch refused as a whole for its size or one of its items (413, 422) is split and sent again in halves, so only
the report the platform cannot take fails. A client with reports queued is kept alive until they are sent,
even when the application dropped it; a process forked from one starts with an empty queue of its own (the
parent sends what it had queued).
A report whose decision's execution was already recorded before its first send (`already_reported`, or a
`duplicate` answer to a report never sent before: another run acted under the same ALLOW decision) is logged
at ERROR with the decision id: the action may have been performed twice.
The queue holds `REPORT_QUEUE_SIZE` reports; when it is full, `report_execution_later()` sends the report on
the caller's path (as `report_execution()` would) rather than drop it.

This module holds the state and the no-I/O decisions (`ReportQueue`); `SyncReporter` and `AsyncReporter` only
send, sleep and wait."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from aegis_sdk._parsing import model_parser
from aegis_sdk._request import Call
from aegis_sdk._retry import RETRYABLE_STATUSES, backoff_delay
from aegis_sdk._validation import check_id, validate_model
from aegis_sdk.errors import AegisError, APIConnectionError, APIStatusError, InvalidRequestError, NotFoundError
from aegis_sdk.models import (
    MAX_EXECUTION_BATCH,
    ExecutionBatchAnswer,
    ExecutionBatchResult,
    ExecutionError,
    ExecutionReport,
    ExecutionStatus,
)

if TYPE_CHECKING:
    from aegis_sdk._async_client import AsyncAegisClient
    from aegis_sdk._client import AegisClient

logger = logging.getLogger("aegis_sdk")

REPORT_QUEUE_SIZE = 10_000
"""Reports a client holds before `report_execution_later()` sends on the caller's path."""
REPORT_ATTEMPTS = 12
"""Sends of one report (transient failures) before it is given up (with the 30 s backoff cap: minutes)."""
REPORT_LINGER = 0.05
"""Seconds a worker waits after the first queued report for more to fill the batch (unless 100 are queued,
or a flush or close is waiting): one request then carries the reports of many calls, so the platform writes
them in one transaction instead of answering one request per call beside the proposals."""
REPORT_FLUSH_TIMEOUT = 10.0
"""Seconds `close()` / `aclose()` / interpreter exit wait for the queue to empty."""
BATCH_PATH = "/governance/executions/batch"


@dataclass(frozen=True)
class ReportStats:
    """What a client's background reporter did (`client.report_stats`, a snapshot).

    - `queued`: reports accepted by `report_execution_later()` into the queue;
    - `sent`: reports the platform answered `recorded` or `duplicate` (already recorded with that status);
    - `failed`: reports finally not recorded: a 4xx answer (their own or the batch's), or given up (attempts
      spent, or the flush deadline at close passed with the platform unreachable) — each logged at WARNING;
    - `retried`: sends of a report repeated after a transport error, a 429 or a 5xx;
    - `synchronous`: reports sent on the caller's path because the queue was full;
    - `pending`: reports queued or in flight now.
    """

    queued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    synchronous: int = 0
    pending: int = 0


@dataclass
class PendingReport:
    decision_id: str
    body: dict[str, Any]  # the batch item, as JSON data
    attempts: int = 0
    sends: int = 0  # batches that carried it (a send cut short by a cancelled worker counts too)


def pending_report(
    decision_id: str,
    status: ExecutionStatus,
    result: Any,
    error: ExecutionError | Mapping[str, Any] | None,
    duration_ms: float | None,
) -> PendingReport:
    """The report checked now (bad input raises here, on the caller's path, as `report_execution` does)."""
    identifier = check_id(decision_id, "decision_id")
    report = validate_model(
        ExecutionReport,
        {"status": status, "result": result, "error": error, "duration_ms": duration_ms},
        "execution report",
    )
    try:
        body = report.model_dump(mode="json", exclude_none=True)
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(
            f"The execution report is not JSON-serialisable, nothing was queued: {exc}. Pass only str, int, float, "
            "bool, None, lists and dicts.",
            code="invalid_request",
        ) from None
    body["decision_id"] = identifier
    return PendingReport(identifier, body)


@dataclass
class ReportQueue:
    """The queue, the counters and what to do with an answer; thread-safe, no I/O."""

    capacity: int = REPORT_QUEUE_SIZE
    max_attempts: int = REPORT_ATTEMPTS
    lock: threading.Condition = field(default_factory=threading.Condition)
    items: deque[PendingReport] = field(default_factory=deque)
    in_flight: int = 0
    batch_supported: bool = True
    queued: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    synchronous: int = 0
    batch_limit: int = MAX_EXECUTION_BATCH  # halved when the platform refuses a batch as a whole, regrows after
    abandoned: bool = False  # closed while a batch was in flight: its late answer counts nothing
    owner: Any = None  # the reporter, kept alive (`_busy`) while reports are queued or in flight

    def offer(self, report: PendingReport) -> bool:
        with self.lock:
            if len(self.items) + self.in_flight >= self.capacity:
                return False
            self.items.append(report)
            self.queued += 1
            _busy(self.owner)
            self.lock.notify_all()
            return True

    def take(self) -> list[PendingReport]:
        """The next batch (up to `batch_limit` reports), now in flight."""
        with self.lock:
            batch = [self.items.popleft() for _ in range(min(self.batch_limit, len(self.items)))]
            for report in batch:
                report.sends += 1
            self.in_flight += len(batch)
            return batch

    def pending(self) -> int:
        with self.lock:
            return len(self.items) + self.in_flight

    def stats(self) -> ReportStats:
        with self.lock:
            return ReportStats(
                self.queued, self.sent, self.failed, self.retried, self.synchronous, len(self.items) + self.in_flight
            )

    def _done(self, count: int) -> None:
        self.in_flight -= count
        if not self.items and not self.in_flight:
            _idle(self.owner)
        self.lock.notify_all()

    def put_back(self, batch: list[PendingReport]) -> None:
        """A batch that was not answered (its worker's event loop ended): first in line again, not a retry."""
        with self.lock:
            self.items.extendleft(reversed(batch))
            self._done(len(batch))

    def answered(self, batch: list[PendingReport], answer: ExecutionBatchAnswer) -> None:
        """Count (and log) each report's answer."""
        results: list[ExecutionBatchResult | None] = [*answer.results[: len(batch)]]
        results.extend(None for _ in range(len(batch) - len(results)))
        with self.lock:
            if self.abandoned:
                self._done(len(batch))
                return
            self.batch_limit = min(MAX_EXECUTION_BATCH, self.batch_limit * 2)
            for report, result in zip(batch, results, strict=True):
                if result is not None and result.decision_id != report.decision_id:
                    result = None  # not the answer to this report: count it as unanswered
                if result is not None and result.status in ("recorded", "duplicate"):
                    self.sent += 1
                    if result.status == "duplicate" and report.sends == 1:
                        already_reported_error(report)  # recorded before this client ever sent it
                    continue
                self.failed += 1
                code = result.error.code if result is not None and result.error is not None else "no_answer"
                if code == "already_reported":
                    already_reported_error(report)
                    continue
                logger.warning(
                    "the platform refused the execution report of decision %s (code=%s); it is not recorded",
                    report.decision_id,
                    code,
                )
            self._done(len(batch))

    def refused(self, batch: list[PendingReport], error: AegisError) -> None:
        """A final (4xx) answer to the whole batch: every report in it failed."""
        with self.lock:
            if self.abandoned:
                self._done(len(batch))
                return
            self.failed += len(batch)
            self._done(len(batch))
        logger.warning(
            "the platform refused a batch of %d execution reports (%s, code=%s); they are not recorded: %s",
            len(batch),
            type(error).__name__,
            error.code,
            ", ".join(report.decision_id for report in batch),
        )

    def split(self, batch: list[PendingReport]) -> None:
        """The platform refused the whole batch for its size or one of its items (413, 422): send it again in
        halves (down to one report, whose own refusal is then final). Not a retry: no attempt is counted."""
        with self.lock:
            self.batch_limit = max(1, len(batch) // 2)
            if self.abandoned:
                self._done(len(batch))
                return
            self.items.extendleft(reversed(batch))
            self._done(len(batch))

    def requeue(self, batch: list[PendingReport], *, count: bool = True) -> list[PendingReport]:
        """A transient failure: put the batch back at the front, except the reports whose attempts are spent
        (given up: returned, counted and logged). `count=False` while closing: the flush deadline decides then,
        not the number of sends."""
        kept: list[PendingReport] = []
        spent: list[PendingReport] = []
        for report in batch:
            if count:
                report.attempts += 1
            (spent if report.attempts >= self.max_attempts else kept).append(report)
        with self.lock:
            if self.abandoned:
                self._done(len(batch))
                return []
            self.items.extendleft(reversed(kept))
            self.retried += len(kept)
            self.failed += len(spent)
            self._done(len(batch))
        if spent:
            give_up_warning(spent, f"after {self.max_attempts} attempts")
        return spent

    def give_up_rest(self, why: str, in_flight: list[PendingReport] | None = None) -> None:
        """At close: what is still queued is not sent (counted, logged); so is `in_flight`, a batch whose
        request is still unanswered at the deadline (its late answer will count nothing)."""
        with self.lock:
            rest = [*(in_flight or ()), *self.items]
            self.items.clear()
            self.failed += len(rest)
            if in_flight:
                self.abandoned = True
            if not self.items and (self.abandoned or not self.in_flight):
                _idle(self.owner)
            self.lock.notify_all()
        if rest:
            give_up_warning(rest, why)


def already_reported_error(report: PendingReport) -> None:
    """The decision's execution was recorded before this report was first sent: another run (a re-run of the
    same step in another process, or a second report of this one) acted under the same ALLOW decision, so the
    action may have been performed twice. An ERROR, not a WARNING: it is about the action, not the audit."""
    logger.error(
        "the execution of decision %s was already reported before this report was sent (code=already_reported): "
        "another run acted under the same decision, the action may have been performed twice",
        report.decision_id,
    )


def give_up_warning(reports: list[PendingReport], why: str) -> None:
    logger.warning(
        "gave up %d execution report(s) %s; the platform did not record them: %s",
        len(reports),
        why,
        ", ".join(report.decision_id for report in reports),
    )


def batch_call(batch: list[PendingReport]) -> Call[ExecutionBatchAnswer]:
    """One send of a batch; the reporter retries it itself (it keeps the reports queued meanwhile)."""
    body = json.dumps({"reports": [report.body for report in batch]}, separators=(",", ":")).encode()
    return Call(
        "POST",
        BATCH_PATH,
        model_parser(ExecutionBatchAnswer),
        body=body,
        retry=False,
        operation="report_executions",
    )


def is_transient(error: AegisError) -> bool:
    """Worth sending again: the platform was not reached, or answered 429 / 5xx."""
    if isinstance(error, APIConnectionError):
        return True
    return isinstance(error, APIStatusError) and error.status_code in RETRYABLE_STATUSES


def refused_as_a_whole(error: AegisError, batch: list[PendingReport]) -> bool:
    """The platform refused a batch of several reports for its size (413) or for one item it cannot take
    (422): halves of it may well pass."""
    return len(batch) > 1 and error.status_code in (413, 422)


def batch_unsupported(error: AegisError) -> bool:
    """A platform without the batch endpoint (older than the SDK) answers its path with a plain 404/405."""
    if isinstance(error, NotFoundError):
        return True
    return isinstance(error, APIStatusError) and error.status_code == 405


# -- the workers ----------------------------------------------------------------------------------


class SyncReporter:
    """The daemon thread of an `AegisClient`, started on the first queued report."""

    def __init__(self, client: AegisClient) -> None:
        self._client = client
        self.queue = ReportQueue(owner=self)
        self._thread: threading.Thread | None = None
        self._in_hand: list[PendingReport] = []  # the batch being sent
        self._closing = False
        self._stopped = False
        self.hurry = 0  # flushes waiting: no lingering
        self._wake = threading.Event()
        _known(self)

    def submit(self, report: PendingReport) -> bool:
        if self._stopped or not self.queue.offer(report):
            return False
        if self._thread is None:
            with self.queue.lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="aegis-execution-reports", daemon=True)
                    self._thread.start()
        return True

    def _work(self) -> None:
        queue = self.queue
        while True:
            with queue.lock:
                while not queue.items and not self._stopped:
                    queue.lock.wait()
                linger_until = time.monotonic() + REPORT_LINGER
                while len(queue.items) < MAX_EXECUTION_BATCH and not (self._stopped or self._closing or self.hurry):
                    remaining = linger_until - time.monotonic()
                    if remaining <= 0:
                        break
                    queue.lock.wait(remaining)
                if self._stopped:
                    return
            self._in_hand = batch = queue.take()
            delay = self._send(batch)
            self._in_hand = []
            if delay:
                self._wake.wait(min(delay, 0.2) if self._closing else delay)
                self._wake.clear()

    def _send(self, batch: list[PendingReport]) -> float:
        """Send one batch; returns the pause before the next send (0 unless it failed transiently)."""
        queue = self.queue
        try:
            if queue.batch_supported:
                answer = self._client._request(batch_call(batch))
                queue.answered(batch, answer)
            else:
                self._send_each(batch)
        except AegisError as exc:
            return after_failure(queue, batch, exc, self._client, closing=self._closing)
        except Exception as exc:  # never let the worker die with reports in hand
            logger.warning("execution report worker: %s", type(exc).__name__)
            queue.requeue(batch, count=not self._closing)
            return 1.0
        return 0.0

    def _send_each(self, batch: list[PendingReport]) -> None:
        answers: list[dict[str, Any]] = []
        for report in batch:
            try:
                self._client._request(_single_call(report))
                answers.append(_single_answer(report, None))
            except AegisError as exc:
                if is_transient(exc):
                    raise
                answers.append(_single_answer(report, exc))
        self.queue.answered(batch, ExecutionBatchAnswer.model_validate({"results": answers}))

    def flush(self, timeout: float | None = REPORT_FLUSH_TIMEOUT) -> bool:
        """Wait until every queued report is answered (or `timeout` seconds). True when none is left queued or
        in flight — answered, which is not always recorded: `report_stats.failed` counts the refused ones."""
        deadline = None if timeout is None else time.monotonic() + timeout
        queue = self.queue
        self._wake.set()  # a backoff sleeping: send again now
        with queue.lock:
            self.hurry += 1
            queue.lock.notify_all()
            try:
                while queue.items or queue.in_flight:
                    if self._thread is None or not self._thread.is_alive():
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    queue.lock.wait(remaining if remaining is not None else 1.0)
            finally:
                self.hurry -= 1
        return True

    def begin_close(self) -> None:
        """Send what is queued now, without lingering, and retry it until the close's deadline."""
        self._closing = True
        self._wake.set()
        with self.queue.lock:
            self.queue.lock.notify_all()

    def close(self, timeout: float | None = REPORT_FLUSH_TIMEOUT) -> None:
        """Flush (at most `timeout` seconds in all), then stop the thread; what is left is given up (logged,
        counted), a batch still unanswered included."""
        if self._stopped:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self.begin_close()
        self.flush(timeout)
        with self.queue.lock:
            self._stopped = True
            self.queue.lock.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        unanswered = self._in_hand if thread is not None and thread.is_alive() else []
        self.queue.give_up_rest(f"at close (the platform did not answer within {timeout} s)", unanswered)

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread does not exist here and the parent sends what it queued."""
        self.queue = ReportQueue(owner=self)
        self._thread = None
        self._in_hand = []
        self._wake = threading.Event()


class AsyncReporter:
    """The tasks of an `AsyncAegisClient`: one on each event loop that queued reports, while there are some.
    The queue is shared: a report queued on a loop that ends is sent by the next worker or by `aclose()`."""

    def __init__(self, client: AsyncAegisClient) -> None:
        self._client = client
        self.queue = ReportQueue(owner=self)
        self._workers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        self._in_hand: dict[asyncio.AbstractEventLoop, list[PendingReport]] = {}  # each worker's batch in flight
        self.hurry = 0  # flushes waiting: no lingering
        self._closing = False
        self._stopped = False
        _known(self)

    def submit(self, report: PendingReport) -> bool:
        if self._stopped or not self.queue.offer(report):
            return False
        self._ensure_worker()
        return True

    def _ensure_worker(self) -> None:
        self._reclaim_closed_loops()
        loop = asyncio.get_running_loop()
        worker = self._workers.get(loop)
        if worker is None or worker.done():
            self._workers[loop] = loop.create_task(self._work(), name="aegis-execution-reports")

    def _reclaim_closed_loops(self) -> None:
        """A loop closed without cancelling its tasks (`run_until_complete`, then `close()`) leaves its worker
        suspended for good: the batch it was sending goes back to the queue for a live loop to send."""
        for loop in [loop for loop in self._workers if loop.is_closed()]:
            del self._workers[loop]
            batch = self._in_hand.pop(loop, None)
            if batch:
                self.queue.put_back(batch)

    async def _work(self) -> None:
        # The task inherited the context of the call that queued a report: start its spans at the root, not
        # inside that call's trace (the thread of the sync reporter starts with an empty context anyway).
        otel_context.attach(otel_context.Context())
        try:
            await self._drain()
        except asyncio.CancelledError:
            left = self.queue.pending()
            if left and not self._stopped:
                # The event loop ends (asyncio.run returns, an ASGI server without lifespan stops) with reports
                # still queued: they wait for this client's next event loop, `aclose()` or interpreter exit.
                logger.warning(
                    "the event loop ended with %d execution report(s) still queued: they are sent on this "
                    "client's next event loop, at aclose() or at interpreter exit; await client.flush_reports() "
                    "or aclose() before the loop ends (an app: run its lifespan)",
                    left,
                )
            raise

    async def _drain(self) -> None:
        queue = self.queue
        loop = asyncio.get_running_loop()
        while not self._stopped:
            if not (self._closing or self.hurry) and 0 < len(queue.items) < MAX_EXECUTION_BATCH:
                await asyncio.sleep(REPORT_LINGER)
            batch = queue.take()
            if not batch:
                return
            self._in_hand[loop] = batch
            try:
                delay = await self._send(batch)
            except asyncio.CancelledError:  # the loop ends: the reports stay queued for another worker or aclose()
                self._in_hand.pop(loop, None)
                queue.put_back(batch)
                raise
            self._in_hand.pop(loop, None)
            if delay:
                await asyncio.sleep(min(delay, 0.2) if self._closing else delay)

    async def _send(self, batch: list[PendingReport]) -> float:
        queue = self.queue
        try:
            if queue.batch_supported:
                answer = await self._client._request(batch_call(batch))
                queue.answered(batch, answer)
            else:
                await self._send_each(batch)
        except AegisError as exc:
            return after_failure(queue, batch, exc, self._client, closing=self._closing)
        except Exception as exc:
            logger.warning("execution report worker: %s", type(exc).__name__)
            queue.requeue(batch, count=not self._closing)
            return 1.0
        return 0.0

    async def _send_each(self, batch: list[PendingReport]) -> None:
        answers: list[dict[str, Any]] = []
        for report in batch:
            try:
                await self._client._request(_single_call(report))
                answers.append(_single_answer(report, None))
            except AegisError as exc:
                if is_transient(exc):
                    raise
                answers.append(_single_answer(report, exc))
        self.queue.answered(batch, ExecutionBatchAnswer.model_validate({"results": answers}))

    async def flush(self, timeout: float | None = REPORT_FLUSH_TIMEOUT) -> bool:
        """Send what is queued from this loop and wait until every report is answered (or `timeout`). True when
        none is left queued or in flight (`report_stats.failed` counts the refused ones)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.hurry += 1
        try:
            while self.queue.pending():
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._reclaim_closed_loops()
                if self.queue.items:
                    self._ensure_worker()
                await asyncio.sleep(0.005)
        finally:
            self.hurry -= 1
        return True

    async def aclose(self, timeout: float | None = REPORT_FLUSH_TIMEOUT) -> None:
        if self._stopped:
            return
        self._closing = True
        await self.flush(timeout)
        self._stopped = True
        running = asyncio.get_running_loop()
        mine = [worker for loop, worker in self._workers.items() if loop is running and not worker.done()]
        for worker in mine:
            worker.cancel()  # its batch in flight goes back to the queue, given up below
        if mine:
            await asyncio.wait(mine)
        self._reclaim_closed_loops()
        self._workers.clear()
        unanswered = [report for batch in self._in_hand.values() for report in batch]  # on other live loops
        self._in_hand.clear()
        self.queue.give_up_rest(f"at close (the platform did not answer within {timeout} s)", unanswered)

    def at_exit(self, timeout: float = REPORT_FLUSH_TIMEOUT) -> None:
        """Interpreter exit with reports still queued (no `aclose()`): send them on a fresh loop, briefly."""
        if self._stopped or not self.queue.pending():
            return
        try:
            asyncio.run(self.aclose(timeout))
        except Exception as exc:  # pragma: no cover - best effort at exit
            logger.warning("could not flush execution reports at exit: %s", type(exc).__name__)
            self.queue.give_up_rest("at interpreter exit")

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's event loops and tasks are not this process's; the parent sends what
        it queued."""
        self.queue = ReportQueue(owner=self)
        self._workers = {}
        self._in_hand = {}


def after_failure(
    queue: ReportQueue, batch: list[PendingReport], error: AegisError, client: Any, *, closing: bool
) -> float:
    """What a failed send of `batch` leads to; returns the pause before the next send."""
    if queue.batch_supported and batch_unsupported(error):
        queue.batch_supported = False
        queue.requeue(batch, count=False)
        return 0.0
    if refused_as_a_whole(error, batch):
        queue.split(batch)
        return 0.0
    if not is_transient(error):
        queue.refused(batch, error)
        return 0.0
    queue.requeue(batch, count=not closing)
    attempt = max(report.attempts for report in batch)
    retry_after = getattr(error, "retry_after", None)
    return backoff_delay(max(0, attempt - 1), client.retry_delay or 0.05, retry_after, client._random())


def _single_call(report: PendingReport) -> Call[Any]:
    """The single-report request of `report` (a platform without the batch endpoint gets these one by one)."""
    from aegis_sdk._resources.decisions import execution_call

    body = report.body
    return execution_call(
        report.decision_id, body["status"], body.get("result"), body.get("error"), body.get("duration_ms")
    )


def _single_answer(report: PendingReport, refused: AegisError | None) -> dict[str, Any]:
    """The batch answer for `report` sent alone: recorded, or the platform's final refusal."""
    if refused is None:
        return {"decision_id": report.decision_id, "status": "recorded"}
    return {"decision_id": report.decision_id, "status": "error", "error": _error_body(refused)}


def _error_body(error: AegisError) -> dict[str, Any]:
    return {"type": "governance_error", "code": error.code or "error", "message": str(error)}


# Reporters with reports queued or in flight are held here (a strong reference: the application may have
# dropped its client) until their queue is empty, and flushed at interpreter exit. All reporters are known
# weakly, so that a forked child can reset theirs.
_exit_lock = threading.Lock()
_busy_reporters: dict[int, Any] = {}
_all_reporters: weakref.WeakSet[Any] = weakref.WeakSet()
_exit_hooked = False


def _known(reporter: SyncReporter | AsyncReporter) -> None:
    with _exit_lock:
        _all_reporters.add(reporter)


def _busy(reporter: Any) -> None:
    """Called under the reporter's queue lock when a report is queued."""
    global _exit_hooked
    if reporter is None:
        return
    with _exit_lock:
        _busy_reporters[id(reporter)] = reporter
        if not _exit_hooked:
            _exit_hooked = True
            atexit.register(_flush_all_at_exit)


def _idle(reporter: Any) -> None:
    """Called under the reporter's queue lock when nothing is queued or in flight any more."""
    if reporter is None:
        return
    with _exit_lock:
        _busy_reporters.pop(id(reporter), None)


def _flush_all_at_exit() -> None:
    """One deadline for every client: they are all told to hurry first, so that the sync ones send at once."""
    deadline = time.monotonic() + REPORT_FLUSH_TIMEOUT
    with _exit_lock:
        reporters = list(_busy_reporters.values())
    for reporter in reporters:
        if isinstance(reporter, SyncReporter):
            reporter.begin_close()
    for reporter in reporters:
        remaining = max(0.0, deadline - time.monotonic())
        if isinstance(reporter, SyncReporter):
            reporter.close(remaining)
        else:
            reporter.at_exit(remaining)


def _forget_in_child() -> None:
    global _exit_lock
    _exit_lock = threading.Lock()  # perhaps held by a thread of the parent at the fork
    _busy_reporters.clear()
    for reporter in list(_all_reporters):
        reporter.forget_after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_in_child)


__all__ = [
    "REPORT_FLUSH_TIMEOUT",
    "REPORT_QUEUE_SIZE",
    "AsyncReporter",
    "PendingReport",
    "ReportQueue",
    "ReportStats",
    "SyncReporter",
    "pending_report",
]
