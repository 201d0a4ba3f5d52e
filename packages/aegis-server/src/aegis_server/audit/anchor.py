"""The server's anchor (`AuditAnchor`): at startup it compares the database with the latest checkpoint and
refuses to start when records it vouches for are missing or different (`aegis-server audit acknowledge-cut`
accepts the current head after an investigation); while records are appended it writes a checkpoint at
most every `audit_checkpoint_interval_seconds` (1 s) and not at all while the chain is idle, one more at
shutdown, and optionally POSTs each to a webhook, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aegis_server.audit.checkpoints import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointDirectory,
    sign_checkpoint,
    verify_signature,
)
from aegis_server.audit.signing_keys import anchor_paths, load_signing_key, public_key_id
from aegis_server.audit.verification import compare_with_checkpoint, unanchored_chain
from aegis_server.settings import Settings
from aegis_server.store import Store, format_timestamp

__all__ = ["AnchorError", "AuditAnchor"]

logger = logging.getLogger("aegis_server.audit")

_WEBHOOK_TIMEOUT_SECONDS = 5.0
_WEBHOOK_MAX_BACKOFF_SECONDS = 30.0


class AnchorError(RuntimeError):
    """The database does not match the latest signed checkpoint (the server refuses to start)."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class AuditAnchor:
    """The server's checkpoints: the startup check, the background writer, the webhook and the last
    checkpoint at shutdown. `clock` stamps checkpoints; `sleep` paces the loops (tests pass fakes)."""

    def __init__(
        self,
        store: Store,
        directory: Path,
        signing_key: Ed25519PrivateKey,
        *,
        interval: float = 1.0,
        webhook: str | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.directory = CheckpointDirectory(directory)
        self.signing_key = signing_key
        self.public_key = signing_key.public_key()
        self.key_id = public_key_id(self.public_key)
        self.interval = interval
        self.webhook = webhook
        self._clock = clock
        self._sleep = sleep
        self._transport = transport
        self._writer = f"{socket.gethostname()}:{os.getpid()}"
        self._last: tuple[int, str | None] = (0, None)
        self._unsent: Checkpoint | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.written = 0  # checkpoints written by this process
        # Checkpoints vouch for the database's head only once it was found to match the latest one
        # (`check_startup`) or an operator accepted it (`audit acknowledge-cut`): a server that refused to
        # start must not write a checkpoint of the cut chain on its way out.
        self.verified = False

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, **kwargs: Any) -> AuditAnchor | None:
        """The anchor of `settings` (generating the signing key file on first start); None when nothing is
        anchored (an in-memory database without AEGIS_AUDIT_CHECKPOINT_DIR)."""
        directory = anchor_paths(settings).directory
        if directory is None:
            return None
        key = load_signing_key(settings, create=True)
        assert key is not None
        return cls(
            store,
            directory,
            key,
            interval=settings.audit_checkpoint_interval_seconds,
            webhook=settings.audit_checkpoint_webhook,
            **kwargs,
        )

    async def latest(self) -> Checkpoint | None:
        return await asyncio.to_thread(self.directory.latest)

    async def check_startup(self) -> Checkpoint | None:
        """Compare the database with the latest checkpoint; raise `AnchorError` naming what is missing or
        different. Returns the checkpoint (None: there is none yet)."""
        checkpoint = await self.latest()
        if checkpoint is None:
            head, _ = await self.store.chain_head()
            problem = await unanchored_chain(self.store, self.directory.path)
            if problem is not None:
                raise AnchorError(
                    problem.message + ". Point AEGIS_AUDIT_CHECKPOINT_DIR at the directory that holds them; if they "
                    "are lost, check the chain (`aegis-server audit verify --no-checkpoint`) and accept it as it is "
                    "with `aegis-server audit acknowledge-cut --reason TEXT`"
                )
            self.verified = True
            if head:
                logger.info(
                    "the audit chain (%d records, none keyed yet) is anchored from now on in %s",
                    head,
                    self.directory.path,
                )
            return None
        if not verify_signature(self.public_key, checkpoint):
            raise AnchorError(
                f"the signature of {checkpoint.describe()} does not verify with this server's signing key "
                f"{self.key_id} (the checkpoint names {checkpoint.body.get('key_id')}): the file was changed, "
                "or the signing key was replaced. Restore the key (AEGIS_AUDIT_SIGNING_KEY or the key file), or "
                "move the checkpoint files aside after checking them with the old public key"
            )
        problems = await compare_with_checkpoint(self.store, checkpoint)
        if problems:
            raise AnchorError(
                "; ".join(problem.message for problem in problems)
                + ". The server does not continue from a chain that lost records. Investigate (`aegis-server "
                "audit verify`), restore the database from a backup, or accept the current head with "
                "`aegis-server audit acknowledge-cut --reason TEXT`"
            )
        self._last = (checkpoint.sequence, checkpoint.head_hash)
        self.store.raise_chain_floor(checkpoint.sequence)
        self.verified = True
        return checkpoint

    async def checkpoint(self, *, extra: Mapping[str, Any] | None = None, force: bool = False) -> Checkpoint | None:
        """Write a checkpoint of the database's head when it moved since the last one (or `force`);
        returns it, or None when nothing was written (also before the head was `verified`)."""
        if not self.verified:
            return None
        head_sequence, head_hash = await self.store.chain_head()
        if not force and (head_sequence, head_hash) == self._last:
            return None
        if head_sequence < self._last[0]:
            logger.critical(
                "the audit chain was cut under the running server: the database head is record #%d, the last "
                "checkpoint of this server says #%d; no checkpoint is written and appends are refused",
                head_sequence,
                self._last[0],
            )
            self.store.raise_chain_floor(self._last[0])
            return None
        if head_hash is None and not force:
            return None
        state = await self.store.chain_state()
        keyed = state.v2_from is not None and head_sequence >= state.v2_from
        body: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "chain_version": 2 if keyed else 1,
            "v2_from": state.v2_from,
            "sequence": head_sequence,
            "head_hash": head_hash or "0" * 64,
            "time": format_timestamp(self._clock()),
            "writer": self._writer,
            "key_id": self.key_id,
            "audit_key_id": state.key_id,
        }
        if extra:
            body.update(extra)
        checkpoint = sign_checkpoint(self.signing_key, body)
        await asyncio.to_thread(self.directory.write, checkpoint)
        self._last = (head_sequence, head_hash)
        self.store.raise_chain_floor(head_sequence)
        self.written += 1
        if self.webhook:
            self._unsent = checkpoint
            if self._webhook_task is None or self._webhook_task.done():
                self._webhook_task = asyncio.create_task(self._send_webhook())
        return checkpoint

    async def run(self) -> None:
        """The background writer: a checkpoint every `interval` seconds while the head moves."""
        while True:
            await self._sleep(self.interval)
            try:
                await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error(
                    "writing an audit checkpoint to %s failed (%s: %s); retrying in %.1f s",
                    self.directory.path,
                    type(exc).__name__,
                    exc,
                    self.interval,
                )

    async def close(self) -> None:
        """At shutdown: a last checkpoint of the head, and one last (bounded) try of the webhook."""
        try:
            await self.checkpoint()
        except Exception as exc:
            logger.error("the shutdown audit checkpoint failed (%s: %s)", type(exc).__name__, exc)
        task = self._webhook_task
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=_WEBHOOK_TIMEOUT_SECONDS)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _send_webhook(self) -> None:
        assert self.webhook is not None
        backoff = 1.0
        async with httpx.AsyncClient(timeout=_WEBHOOK_TIMEOUT_SECONDS, transport=self._transport) as client:
            while self._unsent is not None:
                checkpoint = self._unsent
                try:
                    response = await client.post(self.webhook, json=checkpoint.document())
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    logger.warning(
                        "the audit checkpoint webhook failed (%s); retrying in %.0f s with the newest checkpoint",
                        type(exc).__name__,
                        backoff,
                    )
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, _WEBHOOK_MAX_BACKOFF_SECONDS)
                    continue
                backoff = 1.0
                if self._unsent is checkpoint:
                    self._unsent = None
