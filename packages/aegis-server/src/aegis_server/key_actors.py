"""What an API key may do beyond its scopes: the actors it may propose for, and its own rate limit.

Pure (no I/O, no framework): the store validates with it, the authenticator compiles with it, the CLI
and the keys API parse with it.

An actor pattern is a glob over `actor.id` (`support-bot-*`) or `type:id-glob`
(`ai-agent:support-bot-*`; `*:glob` matches any type and is how an id holding a `:` is written). Globs
use `fnmatch.fnmatchcase` rules (exact case; `*`, `?`, `[seq]`). `*` allows any actor. A key whose list
is NULL (made before 0.2) is bound to no actor.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import get_args

from aegis_sdk.models import ActorType

ACTOR_TYPES: tuple[str, ...] = get_args(ActorType)
ANY_ACTOR = "*"
MAX_ACTOR_PATTERNS = 100
_MAX_PATTERN_LENGTH = 200
_ACTORS_EXAMPLE = "--actors 'ai-agent:support-bot-*' (or '*' for any actor)"


def parse_actor_patterns(text: str | Sequence[str]) -> list[str]:
    """Split (`a,b` or a list) and check actor patterns; raises ValueError saying what is wrong and how to
    write it. The result keeps the patterns' order without repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    patterns: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"an actor pattern must be a string, not {type(item).__name__}")
        pattern = item.strip()
        if not pattern:
            if isinstance(text, str):
                continue
            raise ValueError("an actor pattern cannot be empty; e.g. 'ai-agent:support-bot-*', or '*' for any actor")
        if len(pattern) > _MAX_PATTERN_LENGTH:
            raise ValueError(f"the actor pattern {pattern[:40]!r}... is longer than {_MAX_PATTERN_LENGTH} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in pattern):
            raise ValueError(f"the actor pattern {pattern!r} contains whitespace or a control character")
        if ":" in pattern:
            kind, _, id_glob = pattern.partition(":")
            if kind != ANY_ACTOR and kind not in ACTOR_TYPES:
                raise ValueError(
                    f"unknown actor type {kind!r} in the pattern {pattern!r}; known types: {', '.join(ACTOR_TYPES)} "
                    f"(write '*:{id_glob}' to match an id that contains ':' with any type)"
                )
            if not id_glob:
                raise ValueError(f"the actor pattern {pattern!r} has no id glob after ':'; e.g. '{kind}:*'")
        patterns.append(pattern)
    if not patterns:
        raise ValueError(f"give at least one actor pattern, e.g. {_ACTORS_EXAMPLE}")
    if len(patterns) > MAX_ACTOR_PATTERNS:
        raise ValueError(f"at most {MAX_ACTOR_PATTERNS} actor patterns per key (got {len(patterns)}); use globs")
    return list(dict.fromkeys(patterns))


@dataclass(frozen=True)
class ActorBinding:
    """The actors a key may propose for, compiled once per authentication (see the module docstring)."""

    patterns: tuple[str, ...] | None
    _any: bool = field(init=False, repr=False, compare=False)
    _matchers: tuple[tuple[str | None, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        patterns = self.patterns or ()
        matchers: list[tuple[str | None, re.Pattern[str]]] = []
        for pattern in patterns:
            kind: str | None = None
            id_glob = pattern
            if ":" in pattern:
                prefix, _, rest = pattern.partition(":")
                kind, id_glob = (None if prefix == ANY_ACTOR else prefix), rest
            matchers.append((kind, re.compile(fnmatch.translate(id_glob))))  # what fnmatchcase compiles
        object.__setattr__(self, "_any", ANY_ACTOR in patterns)
        object.__setattr__(self, "_matchers", tuple(matchers))

    @property
    def bound(self) -> bool:
        """False for a key bound to no actor (made before 0.2 and not yet updated)."""
        return bool(self.patterns)

    def allows(self, actor_id: str, actor_type: str) -> bool:
        if self._any:
            return True
        return any((kind is None or kind == actor_type) and rx.match(actor_id) for kind, rx in self._matchers)


MAX_RATE_LIMIT_PER_MINUTE = 10_000_000


def parse_rate_limit(text: str) -> int | None:
    """`N/min` → N (0: no limit for this key); `default` → None (the server-wide limit). Raises ValueError."""
    value = text.strip().lower()
    if value == "default":
        return None
    number, slash, unit = value.partition("/")
    if not slash or unit.strip() not in ("min", "minute", "m"):
        raise ValueError(f"write the rate limit as N/min (e.g. 600/min) or 'default', not {text!r}")
    try:
        per_minute = int(number.strip())
    except ValueError:
        raise ValueError(f"write the rate limit as N/min with a whole number N (e.g. 600/min), not {text!r}") from None
    check_rate_limit(per_minute)
    return per_minute


def check_rate_limit(per_minute: int | None) -> int | None:
    """A key's own requests-per-minute limit: None (the server-wide default), 0 (none) or 1..10,000,000."""
    if per_minute is not None and not 0 <= per_minute <= MAX_RATE_LIMIT_PER_MINUTE:
        raise ValueError(
            f"a key's rate limit must be 0 (no limit) to {MAX_RATE_LIMIT_PER_MINUTE:,} per minute, or the server "
            "default"
        )
    return per_minute


__all__ = [
    "ACTOR_TYPES",
    "ANY_ACTOR",
    "MAX_ACTOR_PATTERNS",
    "MAX_RATE_LIMIT_PER_MINUTE",
    "ActorBinding",
    "check_rate_limit",
    "parse_actor_patterns",
    "parse_rate_limit",
]
