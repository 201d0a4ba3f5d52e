"""`AuditExporter`: streams the audit chain to one sink, with the webhook outbox's durability. The audit
table is the queue; the sink's cursor (the last sequence it durably took) moves only after `deliver`
returned, in a transaction that also renews this process's lease on the sink, so two replicas never export
to one sink at once. Woken when this process commits audit records, and every poll interval (records of
other replicas). A sink that refuses a batch is retried with capped exponential backoff (at least its
Retry-After): records are never dropped. At-least-once in general; the file sink's own tail makes it
exactly-once (`file_sink`). `stop()` exports what is committed (for at most `shutdown_seconds`) and gives
the lease up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta

from aegis_server.audit_export.record_format import export_line
from aegis_server.audit_export.sink import Sink, SinkUnavailable
from aegis_server.metrics import Metrics
from aegis_server.settings import Settings
from aegis_server.store import Store
from aegis_server.store.export_cursors import ExportCursors, lease_until

__all__ = ["AuditExporter"]

logger = logging.getLogger("aegis_server.audit_export")

_FIRST_BACKOFF_SECONDS = 0.5
_RETRY_AFTER_CAP_SECONDS = 3600.0
# After a batch was refused as too large, the size is doubled again once this many batches were taken at it.
_REGROW_AFTER_BATCHES = 100


class AuditExporter:
    """Exports the audit records of `store` to `sink` (see the module docstring)."""

    def __init__(self, store: Store, sink: Sink, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self._store = store
        self._sink = sink
        self._cursors = ExportCursors(store.database)
        self._batch_limit = settings.audit_export_batch
        self._batch = self._batch_limit  # halved while the sink refuses batches as too large, regrown slowly
        self._taken_at_this_size = 0
        self._poll = settings.audit_export_poll_interval_seconds
        self._lease_seconds = settings.audit_export_lease_seconds
        self._retry_max = settings.audit_export_retry_max_seconds
        self._shutdown_seconds = settings.audit_export_shutdown_seconds
        self._metrics = metrics
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease: str | None = None
        self._position = 0  # the last sequence the sink took, while the lease is held
        self._failures = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        if metrics is not None:  # the series exist from the start, at 0
            metrics.audit_export_records.labels(sink=sink.label)
            metrics.audit_export_failures.labels(sink=sink.label)
            metrics.audit_export_lag.labels(sink=sink.label)

    @property
    def holds_lease(self) -> bool:
        return self._lease is not None

    def start(self) -> None:
        self._store.database.add_audit_listener(self.wake)
        self._task = asyncio.create_task(self._run(), name=f"aegis-audit-export-{self._sink.label}")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Export what is committed (bounded by `shutdown_seconds`), then release the lease."""
        self._store.database.remove_audit_listener(self.wake)
        self._stopping = True
        self._stop.set()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self._shutdown_seconds)
            if not done:
                logger.warning("audit export (%s): stopped before the sink took every record", self._sink.label)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._release()
        await self._sink.close()

    async def run_once(self) -> int:
        """Take the lease if free and export what is committed; the number of records exported."""
        exported = 0
        try:
            while await self._hold():
                asked = self._batch
                sent = await self._export_batch()
                exported += sent
                await self._update_lag()  # during a long catch-up too, not only at its end
                if sent < asked:
                    break
        finally:
            with contextlib.suppress(Exception):
                await self._update_lag()
        return exported

    async def _run(self) -> None:
        while True:
            # Read before the pass: a stop that comes during it gets one more pass, for what was committed
            # while this one ran (the last requests' records), before the task ends.
            stopping = self._stopping
            self._wake.clear()
            try:
                await self.run_once()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except SinkUnavailable as exc:
                self._failures += 1
                if self._metrics is not None:
                    self._metrics.audit_export_failures.labels(sink=self._sink.label).inc()
                if exc.too_large and self._batch > 1:
                    self._batch, self._taken_at_this_size = self._batch // 2, 0
                    logger.warning(
                        "audit export (%s): %s; sending %d records at once", self._sink.label, exc, self._batch
                    )
                    continue  # at once, smaller
                if exc.too_large:
                    logger.error(
                        "audit export (%s): %s for a single record: raise the receiver's body size limit; the "
                        "export waits (nothing is dropped)",
                        self._sink.label,
                        exc,
                    )
                wait = min(self._retry_max, _FIRST_BACKOFF_SECONDS * 2 ** (self._failures - 1))
                if exc.retry_after is not None:
                    wait = max(wait, min(exc.retry_after, _RETRY_AFTER_CAP_SECONDS))
                logger.warning("audit export (%s): %s; retrying in %.1f s", self._sink.label, exc, wait)
                await self._pause(wait)
                continue
            except Exception:
                logger.exception("audit export (%s) failed; retrying in %.1f s", self._sink.label, self._poll)
                self._lease = None  # the sink is reopened (and its tail read again) once the lease is taken
            if stopping:
                return
            if not self._stopping:
                await self._sleep(self._poll)

    async def _hold(self) -> bool:
        """Take or renew the lease; on taking it, (re)open the sink and find where to resume. A lease with
        more than half its time left is kept as it is (`advance` renews it with every batch anyway)."""
        if self._lease is not None:
            until = lease_until(self._lease)
            if until is not None and until - self._store.database.now() > timedelta(seconds=self._lease_seconds / 2):
                return True
        lease = await self._cursors.acquire(self._sink.sink_id, self._owner, self._lease_seconds)
        if lease is None:
            self._lease = None
            return False
        if self._lease is None:
            resumed = await self._sink.open()
            self._position = max(await self._cursors.cursor(self._sink.sink_id), resumed or 0)
        self._lease = lease
        return True

    async def _export_batch(self) -> int:
        records = await self._cursors.records_after(self._position, self._batch)
        if not records:
            return 0
        assert self._lease is not None
        await self._sink.deliver([export_line(record) for record in records])
        last = records[-1].sequence
        sink_id = self._sink.sink_id
        self._lease = await self._cursors.advance(sink_id, self._owner, self._lease, last, self._lease_seconds)
        if self._lease is None:
            logger.warning("audit export (%s): the lease passed to another process", self._sink.label)
            return 0
        self._position = last
        self._taken_at_this_size += 1
        if self._batch < self._batch_limit and self._taken_at_this_size >= _REGROW_AFTER_BATCHES:
            self._batch, self._taken_at_this_size = min(self._batch_limit, self._batch * 2), 0
        if self._metrics is not None:
            self._metrics.audit_export_records.labels(sink=self._sink.label).inc(len(records))
        return len(records)

    async def _update_lag(self) -> None:
        if self._metrics is None:
            return
        cursor = self._position if self._lease is not None else await self._cursors.cursor(self._sink.sink_id)
        head = await self._cursors.head()
        self._metrics.audit_export_lag.labels(sink=self._sink.label).set(max(0, head - cursor))

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` before a retry, renewing the lease meanwhile (a stop ends the wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._stopping and loop.time() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(deadline - loop.time(), self._lease_seconds / 3))
            if self._lease is not None:
                with contextlib.suppress(Exception):
                    await self._hold()

    async def _sleep(self, seconds: float) -> None:
        """Until woken or `seconds` passed (not `asyncio.wait_for`: see WebhookDispatcher._sleep)."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    async def _release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await self._cursors.release(self._sink.sink_id, lease)
