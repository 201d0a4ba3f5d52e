"""Anchoring the audit chain outside the database: signed checkpoints of its head.

A checkpoint is a JSON document `{format, chain_version, v2_from, sequence, head_hash, time, writer,
key_id, audit_key_id, signature}`: the chain's last record (sequence and hash) at `time`, where the keyed
(version 2) part of the chain starts, and an Ed25519 signature over the canonical JSON of every other
field (sorted keys, no whitespace: `json.dumps(doc, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`). The signing key never lives in the database (`AEGIS_AUDIT_SIGNING_KEY`, or the key
file `audit-signing.key` written once with mode 0600 in the checkpoint directory).

While records are appended, the server writes a checkpoint at most every
`audit_checkpoint_interval_seconds` (1 s) and not at all while the chain is idle, and one at shutdown:
each line of `checkpoints-YYYY-MM-DD.jsonl` (appended, fsynced) is one checkpoint, `latest.json`
(replaced atomically) the newest; optionally each is also POSTed to a webhook, off the request path.

At startup the server compares the database with the latest checkpoint and refuses to start when records
it vouches for are missing or different (`aegis-server audit acknowledge-cut` accepts the current head
after an investigation). `aegis-server audit verify` and `GET /api/v1/audit/verify` check the chain, the
checkpoint and the decisions table together (`verify_audit`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aegis_sdk.models import AuditCheckpoint, AuditProblem, AuditVerification
from aegis_server.canonical import canonical_json
from aegis_server.settings import Settings
from aegis_server.store import AuditKeySource, Store, default_audit_dir, format_timestamp
from aegis_server.store.chain import read_or_create_key_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "AnchorError",
    "AuditAnchor",
    "Checkpoint",
    "CheckpointDirectory",
    "CheckpointError",
    "anchor_paths",
    "audit_key_source",
    "compare_with_checkpoint",
    "load_public_key",
    "load_signing_key",
    "public_key_id",
    "public_key_pem",
    "sign_checkpoint",
    "verify_audit",
    "verify_signature",
]

logger = logging.getLogger("aegis_server.audit")

CHECKPOINT_FORMAT = "aegis-audit-checkpoint/1"
SIGNING_KEY_FILE = "audit-signing.key"
AUDIT_KEY_FILE = "audit-hmac.key"
LATEST_FILE = "latest.json"
_WEBHOOK_TIMEOUT_SECONDS = 5.0
_WEBHOOK_MAX_BACKOFF_SECONDS = 30.0


class CheckpointError(ValueError):
    """A checkpoint or key file cannot be read or is malformed. The message names it and says what to do."""


class AnchorError(RuntimeError):
    """The database does not match the latest signed checkpoint (the server refuses to start)."""


# ---------------------------------------------------------------------------------------------
# keys and where things live
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorPaths:
    directory: Path | None  # None: in-memory database without a configured directory (nothing anchored)

    @property
    def audit_key_file(self) -> Path | None:
        return self.directory / AUDIT_KEY_FILE if self.directory is not None else None

    @property
    def signing_key_file(self) -> Path | None:
        return self.directory / SIGNING_KEY_FILE if self.directory is not None else None


def anchor_paths(settings: Settings) -> AnchorPaths:
    """The checkpoint directory of `settings` (AEGIS_AUDIT_CHECKPOINT_DIR, else `default_audit_dir`)."""
    if settings.audit_checkpoint_dir is not None:
        return AnchorPaths(settings.audit_checkpoint_dir.expanduser())
    return AnchorPaths(default_audit_dir(settings.db_url))


def audit_key_source(settings: Settings) -> AuditKeySource:
    """Where the store finds the audit (HMAC) key: AEGIS_AUDIT_KEY, else the key file in the checkpoint
    directory (generated on first need)."""
    if settings.audit_key is not None:
        return AuditKeySource(key=settings.audit_key.get_secret_value().encode("utf-8"))
    return AuditKeySource(file=anchor_paths(settings).audit_key_file)


def _new_signing_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _parse_private_key(raw: bytes, where: str) -> Ed25519PrivateKey:
    text = raw.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(text, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text.decode("ascii")))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{where} is not an Ed25519 private key (PEM, PKCS#8, unencrypted; or 64 hex digits): {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_signing_key(settings: Settings, *, create: bool) -> Ed25519PrivateKey | None:
    """The checkpoint signing key: AEGIS_AUDIT_SIGNING_KEY, else the key file in the checkpoint directory
    (generated when `create`). None when there is neither (and not `create`), or nothing is anchored."""
    if settings.audit_signing_key is not None:
        return _parse_private_key(
            settings.audit_signing_key.get_secret_value().encode("utf-8"), "AEGIS_AUDIT_SIGNING_KEY"
        )
    file = anchor_paths(settings).signing_key_file
    if file is None:
        return None
    try:
        raw = read_or_create_key_file(file, _new_signing_key_pem, create=create)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read or create the checkpoint signing key {file} ({exc.strerror or exc}); set "
            "AEGIS_AUDIT_SIGNING_KEY, or AEGIS_AUDIT_CHECKPOINT_DIR to a writable directory"
        ) from None
    return _parse_private_key(raw, f"the key file {file}") if raw is not None else None


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_key_id(key: Ed25519PublicKey) -> str:
    """16 hex digits naming a signing key (SHA-256 of its raw public bytes)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (what `aegis-server audit checkpoint` exports)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read the public key {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CheckpointError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """One signed checkpoint (`body` is every field but the signature) and where it was read from."""

    body: Mapping[str, Any]
    signature: str
    source: str = ""

    @property
    def sequence(self) -> int:
        return int(self.body["sequence"])

    @property
    def head_hash(self) -> str:
        return str(self.body["head_hash"])

    @property
    def time(self) -> str:
        return str(self.body["time"])

    @property
    def v2_from(self) -> int | None:
        value = self.body.get("v2_from")
        return int(value) if value is not None else None

    def document(self) -> dict[str, Any]:
        return {**self.body, "signature": self.signature}

    def line(self) -> str:
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def describe(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"the signed checkpoint of {self.time}{where}"

    @classmethod
    def parse(cls, document: Any, source: str) -> Checkpoint:
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source} is not an AEGIS audit checkpoint (format {CHECKPOINT_FORMAT})")
        body = {name: value for name, value in document.items() if name != "signature"}
        signature = document.get("signature")
        try:
            checkpoint = cls(body, str(signature), source)
            if not isinstance(signature, str) or checkpoint.sequence < 0 or len(checkpoint.head_hash) != 64:
                raise ValueError
            checkpoint.v2_from  # noqa: B018 - parsed to check it
            checkpoint.time  # noqa: B018
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: a checkpoint needs sequence, head_hash, time and signature") from None
        return checkpoint


def sign_checkpoint(key: Ed25519PrivateKey, body: Mapping[str, Any]) -> Checkpoint:
    signature = key.sign(canonical_json(dict(body)))
    return Checkpoint(dict(body), base64.b64encode(signature).decode("ascii"))


def verify_signature(key: Ed25519PublicKey, checkpoint: Checkpoint) -> bool:
    """True when `checkpoint` was signed by `key` and not changed since."""
    try:
        key.verify(base64.b64decode(checkpoint.signature, validate=True), canonical_json(dict(checkpoint.body)))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


class CheckpointDirectory:
    """The checkpoint files of one directory: `checkpoints-YYYY-MM-DD.jsonl` (append-only, one signed
    checkpoint a line, fsynced) and `latest.json` (the newest, replaced atomically: tmp file, fsync,
    rename). Blocking file I/O: call from a thread on the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, checkpoint: Checkpoint) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = checkpoint.line() + "\n"
        day = checkpoint.time[:10]
        descriptor = os.open(self.path / f"checkpoints-{day}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary = self.path / f".{LATEST_FILE}.{secrets.token_hex(6)}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / LATEST_FILE)
        with contextlib.suppress(OSError):  # the rename is durable once the directory is synced
            directory = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def _read_latest(self) -> Checkpoint | None:
        try:
            text = (self.path / LATEST_FILE).read_text(encoding="utf-8")
            return Checkpoint.parse(json.loads(text), str(self.path / LATEST_FILE))
        except (OSError, ValueError):
            return None

    def latest(self) -> Checkpoint | None:
        """The checkpoint written last: the last readable line of the newest day file (written first), or
        `latest.json` when it is newer (by its time) or the day files are gone. None when there is none.
        (The last written, not the highest sequence: a checkpoint written by `audit acknowledge-cut`
        after an investigation supersedes the one of the longer chain.)"""
        found: Checkpoint | None = None
        days = sorted(self.path.glob("checkpoints-*.jsonl")) if self.path.is_dir() else []
        for day in reversed(days):
            try:
                lines = day.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for number in range(len(lines) - 1, -1, -1):
                try:
                    found = Checkpoint.parse(json.loads(lines[number]), f"{day}:{number + 1}")
                except ValueError:
                    continue
                break
            if found is not None:
                break
        latest = self._read_latest()
        if latest is not None and (found is None or latest.time > found.time):
            return latest
        return found


def read_checkpoint_file(path: Path) -> Checkpoint:
    """A checkpoint from a file: a JSON document, or a JSON-lines file (its last line)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint {path}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    try:
        document = json.loads(text) if len(lines) <= 1 or text.startswith("{\n") else json.loads(lines[-1])
    except ValueError as exc:
        raise CheckpointError(f"{path} is not JSON: {exc}") from None
    return Checkpoint.parse(document, str(path))


# ---------------------------------------------------------------------------------------------
# comparing the database with a checkpoint
# ---------------------------------------------------------------------------------------------


async def compare_with_checkpoint(store: Store, checkpoint: Checkpoint) -> list[AuditProblem]:
    """What the database lacks or changed compared with a (signature-checked) checkpoint."""
    problems: list[AuditProblem] = []
    head_sequence, _ = await store.chain_head()
    described = checkpoint.describe()
    if head_sequence < checkpoint.sequence:
        missing = (
            "every record is missing (the database has none)"
            if head_sequence == 0
            else f"records #{head_sequence + 1}..#{checkpoint.sequence} are missing (the database ends at "
            f"#{head_sequence})"
        )
        problems.append(
            AuditProblem(
                code="tail_cut",
                message=f"the tail of the audit chain was cut: {missing}; {described} says the head was record "
                f"#{checkpoint.sequence} (hash {checkpoint.head_hash})",
                sequence=head_sequence + 1,
            )
        )
    elif checkpoint.sequence > 0:
        stored = await store.record_hash(checkpoint.sequence)
        if stored != checkpoint.head_hash:
            problems.append(
                AuditProblem(
                    code="chain_recomputed",
                    message=f"record #{checkpoint.sequence} has hash {stored} in the database, but {described} "
                    f"says {checkpoint.head_hash}: the chain up to there was rewritten and recomputed",
                    sequence=checkpoint.sequence,
                )
            )
    state = await store.chain_state()
    expected = checkpoint.v2_from
    if (expected is not None and state.v2_from != expected) or (
        expected is None and state.v2_from is not None and state.v2_from <= checkpoint.sequence
    ):
        problems.append(
            AuditProblem(
                code="chain_version_downgraded",
                message=f"the database says keyed (version 2) records start at #{state.v2_from}, but {described} "
                f"says {'#' + str(expected) if expected is not None else 'none up to #' + str(checkpoint.sequence)}: "
                "the chain's version was changed (a keyed part rewritten as version 1?)",
            )
        )
    audit_key_id = checkpoint.body.get("audit_key_id")
    if audit_key_id and state.key_id and audit_key_id != state.key_id:
        problems.append(
            AuditProblem(
                code="audit_key_changed",
                message=f"the database names audit key {state.key_id}, {described} names {audit_key_id}",
            )
        )
    return problems


async def unanchored_chain(store: Store, directory: Path | str) -> AuditProblem | None:
    """The problem of a keyed chain with no checkpoint to check it against, or None. Every writer of a keyed
    chain (the server, the CLI) checkpoints what it wrote, so keyed records without any checkpoint mean the
    checkpoints were moved or deleted — and without them a cut or rewritten chain would look whole."""
    head, _ = await store.chain_head()
    state = await store.chain_state()
    if not head or state.v2_from is None or head < state.v2_from:
        return None
    return AuditProblem(
        code="unanchored",
        message=f"the audit chain holds keyed records (#{state.v2_from}..#{head}) but there is no signed checkpoint "
        f"in {directory}: the checkpoints were moved or deleted, and without them a cut or rewritten chain cannot "
        "be told from a whole one",
    )


async def verify_audit(
    store: Store,
    *,
    checkpoint: Checkpoint | None,
    public_key: Ed25519PublicKey | None,
    decisions: bool = True,
    checkpoint_directory: Path | None = None,
) -> AuditVerification:
    """The whole check: the chain (links, keyed hashes), the checkpoint (signature, tail, head hash, chain
    version) when there is one, and the decisions table against the audit. `checkpoint_directory`: where
    the checkpoint was looked for; a keyed chain with none there is a problem (`unanchored`)."""
    result = await store.verify_chain()
    problems: list[AuditProblem] = []
    info: AuditCheckpoint | None = None
    if checkpoint is None and checkpoint_directory is not None:
        unanchored = await unanchored_chain(store, checkpoint_directory)
        if unanchored is not None:
            problems.append(unanchored)
    if checkpoint is not None:
        signature_valid = public_key is not None and verify_signature(public_key, checkpoint)
        info = AuditCheckpoint(
            sequence=checkpoint.sequence,
            head_hash=checkpoint.head_hash,
            time=checkpoint.time,
            chain_version=int(checkpoint.body.get("chain_version") or 1),
            signature_valid=signature_valid,
        )
        if not signature_valid:
            signer = checkpoint.body.get("key_id")
            mine = public_key_id(public_key) if public_key is not None else None
            hint = (
                f" (it names signing key {signer}, the public key given is {mine})"
                if signer and mine and signer != mine
                else " (it was edited or forged)"
            )
            problems.append(
                AuditProblem(
                    code="checkpoint_signature_invalid",
                    message=f"the signature of {checkpoint.describe()} does not verify{hint}; nothing it says "
                    "is trusted",
                )
            )
        else:
            problems.extend(await compare_with_checkpoint(store, checkpoint))
    if decisions:
        problems.extend(await store.verify_decisions())
    return result.model_copy(update={"valid": result.valid and not problems, "checkpoint": info, "problems": problems})


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------


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
