"""`aegis-server audit verify|checkpoint|acknowledge-cut|export`: check the hash chain against its signed
checkpoints and the decisions, export the checkpoints' public key, accept an investigated cut, and export
the records of a window as JSON lines (the live export's format, for backfill)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from aegis_server.cli.command_support import (
    CommandError,
    add_command_group,
    add_store_action,
    cli_settings,
    run_database_call,
    run_on_store,
)
from aegis_server.settings import Settings


def _audit_problem_lines(result: Any) -> list[str]:
    lines = []
    broken = result.first_broken
    if broken is not None:
        ref = f" ({broken.audit_ref})" if broken.audit_ref else ""
        lines.append(f"audit chain BROKEN at record #{broken.sequence}{ref}: {broken.reason}")
    lines.extend(f"audit BROKEN ({problem.code}): {problem.message}" for problem in result.problems)
    return lines


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from aegis_server.audit.checkpoints import CheckpointDirectory, CheckpointError, read_checkpoint_file
    from aegis_server.audit.signing_keys import anchor_paths, audit_key_source, load_public_key, load_signing_key
    from aegis_server.audit.verification import verify_audit
    from aegis_server.store import AuditKeyError, open_existing

    settings = cli_settings(args.db)
    checkpoint = None
    public_key = None
    searched: Path | None = None  # the checkpoint directory looked in, when it held none
    note = ""
    try:
        if args.public_key:
            public_key = load_public_key(Path(args.public_key))
        if not args.no_checkpoint:
            if args.checkpoint:
                checkpoint = read_checkpoint_file(Path(args.checkpoint))
            else:
                directory = anchor_paths(settings).directory
                checkpoint = CheckpointDirectory(directory).latest() if directory is not None else None
                if checkpoint is None:
                    searched = directory
                    note = (
                        f"no signed checkpoint in {directory}: the tail of the chain was not checked (set "
                        "AEGIS_AUDIT_CHECKPOINT_DIR as the server has it, or pass --checkpoint FILE)"
                    )
            if checkpoint is not None and public_key is None:
                signing_key = load_signing_key(settings, create=False)
                if signing_key is None:
                    raise CommandError(
                        "no public key to check the checkpoint's signature: pass --public-key FILE (exported by "
                        "`aegis-server audit checkpoint`), or set AEGIS_AUDIT_SIGNING_KEY / "
                        "AEGIS_AUDIT_CHECKPOINT_DIR as the server has them",
                        code=2,
                    )
                public_key = signing_key.public_key()
    except CheckpointError as exc:
        raise CommandError(str(exc), code=2) from None

    async def work() -> Any:
        store = await open_existing(args.db, audit_key_source(settings))
        try:
            return await verify_audit(
                store,
                checkpoint=checkpoint,
                public_key=public_key,
                decisions=not args.no_decisions,
                checkpoint_directory=searched,
            )
        finally:
            await store.close()

    try:
        result = run_database_call(work, args.db)
    except AuditKeyError as exc:
        raise CommandError(str(exc)) from None
    if note:
        print(f"aegis-server: warning: {note}", file=sys.stderr)
    if not result.valid:
        for line in _audit_problem_lines(result):
            print(line, file=sys.stderr)
        return 1
    keyed = f", keyed from #{result.keyed_from}" if result.keyed_from is not None else ""
    print(f"audit chain OK: {result.records_checked} records, head {result.head_hash or '-'}{keyed}")
    if checkpoint is not None:
        print(f"checkpoint OK: record #{checkpoint.sequence} matches {checkpoint.describe()}")
        acknowledged = checkpoint.body.get("acknowledged_cut")
        if isinstance(acknowledged, dict):
            print(
                f"note: this checkpoint acknowledges a cut of the chain (the checkpoint of {acknowledged.get('time')} "
                f"said record #{acknowledged.get('sequence')}; reason: {acknowledged.get('reason')})"
            )
    if not args.no_decisions:
        print("decisions OK: the decisions table agrees with the audit")
    return 0


def _checkpoint_signing_key(settings: Settings, what_to_do: str) -> tuple[Path, Any]:
    """The checkpoint directory and the signing key of the server with these settings; a CommandError
    ending with `what_to_do` when there is none."""
    from aegis_server.audit.checkpoints import CheckpointError
    from aegis_server.audit.signing_keys import anchor_paths, load_signing_key

    directory = anchor_paths(settings).directory
    try:
        signing_key = load_signing_key(settings, create=False)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    if signing_key is None or directory is None:
        raise CommandError(f"no checkpoint signing key in {directory}: {what_to_do}")
    return directory, signing_key


def _cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from aegis_server.audit.checkpoints import CheckpointDirectory
    from aegis_server.audit.signing_keys import public_key_pem

    settings = cli_settings(args.db)
    directory, signing_key = _checkpoint_signing_key(
        settings,
        "start the server once (it makes the key and writes checkpoints), or set AEGIS_AUDIT_SIGNING_KEY / "
        "AEGIS_AUDIT_CHECKPOINT_DIR as the server has them",
    )
    checkpoint = CheckpointDirectory(directory).latest()
    if checkpoint is None:
        raise CommandError(f"no checkpoint in {directory} yet: the server writes one within a second of an append")
    pem = public_key_pem(signing_key.public_key())
    if args.public_key:
        Path(args.public_key).write_text(pem, encoding="utf-8")
    if args.checkpoint:
        Path(args.checkpoint).write_text(checkpoint.line() + "\n", encoding="utf-8")
    if not args.public_key and not args.checkpoint:
        sys.stdout.write(pem)
        print(checkpoint.line())
    else:
        print(f"checkpoint of record #{checkpoint.sequence} ({checkpoint.time}) exported", file=sys.stderr)
    return 0


def _cmd_audit_acknowledge_cut(args: argparse.Namespace) -> int:
    from aegis_server.audit.anchor import AuditAnchor
    from aegis_server.audit.checkpoints import CheckpointError, verify_signature
    from aegis_server.audit.signing_keys import anchor_paths, audit_key_source, load_signing_key
    from aegis_server.audit.verification import compare_with_checkpoint, unanchored_chain
    from aegis_server.store import AuditKeyError, open_existing

    reason = args.reason.strip()
    if not reason:
        raise CommandError("--reason must say why the cut is accepted (it is kept in the audit)", code=2)
    settings = cli_settings(args.db)
    directory = anchor_paths(settings).directory
    if directory is None:
        raise CommandError("an in-memory database has no checkpoints to acknowledge")
    try:
        # A lost checkpoint directory took its signing key with it: the acknowledgement starts a new one.
        signing_key = load_signing_key(settings, create=True)
    except CheckpointError as exc:
        raise CommandError(str(exc)) from None
    assert signing_key is not None
    operator = f"cli:{getpass.getuser()}"

    async def work() -> str:
        store = await open_existing(args.db, audit_key_source(settings))
        try:
            anchor = AuditAnchor(store, directory, signing_key)
            latest = await anchor.latest()
            if latest is None:
                unanchored = await unanchored_chain(store, directory)
                if unanchored is None:
                    return f"no checkpoint in {directory}, and none is needed yet: nothing to acknowledge"
                problems = [unanchored]
                acknowledged: dict[str, Any] = {"sequence": None, "head_hash": None, "time": None}
            else:
                if not verify_signature(anchor.public_key, latest):
                    raise CommandError(
                        f"the signature of {latest.describe()} does not verify with the signing key; move the "
                        "checkpoint files aside only after checking them with the old public key"
                    )
                problems = await compare_with_checkpoint(store, latest)
                if not problems:
                    return f"the database matches {latest.describe()}: nothing to acknowledge"
                acknowledged = {"sequence": latest.sequence, "head_hash": latest.head_hash, "time": latest.time}
            head, _ = await store.chain_head()
            await store.append_audit(
                "audit_cut_acknowledged",
                payload={
                    "checkpoint": acknowledged,
                    "database_head_sequence": head,
                    "problems": [problem.code for problem in problems],
                    "reason": reason,
                    "operator": operator,
                },
            )
            anchor.verified = True  # the operator accepts the current head
            written = await anchor.checkpoint(
                extra={"acknowledged_cut": {**acknowledged, "reason": reason}}, force=True
            )
            assert written is not None
            return (
                f"acknowledged: {'; '.join(problem.message for problem in problems)}\n"
                f"recorded as audit record #{written.sequence} and a new signed checkpoint; the server starts again"
            )
        finally:
            await store.close()

    try:
        print(run_database_call(work, args.db))
    except AuditKeyError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _quiet_stdout() -> None:
    """After a broken pipe: stdout to /dev/null, so that the interpreter's final flush raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _cmd_audit_export(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from aegis_server.audit_export.backfill import write_backfill
    from aegis_server.replay.window import WindowError, parse_moment

    now = datetime.now(timezone.utc)
    try:
        since = parse_moment(args.since, now, "--since") if args.since is not None else None
        until = parse_moment(args.until, now, "--until") if args.until is not None else None
    except WindowError as exc:
        raise CommandError(str(exc), code=2) from None
    if since is not None and until is not None and since >= until:
        raise CommandError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})", code=2)
    if not 0 <= args.after_sequence < 2**63:
        raise CommandError(f"--after-sequence must be a sequence (0 to 2^63-1), not {args.after_sequence}", code=2)
    try:
        output = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CommandError(f"cannot write --output {args.output}: {exc.strerror}", code=2) from None
    try:
        count, first, last = run_on_store(
            args.db,
            lambda store: write_backfill(store, output, after_sequence=args.after_sequence, since=since, until=until),
        )
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    finally:
        if output is not sys.stdout.buffer:
            output.close()
    span = f" (#{first}..#{last})" if count else ""
    print(f"exported {count} audit record(s){span}", file=sys.stderr)
    return 0


