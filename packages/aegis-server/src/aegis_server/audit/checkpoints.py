"""Signed checkpoints of the audit chain's head, and the files that keep them.

A checkpoint is a JSON document `{format, chain_version, v2_from, sequence, head_hash, time, writer,
key_id, audit_key_id, signature}`: the chain's last record (sequence and hash) at `time`, where the keyed
(version 2) part of the chain starts, and an Ed25519 signature over the canonical JSON of every other
field (sorted keys, no whitespace: `json.dumps(doc, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`).

Each line of `checkpoints-YYYY-MM-DD.jsonl` (appended, fsynced) in the checkpoint directory is one
checkpoint; `latest.json` (replaced atomically) is the newest.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aegis_sdk._wire.canonical import canonical_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "LATEST_FILE",
    "Checkpoint",
    "CheckpointDirectory",
    "CheckpointError",
    "read_checkpoint_file",
    "sign_checkpoint",
    "verify_signature",
]

CHECKPOINT_FORMAT = "aegis-audit-checkpoint/1"
LATEST_FILE = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint or key file cannot be read or is malformed. The message names it and says what to do."""


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
