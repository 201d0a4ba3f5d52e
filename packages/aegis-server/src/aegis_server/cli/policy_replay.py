"""`aegis-server policy replay`: re-decide the stored proposals of a window under a candidate policy set.

```
aegis-server policy replay --since 7d [--until T] [--candidate DIR | --version V] [--json] [--samples N] [--db URL]
```

`--since`/`--until` take a duration back from now (`30m`, `12h`, `7d`, `2w`) or an RFC 3339 time
(`2026-12-01T00:00:00Z`); `--until` defaults to now. The candidate is a folder (or file) of policies
(`--candidate`, plus the API-stored items it does not define, as a server started with those files would
run), a recorded version (`--version`), or, with neither, the latest recorded version: a sanity check where
every outcome should be unchanged unless the set changed within the window or a `time.*` rule decides
differently at another time of day (it re-decides at each proposal's original time, so it should not).
The work is spread over one process per CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aegis_server.cli.command_support import CommandError, add_db_option, cli_settings, run_on_store

__all__ = ["add_replay_command", "render", "run_replay"]


def add_replay_command(commands: Any) -> None:
    """Register `policy replay` on the `policy` command's sub-parsers."""
    replay = commands.add_parser(
        "replay",
        help="re-decide stored proposals under a candidate policy set and report what would change",
        description="Re-decide the stored proposals of a time window under a candidate policy set (a folder of "
        "policy files, a recorded version, or the latest version) and report the outcomes that would change.",
    )
    replay.add_argument("--since", required=True, help="start of the window: a duration back (7d, 12h) or RFC 3339")
    replay.add_argument("--until", help="end of the window (excluded): a duration back or RFC 3339 (default: now)")
    which = replay.add_mutually_exclusive_group()
    which.add_argument("--candidate", type=Path, metavar="DIR", help="policy files (a folder or a file)")
    which.add_argument("--version", type=int, metavar="V", help="a recorded policy-set version (`policy history`)")
    replay.add_argument("--json", action="store_true", help="print the report as JSON (ReplayReport)")
    replay.add_argument(
        "--samples", type=int, default=10, metavar="N", help="decision ids shown per transition (default: 10)"
    )
    add_db_option(replay)
    replay.set_defaults(handler=run_replay, func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from aegis_server.engine import PolicySetError, format_problem
    from aegis_server.replay import (
        CandidateError,
        WindowError,
        candidate_from_files,
        candidate_from_version,
        latest_candidate,
        replay_stored,
        replay_window,
    )

    try:
        since, until = replay_window(args.since, args.until, datetime.now(timezone.utc), ("--since", "--until"))
    except WindowError as exc:
        raise CommandError(str(exc), code=2) from None
    if args.samples < 0 or args.samples > 1000:
        raise CommandError(f"--samples must be between 0 and 1000, not {args.samples}", code=2)
    if args.version is not None and args.version < 1:
        raise CommandError(f"--version must be a version number (1 or more), not {args.version}", code=2)
    if args.candidate is not None and not args.candidate.exists():
        raise CommandError(f"--candidate {args.candidate}: no such file or folder", code=2)
    config = cli_settings(args.db).engine_config()

    async def work(store: Any) -> Any:
        if args.candidate is not None:
            candidate = await candidate_from_files(store, args.candidate)
        elif args.version is not None:
            candidate = await candidate_from_version(store, args.version)
        else:
            candidate = await latest_candidate(store)
        return await replay_stored(
            store,
            candidate.policy_set,
            since=since,
            until=until,
            config=config,
            samples=args.samples,
            description=candidate.description,
            workers=os.cpu_count() or 1,
        )

    try:
        report = run_on_store(args.db, work)
    except CandidateError as exc:
        raise CommandError(str(exc), code=2) from None
    except PolicySetError as exc:
        lines = "\n  ".join(format_problem(problem) for problem in exc.problems)
        raise CommandError(f"the candidate policy set does not compile:\n  {lines}", code=2) from None
    if args.json:
        print(report.model_dump_json(by_alias=True, indent=2))
    else:
        sys.stdout.write(render(report))
    return 0


def _moment(moment: datetime) -> str:
    """A window edge as an operator reads it: UTC to the second (`2026-12-06T22:23:16Z`)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def render(report: Any) -> str:
    """The human report: the transitions with their rules and samples, then the totals."""
    lines: list[str] = []
    candidate = report.candidate
    what = {
        "files": f"files {candidate.path}",
        "version": f"version {candidate.version}",
        "active": f"the latest version ({candidate.version})",
    }.get(candidate.kind, "the given policies")
    lines.append(
        f"replay of {_moment(report.window.since)} .. {_moment(report.window.until)} under {what} "
        f"({candidate.digest[:19]})"
    )
    lines.append("")
    if report.transitions:
        width = max(len(f"{t.from_} -> {t.to}") for t in report.transitions)
        lines.append(f"{'TRANSITION':<{width}}  {'COUNT':>9}  RULES")
        for transition in report.transitions:
            rules = ", ".join(f"{rule.policy_id} ({rule.count})" for rule in transition.rules)
            lines.append(f"{transition.from_ + ' -> ' + transition.to:<{width}}  {transition.count:>9}  {rules}")
            if transition.sample_decision_ids:
                lines.append(f"{'':<{width}}  {'':>9}  e.g. {', '.join(transition.sample_decision_ids)}")
    else:
        lines.append("no outcome would change")
    totals = report.totals
    lines.append("")
    not_replayable = sum(totals.not_replayable.values())
    reasons = ", ".join(f"{reason} {count}" for reason, count in totals.not_replayable.items())
    lines.append(
        f"stored {totals.stored}: replayed {totals.replayed} (unchanged {totals.unchanged}, changed {totals.changed}), "
        f"confirmations skipped {totals.confirmations_skipped}, not replayable {not_replayable}"
        + (f" ({reasons})" if reasons else "")
    )
    if report.truncated:
        lines.append("truncated: the window held more proposals than the limit; only the oldest were replayed")
    lines.append(f"{report.elapsed_seconds:.2f} s, {report.proposals_per_second:,.0f} proposals/s")
    return "\n".join(lines) + "\n"