def add_audit_commands(commands: Any) -> None:
    """Register `audit verify|checkpoint|acknowledge-cut` on the main parser's sub-parsers."""
    audit_commands = add_command_group(commands, "audit", "the audit log")
    verify = add_store_action(
        audit_commands,
        "verify",
        "check the hash chain, the latest signed checkpoint and the decisions; exit 1 naming what is wrong",
        _cmd_audit_verify,
    )
    verify.add_argument("--checkpoint", metavar="FILE", help="check against this checkpoint (default: the latest one)")
    verify.add_argument(
        "--public-key", metavar="FILE", help="PEM public key of the checkpoints (default: the server's)"
    )
    verify.add_argument("--no-checkpoint", action="store_true", help="check the chain alone (the tail is not checked)")
    verify.add_argument("--no-decisions", action="store_true", help="do not compare the decisions table with the audit")
    export = add_store_action(
        audit_commands,
        "checkpoint",
        "export the checkpoints' public key (PEM) and the latest signed checkpoint",
        _cmd_audit_checkpoint,
    )
    export.add_argument("--public-key", metavar="FILE", help="write the public key here (default: stdout)")
    export.add_argument("--checkpoint", metavar="FILE", help="write the checkpoint here (default: stdout)")
    acknowledge = add_store_action(
        audit_commands,
        "acknowledge-cut",
        "after an investigation, accept a database that lost records the latest checkpoint vouches for",
        _cmd_audit_acknowledge_cut,
    )
    acknowledge.add_argument("--reason", required=True, help="why the cut is accepted (kept in the audit)")
    backfill = add_store_action(
        audit_commands,
        "export",
        "write audit records as JSON lines (the live export's format), in chain order",
        _cmd_audit_export,
    )
    backfill.add_argument("--since", help="records created at or after: a duration back (7d, 12h) or RFC 3339")
    backfill.add_argument("--until", help="records created before: a duration back or RFC 3339 (default: no bound)")
    backfill.add_argument(
        "--after-sequence", type=int, default=0, metavar="N", help="records after sequence N (default: 0, all)"
    )
    backfill.add_argument("--format", choices=["jsonl"], default="jsonl", help="the output format (jsonl)")
    backfill.add_argument("--output", metavar="FILE", help="write here (default: stdout)")


__all__ = ["add_audit_commands"]
