"""The anchor's keys and where they live: the checkpoint directory of the settings, the Ed25519 key that
signs checkpoints (`AEGIS_AUDIT_SIGNING_KEY`, or the key file `audit-signing.key` written once with mode
0600 in the checkpoint directory: never in the database), its public half and id, and where the store
finds the chain's HMAC key (`AEGIS_AUDIT_KEY`, or `audit-hmac.key` beside it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aegis_server.audit.checkpoints import CheckpointError
from aegis_server.settings import Settings
from aegis_server.store import AuditKeySource, default_audit_dir
from aegis_server.store.chain import read_or_create_key_file

__all__ = [
    "AUDIT_KEY_FILE",
    "SIGNING_KEY_FILE",
    "AnchorPaths",
    "anchor_paths",
    "audit_key_source",
    "load_public_key",
    "load_signing_key",
    "new_signing_key_pem",
    "parse_private_key",
    "public_key_id",
    "public_key_pem",
]

SIGNING_KEY_FILE = "audit-signing.key"
AUDIT_KEY_FILE = "audit-hmac.key"


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


def new_signing_key_pem() -> bytes:
    """A new Ed25519 private key, PEM (PKCS#8, unencrypted): what the key file holds."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def parse_private_key(raw: bytes, where: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM or 64 hex digits; `CheckpointError` naming `where` otherwise."""
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
        return parse_private_key(
            settings.audit_signing_key.get_secret_value().encode("utf-8"), "AEGIS_AUDIT_SIGNING_KEY"
        )
    file = anchor_paths(settings).signing_key_file
    if file is None:
        return None
    try:
        raw = read_or_create_key_file(file, new_signing_key_pem, create=create)
    except OSError as exc:
        raise CheckpointError(
            f"cannot read or create the checkpoint signing key {file} ({exc.strerror or exc}); set "
            "AEGIS_AUDIT_SIGNING_KEY, or AEGIS_AUDIT_CHECKPOINT_DIR to a writable directory"
        ) from None
    return parse_private_key(raw, f"the key file {file}") if raw is not None else None


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
