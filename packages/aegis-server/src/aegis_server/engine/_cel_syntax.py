"""Lexical helpers shared by the CEL rewriting, the static checks and the fast path: string literals."""

from __future__ import annotations

import re

__all__ = ["STRING_START", "string_end"]

STRING_START = re.compile(r"(?:[rR][bB]?|[bB][rR]?)?('''|\"\"\"|'|\")")
"""The start of a string literal: an optional raw/bytes prefix and the opening quote (group 1)."""


def string_end(source: str, start: re.Match[str]) -> int:
    """The index just past the string literal starting at `start` (or the end of the source)."""
    quote = start.group(1)
    raw = "r" in start.group(0)[: -len(quote)].lower()
    i = start.end()
    n = len(source)
    while i < n:
        if not raw and source[i] == "\\":
            i += 2
            continue
        if source.startswith(quote, i):
            return i + len(quote)
        i += 1
    return n
