"""Checking the audit against its anchor: what the database lacks or changed compared with a signed
checkpoint, a keyed chain whose checkpoints are gone, and the whole check (`verify_audit`: the chain, the
checkpoint, the decisions table, the policy-set versions) behind `aegis-server audit verify` and
`GET /api/v1/audit/verify`."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aegis_sdk.models import AuditCheckpoint, AuditProblem, AuditVerification
from aegis_server.audit.checkpoints import Checkpoint, verify_signature
from aegis_server.audit.signing_keys import public_key_id
from aegis_server.store import Store

__all__ = ["compare_with_checkpoint", "unanchored_chain", "verify_audit"]


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
    version) when there is one, the decisions table against the audit, and each policy-set version against
    its content and its "policy_version_recorded" record. `checkpoint_directory`: where
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
    problems.extend(await store.policy_versions.verify_recorded())
    return result.model_copy(update={"valid": result.valid and not problems, "checkpoint": info, "problems": problems})
