"""`aegis-server policy history|show|diff|rollback`: the recorded versions of the policy set, on the
database (`--db`), like the `keys` and `webhooks` commands.

- `history [--limit N] [--json]`: the newest versions first;
- `show VERSION [--json|--yaml|--files]`: one version's metadata and content (the YAML loads as a policy
  file; `--files`: only the file-defined items, one document per source file, to restore those files);
- `diff V1 V2 [--json]`: what changed from V1 to V2 (items, rules, and a unified diff of the YAML);
- `rollback VERSION [--yes]`: V's API-defined policies and capabilities replace the stored ones, with a new
  version (created by "cli") and a `policy_rollback` audit record in one transaction. Running servers pick
  it up within their `policy_refresh_interval_seconds`. Today's file-defined items are taken from the latest
  version (what the servers loaded); the policy files roll those back, and the command says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aegis_server.cli.command_support import CommandError, add_store_action, run_on_store

__all__ = ["add_policy_version_commands"]

_MAX_VERSION = 2**31 - 1  # the column's range (PostgreSQL integer), as the API bounds it


def _version_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ...)") from None
    if not 1 <= number <= _MAX_VERSION:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ... up to {_MAX_VERSION})")
    return number


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 10000")
    return number


def _unknown(version: int) -> CommandError:
    return CommandError(f"no policy-set version {version} (list them with `aegis-server policy history`)")


async def _get(store: Any, version: int) -> Any:
    found = await store.policy_versions.get(version)
    if found is None:
        raise _unknown(version)
    return found


def _summary_json(version: Any) -> dict[str, Any]:
    return {
        "version": version.version,
        "digest": version.digest,
        "cause": version.cause,
        "summary": version.summary,
        "created_at": version.created_at.isoformat(),
        "created_by": version.created_by,
        "rollback_of": version.rollback_of,
    }


def _cmd_history(args: argparse.Namespace) -> int:
    async def work(store: Any) -> list[Any]:
        versions: list[Any] = await store.policy_versions.history(limit=args.limit)
        return versions

    versions = run_on_store(args.db, work)
    if args.json:
        print(json.dumps([_summary_json(v) for v in versions], indent=2))
        return 0
    if not versions:
        print("no policy-set versions recorded yet (a server records one when it starts)")
        return 0
    for version in versions:
        by = version.created_by or "server"
        rollback = f" (rollback of {version.rollback_of})" if version.rollback_of is not None else ""
        print(
            f"{version.version:>5}  {version.created_at:%Y-%m-%d %H:%M:%S}  {version.cause:<18} {by:<24} "
            f"{version.summary}{rollback}"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from aegis_server.policies.version_yaml import files_yaml, version_yaml

    version = run_on_store(args.db, lambda store: _get(store, args.version))
    if args.json:
        content = {
            **_summary_json(version),
            "policies": [p.model_dump(mode="json") for p in version.policies],
            "capabilities": [c.model_dump(mode="json") for c in version.capabilities],
            "sources": dict(version.sources),
        }
        print(json.dumps(content, indent=2))
        return 0
    if args.files:
        text = files_yaml(version)
        if not text:
            print(f"version {version.version} holds nothing defined by policy files", file=sys.stderr)
        print(text, end="")
        return 0
    if not args.yaml:
        by = version.created_by or "server"
        print(f"# version {version.version}: {version.summary}")
        print(f"# {version.cause} by {by} at {version.created_at.isoformat()}; digest {version.digest}")
    print(version_yaml(version), end="")
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from aegis_server.policies.diff import diff_versions

    async def work(store: Any) -> tuple[Any, Any]:
        return await _get(store, args.old), await _get(store, args.new)

    old, new = run_on_store(args.db, work)
    diff = diff_versions(old, new)
    if args.json:
        print(diff.model_dump_json(indent=2))
        return 0
    if diff.identical:
        print(f"versions {diff.from_version} and {diff.to_version} hold the same policy set")
        return 0
    for change in diff.capabilities:
        fields = f" ({', '.join(change.fields)})" if change.fields else ""
        print(f"capability {change.name}: {change.change}{fields}")
    for policy in diff.policies:
        fields = f" ({', '.join(policy.fields)})" if policy.fields else ""
        print(f"policy {policy.name}: {policy.change}{fields}")
        for rule in policy.rules:
            print(f"  rule {rule.id}: {rule.change}")
    print()
    print(diff.text, end="")
    return 0


def _confirmed(version: int) -> bool:
    if not sys.stdin.isatty():
        raise CommandError(
            f"rolling back to version {version} changes what running servers enforce; add --yes to confirm", code=2
        )
    answer = input(f"Roll the API-defined policies and capabilities back to version {version}? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _cmd_rollback(args: argparse.Namespace) -> int:
    from aegis_server.governance.errors import GovernanceError
    from aegis_server.policies.candidate import FileItems
    from aegis_server.policies.rollback import roll_back

    if not args.yes and not _confirmed(args.version):
        print("nothing rolled back", file=sys.stderr)
        return 1

    async def work(store: Any) -> Any:
        latest = await store.policy_versions.latest()
        if latest is None:
            raise _unknown(args.version)
        files = FileItems.of_version(latest)
        try:
            result = await roll_back(store, args.version, files=files, current_version=latest.version, by="cli")
        except GovernanceError as exc:
            if exc.code == "not_found":
                raise _unknown(args.version) from None
            problems = "; ".join(str(problem.get("message")) for problem in exc.details.get("errors", ()))
            raise CommandError(f"{exc.message} {problems}".strip()) from None
        return result

    result = run_on_store(args.db, work, writes=True)
    print(result.message)
    if result.changed:
        print("running servers pick the rollback up within their policy_refresh_interval_seconds")
    return 0


def add_policy_version_commands(commands: Any) -> None:
    """Register `policy history|show|diff|rollback` on the `policy` command's sub-parsers."""
    history = add_store_action(commands, "history", "list the recorded policy-set versions, newest first", _cmd_history)
    history.add_argument("--limit", type=_positive, default=20, metavar="N", help="how many (default 20)")
    history.add_argument("--json", action="store_true", help="print JSON")

    show = add_store_action(commands, "show", "print one policy-set version (its policies and capabilities)", _cmd_show)
    show.add_argument("version", type=_version_number, metavar="VERSION")
    form = show.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument(
        "--yaml", action="store_true", help="print only the set as one loadable policy file (sources as comments)"
    )
    form.add_argument(
        "--files",
        action="store_true",
        help="print only what the policy files defined, one YAML document per file (to restore them)",
    )

    diff = add_store_action(commands, "diff", "what changed from version V1 to version V2", _cmd_diff)
    diff.add_argument("old", type=_version_number, metavar="V1")
    diff.add_argument("new", type=_version_number, metavar="V2")
    diff.add_argument("--json", action="store_true", help="print JSON (PolicySetDiff)")

    rollback = add_store_action(
        commands,
        "rollback",
        "restore the API-defined policies and capabilities of a version (file-defined ones: restore the files)",
        _cmd_rollback,
    )
    rollback.add_argument("version", type=_version_number, metavar="VERSION")
    rollback.add_argument("--yes", action="store_true", help="do not ask for confirmation")
